#!/usr/bin/python3
"""The dashboard in a real browser: headless Chromium (Debian's `chromium`)
loads the page of a real jobd (the binary) that has run jobs, and this
checks that the numbers it shows are GetStats's (`jobctl --json stats`),
that the running job is listed, that its page shows it and that its Cancel
button cancels it; then that a jobd with tokens asks for one and shows its
numbers once given a read token. Saves a screenshot of the overview.

Chromium is driven over the DevTools protocol (python3-websocket) from a
port it picks itself (--remote-debugging-port=0, read from its
DevToolsActivePort file). Every wait is bounded; chromium and jobd are
killed by pid (chromium's own process group) whatever happens.

Usage: dashboard_browser_test.py JOBD JOBCTL SCREENSHOT.png
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

CHROMIUM = "/usr/bin/chromium"


def wait_for(what, fn, timeout=20.0, interval=0.1):
    """fn() until it returns a true value; fails naming `what` after timeout."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
        except Exception as e:  # Not ready yet (e.g. a connection refused).
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last: %r)"
                         % (timeout, what, last))


class Jobd:
    """A jobd binary on a temp socket and 127.0.0.1 port 0 (HTTP)."""

    def __init__(self, jobd, jobctl, tmp, extra=()):
        self.jobctl_bin = jobctl
        self.dir = tempfile.mkdtemp(prefix="jobd-", dir=tmp)
        self.socket = os.path.join(self.dir, "jobd.sock")
        self.log_path = os.path.join(self.dir, "jobd.log")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [jobd, "--unix-socket", self.socket, "--tcp", "none",
             "--state-dir", self.dir, "--http-listen", "127.0.0.1:0",
             "--testing-tasks", "--log-level", "info", *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

        def port():
            if self.proc.poll() is not None:
                raise AssertionError("jobd exited: " + self.log())
            m = re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/",
                          self.log())
            return m and int(m.group(1))
        self.http_port = wait_for("jobd's dashboard address in its log", port)
        wait_for("jobd's socket", lambda: os.path.exists(self.socket))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def jobctl(self, *args, token=None, stdin=None, check=True):
        env = dict(os.environ, JOBD_ADDRESS="unix:" + self.socket)
        env.pop("JOBD_TOKEN", None)
        if token:
            env["JOBD_TOKEN"] = token
        r = subprocess.run([self.jobctl_bin, *args], input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("jobctl %s: exit %d: %s" %
                                 (" ".join(args), r.returncode, r.stderr))
        return r.stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Chromium:
    """Headless Chromium, driven over the DevTools protocol."""

    def __init__(self, tmp):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + self.profile,
             "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--window-size=1280,1400",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True)
        active = os.path.join(self.profile, "DevToolsActivePort")

        def port():
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited with %d"
                                     % self.proc.returncode)
            with open(active) as f:
                lines = f.read().split("\n")
            return len(lines) >= 2 and lines[1] and int(lines[0])
        self.port = wait_for("chromium's DevToolsActivePort", port, 30)

        def page():
            with urllib.request.urlopen(
                    "http://127.0.0.1:%d/json/list" % self.port,
                    timeout=5) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            return pages and pages[0]["webSocketDebuggerUrl"]
        url = wait_for("chromium's page target", page, 30)
        self.ws = websocket.create_connection(url, timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method,
                                 "params": params}))
        end = time.monotonic() + 30
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
        raise AssertionError(method + ": no answer")

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expression, r["exceptionDetails"]))
        return r["result"].get("value")

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png",
                         captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def stop(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # Its own group.
        self.proc.wait(timeout=15)


# What the page shows (data-value of the element with that id), by
# GetStats's JSON field.
PAGE_NUMBERS = ["accepted", "rejected", "succeeded", "failed", "cancelled",
                "live"]
EXECUTOR_NUMBERS = ["workers", "busy", "queued", "completed", "failed",
                    "cancelled"]

READ_PAGE = """(() => {
  if (document.body.dataset.ready !== '1' || $('overview').hidden) return null;
  const v = (id) => { const e = document.getElementById(id);
                      return e ? Number(e.dataset.value) : null; };
  const out = {};
  for (const k of %s) out[k] = v('stat-' + k);
  for (const tr of document.querySelectorAll('#executors tbody tr')) {
    const ex = tr.dataset.executor;
    for (const k of %s) out[ex + '.' + k] = v(`ex-${ex}-${k}`);
  }
  out.running = [...document.querySelectorAll('#running tbody tr')]
      .map((tr) => tr.dataset.job).filter(Boolean);
  return out;
})()""" % (json.dumps(PAGE_NUMBERS), json.dumps(EXECUTOR_NUMBERS))


def expected_numbers(stats):
    out = {k: int(stats.get(k, 0)) for k in PAGE_NUMBERS}
    for e in stats.get("executors", []):
        if not e.get("enabled"):
            continue
        ex = e["executor"].replace("EXECUTOR_", "").lower()
        for k in EXECUTOR_NUMBERS:
            out[ex + "." + k] = int(e.get(k, 0))
    return out


def page_matches(browser, jobd):
    """The page's numbers equal GetStats's (both read now); the pair."""
    page = browser.eval(READ_PAGE)
    stats = json.loads(jobd.jobctl("--json", "stats"))
    want = expected_numbers(stats)
    got = {k: page.get(k) for k in want} if page else None
    return (got == want and (page, stats)) or None


def test_overview_job_page_and_cancel(jobd, browser, screenshot):
    # Jobs of every end: 300 echo (thread pool and process pool), failures,
    # and one that runs until cancelled.
    jobd.jobctl("map", "echo", stdin="".join("%d\n" % i for i in range(300)))
    jobd.jobctl("map", "--kind", "cpu", "echo",
                stdin="".join("%d\n" % i for i in range(200)))
    jobd.jobctl("submit", "fail", "boom", "--wait", check=False)
    jobd.jobctl("submit", "fail", "again", "--wait", check=False)
    sleeper = jobd.jobctl("submit", "sleep", "600000").strip()
    assert sleeper.isdigit(), sleeper
    wait_for("the sleep job to run", lambda: json.loads(
        jobd.jobctl("--json", "get", sleeper))["state"] == "JOB_STATE_RUNNING")

    browser.navigate("http://127.0.0.1:%d/" % jobd.http_port)
    page, stats = wait_for("the page's numbers to be GetStats's",
                           lambda: page_matches(browser, jobd), 20, 0.25)
    assert int(stats["succeeded"]) == 500, stats
    assert int(stats["failed"]) == 2, stats
    assert sleeper in page["running"], page
    print("overview matches GetStats:", {k: page[k] for k in PAGE_NUMBERS})

    # The job's page, and Cancel on it.
    browser.navigate("http://127.0.0.1:%d/#job/%s" % (jobd.http_port, sleeper))
    wait_for("the job page", lambda: browser.eval(
        "document.getElementById('job-state').dataset.state === 'RUNNING' && "
        "!document.getElementById('cancel').hidden && "
        "document.querySelector('#job-events tbody tr') !== null"))
    shown = browser.eval(
        "[...document.querySelectorAll('#job-summary th, #job-summary td')]"
        ".map((e) => e.textContent).join('|')")
    assert "sleep" in shown and "anonymous" in shown, shown
    browser.eval("document.getElementById('cancel').click()")
    wait_for("the job page to show CANCELLED", lambda: browser.eval(
        "document.getElementById('job-state').dataset.state") == "CANCELLED")
    job = json.loads(jobd.jobctl("--json", "get", sleeper))
    assert job["state"] == "JOB_STATE_CANCELLED", job
    assert job["error"]["reason"] == "ERROR_REASON_CANCELLED", job

    # Back to the overview: the cancel counted, as GetStats says.
    browser.navigate("http://127.0.0.1:%d/#" % jobd.http_port)
    page, stats = wait_for("the page's numbers after the cancel",
                           lambda: page_matches(browser, jobd), 20, 0.25)
    assert int(stats["cancelled"]) == 1 and page["cancelled"] == 1, page
    # The job list refreshes on its own poll (each view's list is kept for
    # a second), so the job leaves "running" within a poll or two.
    wait_for("the cancelled job to leave the running list",
             lambda: sleeper not in browser.eval(READ_PAGE)["running"], 10,
             0.25)
    wait_for("the chart", lambda: browser.eval(
        "document.querySelectorAll('#chart polyline').length") >= 2, 10)
    browser.screenshot(screenshot)
    print("screenshot:", screenshot)


def test_token_required(jobd_bin, jobctl_bin, tmp, browser):
    token = "dashboard-reader-secret"
    digest = hashlib.sha256(token.encode()).hexdigest()
    jobd = Jobd(jobd_bin, jobctl_bin, tmp,
                ["--auth-token", "viewer:read:" + digest])
    try:
        base = "http://127.0.0.1:%d" % jobd.http_port
        try:
            urllib.request.urlopen(base + "/api/stats", timeout=5)
            raise AssertionError("/api/stats answered without a token")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
        browser.navigate(base + "/")
        wait_for("the sign-in form", lambda: browser.eval(
            "!document.getElementById('login').hidden"))
        browser.eval(
            "document.getElementById('token').value = %s;"
            "document.getElementById('login-form').requestSubmit()"
            % json.dumps(token))
        wait_for("the overview once signed in", lambda: browser.eval(READ_PAGE))
        assert browser.eval("document.getElementById('who').textContent"
                            ).startswith("viewer"), "not signed in as viewer"
        # The token is in this tab's sessionStorage, never in the URL.
        assert token not in browser.eval("location.href")
        assert browser.eval("sessionStorage.getItem('jobd-token')") == token
        print("token: the page asks for one and works with a read token")
    finally:
        jobd.stop()


def main(argv):
    if len(argv) != 4:
        print(__doc__)
        return 2
    jobd_bin, jobctl_bin, screenshot = argv[1:]
    tmp = tempfile.mkdtemp(prefix="jobd-dashboard-test-")
    jobd = browser = None
    try:
        jobd = Jobd(jobd_bin, jobctl_bin, tmp)
        browser = Chromium(tmp)
        test_overview_job_page_and_cancel(jobd, browser, screenshot)
        jobd.stop()
        test_token_required(jobd_bin, jobctl_bin, tmp, browser)
        print("dashboard browser test: passed")
        return 0
    finally:
        if browser is not None:
            browser.stop()
        if jobd is not None:
            jobd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
