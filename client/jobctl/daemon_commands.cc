// jobctl's commands about the daemon itself: tasks (what it can run),
// stats (its counters and the process pool's workers), drain (shut it down
// gracefully, admin) and unquarantine (let a quarantined task run again).
// See command.h for how they plug in.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/format.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;

// "n:int m:number=3 ...": each parameter with its type and, if optional,
// its default.
std::string ParamsText(const v1::TaskInfo& t) {
  std::string params = absl::StrJoin(
      t.params(), " ", [](std::string* out, const v1::TaskParam& p) {
        out->append(p.name() + ":" + p.type());
        if (!p.required()) out->append("=" + ValueJson(p.default_value()));
      });
  if (t.variadic()) params += params.empty() ? "..." : " ...";
  return params;
}

int RunTasks(const Globals& g) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<std::vector<v1::TaskInfo>> tasks = client->ListTasks();
  if (!tasks.ok()) return Fail(tasks.status());
  if (g.json) {
    for (const v1::TaskInfo& t : *tasks) PrintJson(t);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "KIND", "EXECUTORS", "PARAMS", "DESCRIPTION"});
  for (const v1::TaskInfo& t : *tasks) {
    const std::string executors =
        absl::StrJoin(t.executors(), ",", [](std::string* out, int e) {
          out->append(ExecutorName(static_cast<v1::Executor>(e)));
        });
    const std::string params = ParamsText(t);
    rows.push_back({t.quarantined() ? t.name() + " (QUARANTINED)" : t.name(),
                    KindName(t.default_kind()),
                    executors.empty() ? "-" : executors,
                    params.empty() ? "-" : params, t.description()});
  }
  PrintTable(rows);
  return kExitOk;
}

// The process pool's part of `stats`: its fork server, retired workers,
// quarantined tasks and one row per worker (spares last).
void PrintProcessPool(const v1::ProcessPoolStats& p) {
  fmt::print(
      "\nprocess pool: fork server pid {}, restarts {}, workers "
      "forked {}\n",
      p.fork_server_pid(), p.fork_server_restarts(), p.workers_spawned());
  const std::string retired = absl::StrJoin(
      p.retired(), ", ", [](std::string* out, const auto& reason_count) {
        out->append(
            fmt::format("{}={}", reason_count.first, reason_count.second));
      });
  fmt::print("retired: {}\n", retired.empty() ? "none" : retired);
  if (p.quarantined_tasks_size() > 0) {
    fmt::print("quarantined tasks: {}\n",
               absl::StrJoin(p.quarantined_tasks(), ", "));
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
      {"SLOT", "PID", "STATE", "JOBS", "RSS", "CURRENT JOB", "STARTED"});
  std::vector<v1::WorkerStats> all(p.workers().begin(), p.workers().end());
  all.insert(all.end(), p.spares().begin(), p.spares().end());
  for (const v1::WorkerStats& w : all) {
    rows.push_back(
        {std::to_string(w.slot()), w.pid() ? std::to_string(w.pid()) : "-",
         w.state(), std::to_string(w.jobs_done()),
         fmt::format("{:.1f} MiB",
                     static_cast<double>(w.rss_bytes()) / (1 << 20)),
         w.current_job_id() ? std::to_string(w.current_job_id()) : "-",
         w.has_started() ? FormatTime(w.started()) : "-"});
  }
  PrintTable(rows);
}

// Cluster mode: this node, the timings, then one row per node.
void PrintCluster(const v1::ClusterStats& c) {
  auto dur = [](const google::protobuf::Duration& d) {
    return absl::FormatDuration(jobd::client::FromProtoDuration(d));
  };
  const absl::Duration bound =
      jobd::client::FromProtoDuration(c.node_ttl()) +
      jobd::client::FromProtoDuration(c.reaper_period());
  PrintTable({
      {"cluster:",
       fmt::format("node {} (epoch {}) on {}, redis {}; {} partitions",
                   c.node_name(), c.node_epoch(), c.redis(),
                   c.redis_connected() ? "connected" : "NOT CONNECTED",
                   c.partitions())},
      {"",
       fmt::format("lease {} renewed every {}, reaper every {}: a dead node "
                   "is seen within {}",
                   dur(c.node_ttl()), dur(c.heartbeat()),
                   dur(c.reaper_period()), absl::FormatDuration(bound))},
      {"", fmt::format(
               "lease losses {}, nodes found dead {}, redis "
               "reconnects {}, registry read {}",
               c.lease_losses(), c.nodes_declared_dead(), c.redis_reconnects(),
               c.has_last_reap() ? FormatTime(c.last_reap()) : "never")},
  });
  if (c.has_work()) {
    const v1::ClusterWork& w = c.work();
    uint64_t backlog = 0, pending = 0;
    for (const v1::ClusterPartition& p : w.partitions()) {
      backlog += p.backlog();
      pending += p.pending();
    }
    PrintTable({
        {"work:",
         fmt::format("published {}, shared now {}, results back {}; taken "
                     "{}, held now {}, completed {}",
                     w.published(), w.shared(), w.results(), w.taken(),
                     w.held(), w.completed())},
        {"", fmt::format("reclaimed {} (at-most-once failed {}), dead "
                         "letters {}, completions refused {}, claims lost "
                         "{}, given back {}",
                         w.reclaimed(), w.lost(), w.dead_lettered(),
                         w.refused(), w.claims_lost(), w.released())},
        {"", fmt::format("streams: backlog {}, pending {} (all partitions)",
                         backlog, pending)},
    });
    std::vector<std::vector<std::string>> rows;
    for (const v1::ClusterPartition& p : w.partitions()) {
      if (p.backlog() == 0 && p.pending() == 0) continue;
      std::vector<std::string> by;
      for (const auto& [consumer, n] : p.pending_by_consumer()) {
        by.push_back(fmt::format("{} {}", consumer, n));
      }
      std::sort(by.begin(), by.end());
      rows.push_back({std::to_string(p.partition()),
                      std::to_string(p.backlog()), std::to_string(p.pending()),
                      absl::StrJoin(by, ", ")});
    }
    if (!rows.empty()) {
      rows.insert(rows.begin(),
                  {"PARTITION", "BACKLOG", "PENDING", "PENDING BY CONSUMER"});
      fmt::print("\n");
      PrintTable(rows);
    }
  }
  if (c.nodes_size() == 0) return;
  fmt::print("\n");
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NODE", "STATE", "EPOCH", "LEASE LEFT / DEAD SINCE"});
  for (const v1::ClusterNode& n : c.nodes()) {
    rows.push_back(
        {n.self() ? n.name() + " *" : n.name(), n.alive() ? "alive" : "dead",
         std::to_string(n.epoch()),
         n.alive() ? (n.has_lease_left()
                          ? absl::FormatDuration(absl::Trunc(
                                jobd::client::FromProtoDuration(n.lease_left()),
                                absl::Milliseconds(100)))
                          : "no expiry")
                   : FormatTime(n.dead_since())});
  }
  PrintTable(rows);
}

int RunStats(const Globals& g) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  if (!stats.ok()) return Fail(stats.status());
  if (g.json) {
    PrintJson(*stats);
    return kExitOk;
  }
  const v1::GetStatsResponse& s = *stats;
  PrintTable({
      {"address:", client->address()},
      {"version:", s.version()},
      {"started:", FormatTime(s.start_time())},
      {"uptime:",
       absl::FormatDuration(absl::Trunc(
           jobd::client::FromProtoDuration(s.uptime()), absl::Seconds(1)))},
      {"draining:", s.draining() ? "yes" : "no"},
      {"accepted:", std::to_string(s.accepted())},
      {"rejected:", std::to_string(s.rejected())},
      {"succeeded:", std::to_string(s.succeeded())},
      {"failed:", std::to_string(s.failed())},
      {"cancelled:", std::to_string(s.cancelled())},
      {"live:", std::to_string(s.live())},
      {"retained:", std::to_string(s.retained())},
      {"memory:",
       fmt::format("live specs {} B, retained {} B, output {} B of {} "
                   "job(s) ({} B dropped)",
                   s.live_bytes(), s.retained_bytes(), s.output_bytes(),
                   s.output_jobs(), s.output_dropped_bytes())},
      {"last sequence:", std::to_string(s.last_sequence())},
      {"waiting:", std::to_string(s.waiting())},
      {"retried:", fmt::format("{} attempts", s.retried())},
      {"expired:", std::to_string(s.expired())},
      {"schedules:", fmt::format("{} (runs {}, slots skipped {}, missed {})",
                                 s.schedules(), s.schedule_runs(),
                                 s.schedule_skipped(), s.schedule_missed())},
  });
  if (s.has_callbacks()) {
    const v1::CallbackStats& c = s.callbacks();
    PrintTable({{"callbacks:",
                 fmt::format("pending {}, delivered {}, failed {}, dropped {} "
                             "({} attempts)",
                             c.pending(), c.delivered(), c.failed(),
                             c.dropped(), c.attempts())}});
  }
  if (s.has_cluster()) PrintCluster(s.cluster());
  if (s.keys_size() > 0) {
    uint64_t running = 0, parked = 0;
    for (const v1::KeyLimit& k : s.keys()) {
      running += k.running();
      parked += k.parked();
    }
    PrintTable({{"keys:", fmt::format("{} (running {}, parked {}; jobctl "
                                      "limit ls)",
                                      s.keys_size(), running, parked)}});
  }
  if (s.executors_size() > 0) {
    fmt::print("\n");
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"EXECUTOR", "ENABLED", "WORKERS", "BUSY", "QUEUED",
                    "COMPLETED", "FAILED", "CANCELLED"});
    for (const v1::ExecutorStats& e : s.executors()) {
      rows.push_back({ExecutorName(e.executor()), e.enabled() ? "yes" : "no",
                      std::to_string(e.workers()), std::to_string(e.busy()),
                      std::to_string(e.queued()), std::to_string(e.completed()),
                      std::to_string(e.failed()),
                      std::to_string(e.cancelled())});
    }
    PrintTable(rows);
  }
  if (s.has_process_pool()) PrintProcessPool(s.process_pool());
  return kExitOk;
}

int RunDrain(const Globals& g) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  if (absl::Status s = client->Drain(); !s.ok()) return Fail(s);
  if (!g.json) fmt::print("jobd is draining\n");
  return kExitOk;
}

int RunUnquarantine(const Globals& g, const std::string& task) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<bool> was = client->ClearQuarantine(task);
  if (!was.ok()) return Fail(was.status());
  if (g.json) {
    v1::ClearQuarantineResponse response;
    response.set_was_quarantined(*was);
    PrintJson(response);
  } else {
    fmt::print("{}\n",
               *was ? fmt::format("task '{}' released from quarantine", task)
                    : fmt::format("task '{}' was not quarantined", task));
  }
  return kExitOk;
}

}  // namespace

void AddDaemonCommands(CLI::App& app, CommandSet& commands) {
  commands.Add(app, "tasks", "List registered tasks", RunTasks);
  commands.Add(app, "stats",
               "Show daemon counters and the process pool's workers", RunStats);
  commands.Add(app, "drain",
               "Shut jobd down gracefully, as SIGTERM does (admin)", RunDrain);
  auto task = std::make_shared<std::string>();
  CLI::App* unquarantine_cmd = commands.Add(
      app, "unquarantine",
      "Let a quarantined task (one that kept killing its worker) run again",
      [task](const Globals& g) { return RunUnquarantine(g, *task); });
  unquarantine_cmd->add_option("task", *task, "Task name")->required();
}

}  // namespace jobd::jobctl
