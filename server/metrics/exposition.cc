#include "server/metrics/exposition.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "fmt/format.h"
#include "server/jobs/proto_time.h"

namespace jobd {
namespace {

using Labels = std::vector<std::pair<std::string_view, std::string>>;

// A label value escaped as the format wants (\\, \", \n).
std::string Escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// "SUCCEEDED" from JOB_STATE_SUCCEEDED, lower-cased: "succeeded".
std::string EnumLabel(const std::string& full, std::string_view prefix) {
  std::string_view v = full;
  if (v.substr(0, prefix.size()) == prefix) v.remove_prefix(prefix.size());
  std::string out(v);
  absl::AsciiStrToLower(&out);
  return out;
}
std::string ExecutorLabel(v1::Executor e) {
  return EnumLabel(v1::Executor_Name(e), "EXECUTOR_");
}
std::string StateLabel(v1::JobState s) {
  return EnumLabel(v1::JobState_Name(s), "JOB_STATE_");
}
std::string ReasonLabel(v1::ErrorReason r) {
  return r == v1::ERROR_REASON_UNSPECIFIED
             ? "none"
             : EnumLabel(v1::ErrorReason_Name(r), "ERROR_REASON_");
}

std::string Number(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v))) {
    return fmt::format("{}", static_cast<int64_t>(v));
  }
  return fmt::format("{}", v);
}

class Writer {
 public:
  void Family(std::string_view name, std::string_view type,
              std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n",
                   name, help, name, type);
  }
  void Sample(std::string_view name, const Labels& labels, double value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        fmt::format_to(std::back_inserter(out_), "{}{}=\"{}\"",
                       i > 0 ? "," : "", labels[i].first,
                       Escape(labels[i].second));
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += Number(value);
    out_ += '\n';
  }
  // A family of one unlabelled sample.
  void One(std::string_view name, std::string_view type, std::string_view help,
           double value) {
    Family(name, type, help);
    Sample(name, {}, value);
  }
  // The samples of one histogram (its family written before).
  void Histogram(std::string_view name, const Labels& labels,
                 const HistogramSnapshot& h) {
    const std::string bucket = std::string(name) + "_bucket";
    uint64_t cumulative = 0;
    Labels with_le = labels;
    with_le.emplace_back("le", "");
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      cumulative += h.buckets[i];
      with_le.back().second = Number(h.bounds[i]);
      Sample(bucket, with_le, double(cumulative));
    }
    with_le.back().second = "+Inf";
    Sample(bucket, with_le, double(h.count));
    Sample(std::string(name) + "_sum", labels, h.sum);
    Sample(std::string(name) + "_count", labels, double(h.count));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

void RenderExecutors(const v1::GetStatsResponse& stats, Writer& w) {
  struct Gauge {
    const char* name;
    const char* help;
    double (*get)(const v1::ExecutorStats&);
  };
  const Gauge gauges[] = {
      {"jobd_executor_enabled", "1 if the executor runs jobs here.",
       [](const v1::ExecutorStats& e) { return e.enabled() ? 1.0 : 0.0; }},
      {"jobd_executor_workers",
       "Threads, processes or concurrent jobs the executor has.",
       [](const v1::ExecutorStats& e) { return double(e.workers()); }},
      {"jobd_executor_busy", "Slots running a job now.",
       [](const v1::ExecutorStats& e) { return double(e.busy()); }},
      {"jobd_queue_depth", "Jobs waiting for a slot of the executor.",
       [](const v1::ExecutorStats& e) { return double(e.queued()); }},
  };
  for (const Gauge& g : gauges) {
    w.Family(g.name, "gauge", g.help);
    for (const v1::ExecutorStats& e : stats.executors()) {
      w.Sample(g.name, {{"executor", ExecutorLabel(e.executor())}}, g.get(e));
    }
  }
  w.Family("jobd_executor_jobs_ended_total", "counter",
           "Jobs that ended on the executor, by state.");
  for (const v1::ExecutorStats& e : stats.executors()) {
    const std::string ex = ExecutorLabel(e.executor());
    w.Sample("jobd_executor_jobs_ended_total",
             {{"executor", ex}, {"state", "succeeded"}}, double(e.completed()));
    w.Sample("jobd_executor_jobs_ended_total",
             {{"executor", ex}, {"state", "failed"}}, double(e.failed()));
    w.Sample("jobd_executor_jobs_ended_total",
             {{"executor", ex}, {"state", "cancelled"}}, double(e.cancelled()));
  }
}

void RenderFlows(const TaskCounters::Snapshot& tasks,
                 const v1::GetStatsResponse& stats, Writer& w) {
  // Sorted, so that a scrape reads the same from one to the next.
  std::map<std::pair<std::string, std::string>, std::pair<uint64_t, uint64_t>>
      flows;
  for (const TaskCounters::Flow& f : tasks.flows) {
    auto& [accepted, started] = flows[{f.task, ExecutorLabel(f.executor)}];
    accepted += f.accepted;
    started += f.started;
  }
  w.Family("jobd_jobs_accepted_total", "counter",
           "Jobs accepted, by task and the executor they were queued for "
           "(tasks past the label cap count as \"other\").");
  for (const auto& [l, n] : flows) {
    w.Sample("jobd_jobs_accepted_total",
             {{"task", l.first}, {"executor", l.second}}, double(n.first));
  }
  w.Family("jobd_jobs_started_total", "counter",
           "Jobs started, by task and executor.");
  for (const auto& [l, n] : flows) {
    w.Sample("jobd_jobs_started_total",
             {{"task", l.first}, {"executor", l.second}}, double(n.second));
  }
  w.Family("jobd_queue_wait_seconds", "histogram",
           "Time from a job's acceptance to its start, by executor.");
  for (const v1::ExecutorStats& e : stats.executors()) {
    const size_t i = static_cast<size_t>(e.executor());
    if (i >= tasks.queue_wait.size() || tasks.queue_wait[i].bounds.empty()) {
      continue;
    }
    w.Histogram("jobd_queue_wait_seconds",
                {{"executor", ExecutorLabel(e.executor())}},
                tasks.queue_wait[i]);
  }
}

void RenderTasks(const TaskCounters::Snapshot& tasks, Writer& w) {
  // Sorted, so that a scrape reads the same from one to the next.
  std::map<std::vector<std::string>, uint64_t> ended;
  for (const auto& [k, n] : tasks.ended) {
    ended[{k.task, ExecutorLabel(k.executor), StateLabel(k.state),
           ReasonLabel(k.reason)}] += n;
  }
  w.Family("jobd_jobs_ended_total", "counter",
           "Jobs ended, by task, executor, state and reason (tasks past the "
           "label cap count as \"other\").");
  for (const auto& [l, n] : ended) {
    w.Sample(
        "jobd_jobs_ended_total",
        {{"task", l[0]}, {"executor", l[1]}, {"state", l[2]}, {"reason", l[3]}},
        double(n));
  }
  std::map<std::string, TaskCounters::RunTimes> runs(tasks.run_times.begin(),
                                                     tasks.run_times.end());
  w.Family("jobd_job_run_seconds", "histogram",
           "Run time of the jobs that ran, by task.");
  for (const auto& [task, r] : runs) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < TaskCounters::kRunBuckets.size(); ++i) {
      cumulative += r.buckets[i];
      w.Sample("jobd_job_run_seconds_bucket",
               {{"task", task}, {"le", Number(TaskCounters::kRunBuckets[i])}},
               double(cumulative));
    }
    w.Sample("jobd_job_run_seconds_bucket", {{"task", task}, {"le", "+Inf"}},
             double(r.count));
    w.Sample("jobd_job_run_seconds_sum", {{"task", task}}, r.sum_seconds);
    w.Sample("jobd_job_run_seconds_count", {{"task", task}}, double(r.count));
  }
}

void RenderPool(const v1::ProcessPoolStats& pool, Writer& w) {
  w.One("jobd_pool_fork_server_restarts_total", "counter",
        "Times the fork server died and was replaced.",
        double(pool.fork_server_restarts()));
  w.One("jobd_pool_workers_spawned_total", "counter",
        "Worker processes forked since start.", double(pool.workers_spawned()));
  w.Family("jobd_pool_workers_retired_total", "counter",
           "Worker processes retired, by reason (recycled, crashed, killed, "
           "...).");
  std::map<std::string, uint64_t> retired(pool.retired().begin(),
                                          pool.retired().end());
  for (const auto& [reason, n] : retired) {
    w.Sample("jobd_pool_workers_retired_total", {{"reason", reason}},
             double(n));
  }
  w.One("jobd_pool_quarantined_tasks", "gauge", "Tasks quarantined now.",
        double(pool.quarantined_tasks_size()));
  w.Family("jobd_pool_worker_rss_bytes", "gauge",
           "Resident memory of each job slot's worker process.");
  for (const v1::WorkerStats& s : pool.workers()) {
    w.Sample("jobd_pool_worker_rss_bytes", {{"slot", std::to_string(s.slot())}},
             double(s.rss_bytes()));
  }
  w.Family("jobd_pool_worker_jobs_done", "gauge",
           "Jobs the slot's current worker process has finished.");
  for (const v1::WorkerStats& s : pool.workers()) {
    w.Sample("jobd_pool_worker_jobs_done", {{"slot", std::to_string(s.slot())}},
             double(s.jobs_done()));
  }
  w.Family("jobd_pool_workers", "gauge", "Worker processes by state.");
  std::map<std::string, int> states = {
      {"spawning", 0}, {"idle", 0}, {"busy", 0}, {"retiring", 0}};
  for (const v1::WorkerStats& s : pool.workers()) {
    if (states.contains(s.state())) ++states[s.state()];
  }
  for (const auto& [state, n] : states) {
    w.Sample("jobd_pool_workers", {{"state", state}}, n);
  }
  w.One("jobd_pool_spare_workers", "gauge", "Idle spare workers kept ready.",
        double(pool.spares_size()));
}

void RenderCommits(const Journal::Commits& c, Writer& w) {
  w.Family("jobd_journal_commit_seconds", "histogram",
           "How long each journal commit took (retries included).");
  w.Histogram("jobd_journal_commit_seconds", {}, c.seconds);
  w.Family("jobd_journal_commit_records", "histogram",
           "Job records per journal commit (after folding).");
  w.Histogram("jobd_journal_commit_records", {}, c.records);
  w.One("jobd_journal_written_bytes_total", "counter",
        "Bytes of specs, results and errors written to the journal.",
        double(c.bytes));
  w.Family("jobd_journal_compaction_seconds", "histogram",
           "How long each step of a fold of the journal's log into its "
           "jobs table took, or each whole fold (commits wait meanwhile).");
  w.Histogram("jobd_journal_compaction_seconds", {}, c.compaction_seconds);
  w.One("jobd_journal_compaction_errors_total", "counter",
        "Fold steps of the journal's log that failed (tried again later).",
        double(c.compaction_errors));
}

void RenderRpcs(const std::vector<RpcStats::MethodSnapshot>& rpcs, Writer& w) {
  w.Family("jobd_rpcs_total", "counter",
           "RPCs (and streams) ended, by method and gRPC status code.");
  for (const RpcStats::MethodSnapshot& m : rpcs) {
    for (int code = 0; code < RpcStats::kCodes; ++code) {
      if (m.codes[code] == 0) continue;
      w.Sample("jobd_rpcs_total",
               {{"method", m.label},
                {"code", std::string(RpcStats::CodeName(code))}},
               double(m.codes[code]));
    }
  }
  w.Family("jobd_rpc_duration_seconds", "histogram",
           "How long RPCs took, by method: a unary RPC from its arrival to "
           "its status, a stream from its opening to its end.");
  for (const RpcStats::MethodSnapshot& m : rpcs) {
    if (m.seconds.count == 0) continue;
    w.Histogram("jobd_rpc_duration_seconds", {{"method", m.label}}, m.seconds);
  }
  w.Family("jobd_streams_open", "gauge",
           "Streams open now, by method (Submit, WatchJobs).");
  for (const RpcStats::MethodSnapshot& m : rpcs) {
    if (m.stream) {
      w.Sample("jobd_streams_open", {{"method", m.label}}, double(m.in_flight));
    }
  }
  w.Family("jobd_rpcs_in_flight", "gauge",
           "Unary RPCs being answered now, by method (GetJob with a wait "
           "counts while it waits).");
  for (const RpcStats::MethodSnapshot& m : rpcs) {
    if (!m.stream) {
      w.Sample("jobd_rpcs_in_flight", {{"method", m.label}},
               double(m.in_flight));
    }
  }
}

void RenderJournal(const v1::JournalStats& j, Writer& w) {
  w.One("jobd_journal_healthy", "gauge",
        "1 while the journal writes; 0 while writes fail (new jobs refused).",
        j.healthy() ? 1 : 0);
  w.One("jobd_journal_commits_total", "counter",
        "Journal transactions committed.", double(j.commits()));
  w.One("jobd_journal_records_total", "counter",
        "Journal row writes (after folding).", double(j.records()));
  w.One("jobd_journal_write_errors_total", "counter",
        "Failed journal commits (retried).", double(j.write_errors()));
  w.One("jobd_journal_last_commit_seconds", "gauge",
        "How long the latest journal commit took.",
        absl::ToDoubleSeconds(FromProto(j.last_commit())));
  w.One("jobd_journal_file_bytes", "gauge", "Journal database file size.",
        double(j.file_bytes()));
  w.One("jobd_journal_wal_bytes", "gauge", "Journal write-ahead log size.",
        double(j.wal_bytes()));
  w.One("jobd_journal_rows", "gauge", "Jobs the journal holds.",
        double(j.rows()));
}

// Jobs over time, schedules, callbacks and concurrency keys: totals only
// (keys are callers' strings: never label values).
void RenderOverTime(const v1::GetStatsResponse& stats, Writer& w) {
  w.One("jobd_jobs_waiting", "gauge",
        "Jobs WAITING for their time (a delay or a retry's backoff).",
        double(stats.waiting()));
  w.One("jobd_jobs_waiting_on_dependencies", "gauge",
        "Jobs WAITING for their dependencies to end.",
        double(stats.waiting_on_dependencies()));
  w.One("jobd_job_retries_total", "counter",
        "Attempts that failed and were retried.", double(stats.retried()));
  w.One("jobd_jobs_expired_total", "counter",
        "Jobs that failed EXPIRED or DEADLINE_EXCEEDED.",
        double(stats.expired()));
  w.One("jobd_schedules", "gauge", "Schedules held (paused ones included).",
        double(stats.schedules()));
  w.One("jobd_schedule_runs_total", "counter", "Runs submitted by schedules.",
        double(stats.schedule_runs()));
  w.One("jobd_schedule_slots_skipped_total", "counter",
        "Schedule slots skipped by their overlap policy.",
        double(stats.schedule_skipped()));
  w.One("jobd_schedule_slots_missed_total", "counter",
        "Schedule slots missed while jobd was down (catch-up policy).",
        double(stats.schedule_missed()));
  const v1::CallbackStats& c = stats.callbacks();
  w.One("jobd_callbacks_pending", "gauge", "Push callbacks not yet delivered.",
        double(c.pending()));
  w.Family("jobd_callbacks_ended_total", "counter",
           "Push callbacks ended, by outcome.");
  w.Sample("jobd_callbacks_ended_total", {{"outcome", "delivered"}},
           double(c.delivered()));
  w.Sample("jobd_callbacks_ended_total", {{"outcome", "failed"}},
           double(c.failed()));
  w.Sample("jobd_callbacks_ended_total", {{"outcome", "dropped"}},
           double(c.dropped()));
  w.One("jobd_callback_attempts_total", "counter",
        "HTTP POSTs of push callbacks.", double(c.attempts()));
  uint64_t running = 0, parked = 0;
  for (const v1::KeyLimit& k : stats.keys()) {
    running += k.running();
    parked += k.parked();
  }
  w.One("jobd_key_jobs_running", "gauge",
        "Jobs with a concurrency key running now.", double(running));
  w.One("jobd_key_jobs_parked", "gauge",
        "Jobs queued but held back by their concurrency key's limits.",
        double(parked));
}

}  // namespace

std::string RenderMetrics(const MetricsSources& sources) {
  const v1::GetStatsResponse& stats = sources.stats;
  Writer w;
  w.One("jobd_up", "gauge", "1: jobd answers (0 while draining: 1 too).", 1);
  w.One("jobd_draining", "gauge", "1 while jobd shuts down.",
        stats.draining() ? 1 : 0);
  w.One("jobd_uptime_seconds", "gauge", "Seconds since jobd started.",
        absl::ToDoubleSeconds(FromProto(stats.uptime())));
  w.One("jobd_jobs_rejected_total", "counter",
        "Job specs rejected (unknown task, invalid input, overload).",
        double(stats.rejected()));
  w.One("jobd_jobs_live", "gauge", "Jobs not yet ended.", double(stats.live()));
  w.One("jobd_jobs_retained", "gauge", "Ended jobs still retained.",
        double(stats.retained()));
  w.One("jobd_live_bytes", "gauge", "Bytes of the live jobs' specs.",
        double(stats.live_bytes()));
  w.One("jobd_retained_bytes", "gauge",
        "Bytes of the retained jobs' specs and results.",
        double(stats.retained_bytes()));
  w.One("jobd_output_bytes", "gauge",
        "Bytes of job output held for StreamJobOutput (data and overhead).",
        double(stats.output_bytes()));
  w.One("jobd_output_jobs", "gauge", "Jobs whose output is held.",
        double(stats.output_jobs()));
  w.One("jobd_output_dropped_bytes_total", "counter",
        "Bytes of job output dropped over --output-bytes-per-job or "
        "--max-output-bytes.",
        double(stats.output_dropped_bytes()));
  w.One("jobd_watchers", "gauge",
        "WatchJobs streams watching all jobs (not named ones).",
        double(stats.watchers()));
  RenderOverTime(stats, w);
  RenderExecutors(stats, w);
  RenderFlows(sources.tasks, stats, w);
  RenderTasks(sources.tasks, w);
  if (stats.has_process_pool()) RenderPool(stats.process_pool(), w);
  if (stats.has_journal()) RenderJournal(stats.journal(), w);
  if (sources.journal.has_value()) RenderCommits(*sources.journal, w);
  if (!sources.rpcs.empty()) RenderRpcs(sources.rpcs, w);
  return w.Take();
}

}  // namespace jobd
