// jobd's dashboard: polls the JSON API of the daemon that serves it (once
// a second while the tab is visible) and draws what it answers. No
// library, nothing fetched from elsewhere. The token, when jobd asks for
// one, stays in this tab's sessionStorage and goes only in the
// Authorization header.
'use strict';

const POLL_MS = 1000;
const TOKEN_KEY = 'jobd-token';
const $ = (id) => document.getElementById(id);

let me = null;          // /api/me
let samples = [];       // /api/throughput rows, oldest first
let capacity = 600;
let timer = null;
let busy = false;

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const res = await fetch(path, Object.assign({}, options,
      {headers, cache: 'no-store', credentials: 'omit'}));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    throw new HttpError(res.status, (body && body.error) || res.statusText);
  }
  return body;
}

// Element helper: el('td', {class: 'x'}, 'text', child...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  }
  return e;
}

const num = (v) => Number(v || 0);
const fmtInt = (v) => num(v).toLocaleString('en-US');
const enumName = (v, prefix) => String(v || '').replace(prefix, '');

function fmtDuration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return '';
  if (seconds < 1) return Math.round(seconds * 1000) + ' ms';
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + ' s';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h > 0 ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}
const protoSeconds = (d) => d ? parseFloat(String(d).replace('s', '')) : 0;
const ms = (t) => t ? Date.parse(t) : NaN;

function runTime(job) {
  const start = ms(job.startTime);
  if (isNaN(start)) return '';
  const end = job.finishTime ? ms(job.finishTime) : Date.now();
  return fmtDuration((end - start) / 1000);
}

function fmtBytes(b) {
  b = num(b);
  if (b < 1024) return b + ' B';
  const units = ['KiB', 'MiB', 'GiB'];
  let i = -1;
  do { b /= 1024; i++; } while (b >= 1024 && i < units.length - 1);
  return b.toFixed(1) + ' ' + units[i];
}

function setNum(id, value, text) {
  const e = $(id);
  e.dataset.value = String(num(value));
  e.textContent = text ?? fmtInt(value);
}

function showBanner(text) {
  $('banner').hidden = !text;
  $('banner').textContent = text || '';
}

function stateCell(state) {
  const name = enumName(state, 'JOB_STATE_');
  return el('span', {class: 'state ' + name}, name);
}

// ---- overview ----

function renderStats(s) {
  $('version').textContent = s.version ? 'v' + s.version : '';
  $('draining').hidden = !s.draining;
  for (const k of ['accepted', 'rejected', 'succeeded', 'failed', 'cancelled',
                   'live', 'retained']) {
    setNum('stat-' + k, s[k]);
  }
  setNum('stat-uptime', protoSeconds(s.uptime),
         fmtDuration(protoSeconds(s.uptime)));
  const body = $('executors').tBodies[0];
  body.replaceChildren(...(s.executors || []).filter((e) => e.enabled)
      .map((e) => {
        const name = enumName(e.executor, 'EXECUTOR_').toLowerCase();
        const cell = (field, v) => el('td', {id: `ex-${name}-${field}`,
                                             'data-value': num(v)}, fmtInt(v));
        return el('tr', {'data-executor': name}, el('td', {}, name),
                  cell('workers', e.workers), cell('busy', e.busy),
                  cell('queued', e.queued), cell('completed', e.completed),
                  cell('failed', e.failed), cell('cancelled', e.cancelled));
      }));
  const pool = s.processPool;
  const workers = (pool && pool.workers) || [];
  $('pool').hidden = $('pool-title').hidden = workers.length === 0;
  $('pool').tBodies[0].replaceChildren(...workers.map((w) => el('tr', {},
      el('td', {}, w.slot), el('td', {}, w.pid), el('td', {}, w.state),
      el('td', {}, fmtInt(w.jobsDone)), el('td', {}, fmtBytes(w.rssBytes)),
      el('td', {}, num(w.currentJobId) ? jobLink(w.currentJobId) : ''))));
}

function jobLink(id) { return el('a', {href: '#job/' + id}, id); }

function jobRows(jobs) {
  if (!jobs.length) {
    return [el('tr', {}, el('td', {colspan: 6, class: 'muted'}, 'none'))];
  }
  return jobs.map((j) => el('tr', {'data-job': j.id},
      el('td', {}, jobLink(j.id)), el('td', {}, stateCell(j.state)),
      el('td', {}, j.spec ? j.spec.task : ''),
      el('td', {}, enumName(j.executor, 'EXECUTOR_').toLowerCase()),
      el('td', {}, j.owner), el('td', {}, runTime(j))));
}

function renderJobs(lists) {
  $('running').tBodies[0].replaceChildren(...jobRows(lists.running.jobs));
  $('recent').tBodies[0].replaceChildren(...jobRows(lists.recent.jobs));
}

// ---- throughput chart (SVG) ----

function addSamples(t) {
  capacity = t.capacity || capacity;
  samples = samples.concat(t.samples).slice(-capacity);
}

function renderChart() {
  const W = 900, H = 180, L = 48, R = 8, T = 8, B = 20;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  // Rates from consecutive samples: [t, ended/s, accepted/s, queued].
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b[0] - a[0]) / 1000;
    if (dt <= 0) continue;
    const ended = (b[2] + b[3] + b[4]) - (a[2] + a[3] + a[4]);
    rates.push([b[0], Math.max(0, ended / dt),
                Math.max(0, (b[1] - a[1]) / dt), b[5]]);
  }
  const now = samples.length ? samples[samples.length - 1][0] : Date.now();
  // What the samples cover (at least a minute, at most the history).
  const covered = samples.length ? now - samples[0][0] : 0;
  const span = Math.min(capacity * 1000, Math.max(60000, covered));
  const max = Math.max(1, ...rates.map((r) => Math.max(r[1], r[2], r[3])));
  const x = (t) => L + (W - L - R) * (1 - (now - t) / span);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    add('line', {class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v)});
    add('text', {class: 'axis', x: L - 4, y: y(v) + 3, 'text-anchor': 'end'},
        v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
  }
  const step = span > 300000 ? 120000 : span > 120000 ? 60000 : 15000;
  for (let t = 0; t <= span; t += step) {
    const label = t === 0 ? 'now' : t < 60000 ? `-${t / 1000}s` : `-${t / 60000}m`;
    add('text', {class: 'axis', x: Math.max(L + 12, x(now - t)), y: H - 6,
                 'text-anchor': 'middle'}, label);
  }
  const line = (i, cls) => {
    if (rates.length < 2) return;
    add('polyline', {class: cls, points: rates.map(
        (r) => x(r[0]).toFixed(1) + ',' + y(r[i]).toFixed(1)).join(' ')});
  };
  line(3, 'queued');
  line(2, 'accepted');
  line(1, 'ended');
  $('chart').replaceChildren(svg);
  const last = rates[rates.length - 1];
  $('rate-now').textContent = last
      ? `${Math.round(last[1]).toLocaleString('en-US')} jobs/s now` : '';
}

// ---- job page ----

function kvRows(pairs) {
  return pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => el('tr', {}, el('th', {}, k),
                          el('td', {}, v instanceof Node ? v : String(v))));
}

function renderJob(data) {
  const j = data.job, spec = j.spec || {};
  $('job-id').textContent = j.id;
  $('job-state').replaceChildren(stateCell(j.state));
  $('job-state').dataset.state = enumName(j.state, 'JOB_STATE_');
  const ended = !!j.finishTime;
  const mine = me && (me.admin || (me.canSubmit && me.name === j.owner));
  $('cancel').hidden = ended || !mine;
  $('job-summary').tBodies[0].replaceChildren(...kvRows([
    ['task', spec.task], ['executor', enumName(j.executor, 'EXECUTOR_').toLowerCase()],
    ['caller', j.owner], ['attempts', j.attempts],
    ['created', j.createTime], ['started', j.startTime],
    ['finished', j.finishTime], ['run time', runTime(j)],
    ['progress', j.progress ? `${Math.round(num(j.progress.fraction) * 100)}% ${j.progress.message || ''}` : ''],
  ]));
  const labels = Object.entries(spec.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
  $('job-spec').tBodies[0].replaceChildren(...kvRows([
    ['args', spec.args && spec.args.length ? JSON.stringify(spec.args) : ''],
    ['kwargs', spec.kwargs && Object.keys(spec.kwargs).length ? JSON.stringify(spec.kwargs) : ''],
    ['payload', spec.payload ? fmtBytes(atob(spec.payload).length) : ''],
    ['kind', enumName(spec.kind, 'JOB_KIND_').toLowerCase()],
    ['executor asked', enumName(spec.executor, 'EXECUTOR_').toLowerCase()],
    ['priority', spec.priority], ['timeout', spec.timeout],
    ['labels', labels], ['idempotency key', spec.idempotencyKey],
    ['chunksize', spec.chunksize || ''],
    ['delivery', enumName(spec.delivery, 'DELIVERY_').toLowerCase()],
  ]));
  let title = 'Result', text = '';
  if (j.error && j.error.reason && j.error.reason !== 'ERROR_REASON_UNSPECIFIED') {
    title = 'Error';
    text = `${enumName(j.error.reason, 'ERROR_REASON_')}: ${j.error.message || ''}`;
  } else if (j.result) {
    text = JSON.stringify(j.result.value ?? null, null, 2);
    if (j.result.payload) text += `\n(payload: ${fmtBytes(atob(j.result.payload).length)})`;
    if (j.result.dropped) text = '(the result was larger than jobd retains)';
  }
  if (!ended) text = '(not ended yet)';
  if (data.truncated) text += '\n(too large to show here: use jobctl get)';
  $('job-outcome-title').textContent = title;
  $('job-outcome').textContent = text.slice(0, 65536);
  const events = (data.events && data.events.events) || [];
  $('events-lost').hidden = !(data.events && data.events.eventsLost);
  $('job-events').tBodies[0].replaceChildren(...events.map((e) => {
    let detail = '';
    if (e.progress && (e.progress.message || e.progress.fraction)) {
      detail = `${Math.round(num(e.progress.fraction) * 100)}% ${e.progress.message || ''}`;
    }
    if (e.error && e.error.reason && e.error.reason !== 'ERROR_REASON_UNSPECIFIED') {
      detail = `${enumName(e.error.reason, 'ERROR_REASON_')}: ${e.error.message || ''}`;
    }
    return el('tr', {}, el('td', {}, e.sequence), el('td', {}, enumName(e.type, 'EVENT_TYPE_')),
              el('td', {}, e.time), el('td', {}, enumName(e.executor, 'EXECUTOR_').toLowerCase()),
              el('td', {}, detail));
  }));
}

async function cancelJob() {
  const id = $('job-id').textContent;
  $('cancel').disabled = true;
  try {
    await api(`/api/jobs/${id}/cancel`,
              {method: 'POST', headers: {'X-Jobd-Request': 'cancel'}});
    showBanner('');
  } catch (e) {
    showBanner(`Cancel failed: ${e.message}`);
  } finally {
    $('cancel').disabled = false;
  }
  poll();
}

// ---- polling and routing ----

function route() { return /^#job\/(\d+(?:@[A-Za-z0-9._-]+)?)$/.exec(location.hash); }

function showOnly(id) {
  for (const s of ['login', 'overview', 'jobpage']) $(s).hidden = s !== id;
}

async function poll() {
  // Signed out: nothing to ask until a token is given.
  if (busy || (!$('login').hidden && !sessionStorage.getItem(TOKEN_KEY))) {
    return;
  }
  busy = true;
  try {
    if (!me) {
      me = await api('/api/me');
      $('who').textContent = `${me.name} (${me.roles})`;
      $('logout').hidden = !me.authRequired;
    }
    const job = route();
    if (job) {
      renderJob(await api('/api/jobs/' + job[1]));
      showOnly('jobpage');
    } else {
      const after = samples.length ? samples[samples.length - 1][0] : 0;
      const [stats, lists, t] = await Promise.all([
        api('/api/stats'), api('/api/jobs'), api('/api/throughput?after=' + after)]);
      renderStats(stats);
      if (lists.error) throw new HttpError(503, lists.error);
      renderJobs(lists);
      addSamples(t);
      renderChart();
      showOnly('overview');
    }
    showBanner('');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString('en-GB');
    document.body.dataset.ready = '1';
  } catch (e) {
    if (e.status === 401) {
      me = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showOnly('login');
      showBanner(e.message);
    } else {
      showBanner(e.status ? `${e.status}: ${e.message}` : `jobd does not answer: ${e.message}`);
    }
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = document.hidden ? null : setInterval(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    me = null;
    poll();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    samples = [];
    poll();
  });
  $('cancel').addEventListener('click', cancelJob);
  window.addEventListener('hashchange', poll);
  document.addEventListener('visibilitychange', () => { schedule(); poll(); });
  schedule();
  poll();
});
