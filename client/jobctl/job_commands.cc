// jobctl's commands about jobs already submitted: get (one job, all it
// holds), wait (until jobs end), watch (their events), cancel, and ls (the
// retained jobs). See command.h for how they plug in.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/format.h"
#include "client/jobctl/interrupt.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;
using jobd::client::ToJson;
using jobd::client::WatchOptions;
using jobd::client::WatchStream;

// Everything a job holds, one "key:  value" row each.
void PrintJobHuman(const v1::Job& job) {
  std::vector<std::vector<std::string>> rows;
  auto add = [&rows](std::string key, std::string value) {
    rows.push_back({std::move(key) + ":", std::move(value)});
  };
  add("id", job.id());
  add("task", job.spec().task());
  add("state", StateName(job.state()));
  add("executor", ExecutorName(job.executor()));
  add("kind", KindName(job.spec().kind()));
  if (job.spec().args_size() > 0) {
    google::protobuf::Value args;
    *args.mutable_list_value()->mutable_values() = job.spec().args();
    add("args", ValueJson(args));
  }
  if (job.spec().kwargs().fields_size() > 0) {
    add("kwargs", ToJson(job.spec().kwargs(), false));
  }
  if (!job.spec().payload().empty()) {
    add("payload", fmt::format("{} bytes", job.spec().payload().size()));
  }
  if (job.spec().priority() != 0) {
    add("priority", std::to_string(job.spec().priority()));
  }
  if (job.spec().has_timeout()) {
    add("timeout", absl::FormatDuration(
                       jobd::client::FromProtoDuration(job.spec().timeout())));
  }
  if (job.spec().labels_size() > 0) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : job.spec().labels()) {
      labels.push_back(k + "=" + v);
    }
    std::sort(labels.begin(), labels.end());
    add("labels", absl::StrJoin(labels, ","));
  }
  if (job.spec().delivery() == v1::DELIVERY_AT_LEAST_ONCE) {
    add("delivery", "at least once");
  }
  if (job.attempts() > 1) add("attempts", std::to_string(job.attempts()));
  if (job.spec().has_retry()) {
    const v1::RetryPolicy& r = job.spec().retry();
    add("retry",
        fmt::format("up to {} runs, backoff {} x{} up to {}", r.max_attempts(),
                    absl::FormatDuration(
                        jobd::client::FromProtoDuration(r.initial_backoff())),
                    r.backoff_multiplier(),
                    absl::FormatDuration(
                        jobd::client::FromProtoDuration(r.max_backoff()))));
  }
  if (job.spec().has_delay()) {
    add("delay", absl::FormatDuration(
                     jobd::client::FromProtoDuration(job.spec().delay())));
  }
  if (job.spec().has_not_before()) {
    add("not before", FormatTime(job.spec().not_before()));
  }
  if (job.spec().has_start_deadline()) {
    add("start deadline", absl::FormatDuration(jobd::client::FromProtoDuration(
                              job.spec().start_deadline())));
  }
  if (job.spec().has_total_deadline()) {
    add("total deadline", absl::FormatDuration(jobd::client::FromProtoDuration(
                              job.spec().total_deadline())));
  }
  if (job.has_next_attempt_time()) {
    add("next attempt", FormatTime(job.next_attempt_time()));
  }
  if (job.spec().depends_on_size() > 0) {
    const int n = job.spec().depends_on_size();
    std::string ids;
    for (int i = 0; i < std::min(n, 20); ++i) {
      ids += (i > 0 ? " " : "") + job.spec().depends_on(i);
    }
    if (n > 20) ids += fmt::format(" and {} more", n - 20);
    add("after",
        fmt::format(
            "{} ({}{})", ids,
            job.spec().dependency_policy() == v1::DEPENDENCY_POLICY_ALL_ENDED
                ? "when all ended"
                : "when all succeeded",
            job.unmet_dependencies() > 0
                ? fmt::format("; {} not ended yet", job.unmet_dependencies())
                : ""));
  }
  if (!job.spec().concurrency_key().empty()) {
    add("concurrency key", job.spec().concurrency_key());
  }
  if (!job.spec().idempotency_key().empty()) {
    add("idempotency key", job.spec().idempotency_key());
  }
  add("created", FormatTime(job.create_time()));
  add("started", FormatTime(job.start_time()));
  add("finished", FormatTime(job.finish_time()));
  add("run time", RunTime(job));
  if (job.has_progress()) add("progress", ProgressText(job.progress()));
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    add("result", ValueJson(job.result().value()));
    if (!job.result().payload().empty()) {
      add("result payload",
          fmt::format("{} bytes", job.result().payload().size()));
    }
  }
  if (job.has_error()) {
    add("error", fmt::format("{} (code {})", ErrorText(job.error()),
                             job.error().code()));
  }
  // Each failed attempt: when it ran and why it failed.
  for (const v1::JobAttempt& a : job.history()) {
    add(fmt::format("attempt {}", a.attempt()),
        fmt::format("{} .. {}  {}", FormatTime(a.start_time()),
                    FormatTime(a.finish_time()), ErrorText(a.error())));
  }
  if (!job.spec().callback_url().empty()) {
    add("callback", job.spec().callback_url());
    add("callback status", CallbackText(job.callback()));
  }
  PrintTable(rows);
}

int RunGet(const Globals& g, const std::string& id,
           const std::string& wait_text) {
  auto parsed_wait =
      ParseOptionalDuration(wait_text, "--wait", absl::ZeroDuration());
  if (!parsed_wait.ok()) return Usage(Msg(parsed_wait.status()));
  const absl::Duration wait = *parsed_wait;
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<v1::Job> job = client->GetJob(id, wait);
  if (!job.ok()) return Fail(job.status());
  if (g.json) {
    PrintJson(*job);
  } else {
    PrintJobHuman(*job);
  }
  if (wait_text.empty()) return kExitOk;
  const int code = JobExitCode(job->state());
  if (code == kExitTimeout) {
    PrintError(fmt::format("job {} still {} after {}", id,
                           StateName(job->state()),
                           absl::FormatDuration(wait)));
  }
  return code;
}

int RunWait(const Globals& g, const std::vector<std::string>& ids,
            const std::string& timeout_text) {
  auto parsed_timeout = ParseOptionalDuration(timeout_text, "--timeout",
                                              absl::InfiniteDuration());
  if (!parsed_timeout.ok()) return Usage(Msg(parsed_timeout.status()));
  const absl::Duration timeout = *parsed_timeout;
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  const absl::Time deadline = absl::Now() + timeout;
  int code = kExitOk;
  for (const std::string& id : ids) {
    const absl::Duration left =
        std::max(absl::ZeroDuration(), deadline - absl::Now());
    // Across a restart of jobd too: asked again until it answers (30 s).
    absl::StatusOr<v1::Job> job = client->FollowJob(id, left);
    if (!job.ok()) {
      code = Worst(code, Fail(job.status()));
      continue;
    }
    if (g.json) {
      PrintJson(*job);
    } else {
      fmt::print("{}\n", JobEndLine(*job));
    }
    std::fflush(stdout);
    code = Worst(code, JobExitCode(job->state()));
  }
  if (code == kExitTimeout) PrintError("timed out waiting for the job(s)");
  return code;
}

int RunCancel(const Globals& g, const std::vector<std::string>& ids) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  int code = kExitOk;
  for (const std::string& id : ids) {
    absl::StatusOr<v1::CancelJobResponse> r = client->Cancel(id);
    if (!r.ok()) {
      code = Worst(code, Fail(r.status()));
      continue;
    }
    if (g.json) {
      fmt::print(
          "{{\"job_id\":\"{}\",\"state\":\"{}\",\"already_ended\":{}}}\n", id,
          v1::JobState_Name(r->state()), r->already_ended() ? "true" : "false");
    } else if (r->already_ended()) {
      fmt::print("{}  {}  (already ended)\n", id, StateName(r->state()));
    } else if (r->state() == v1::JOB_STATE_RUNNING) {
      fmt::print("{}  RUNNING  (cancel requested)\n", id);
    } else {
      fmt::print("{}  {}\n", id, StateName(r->state()));
    }
  }
  return code;
}

int RunWatch(const Globals& g, const std::vector<std::string>& ids,
             uint64_t after, bool progress) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  WatchOptions options;
  options.job_ids = ids;
  options.after_sequence = after;
  options.include_progress = progress;
  WatchStream stream = client->Watch(std::move(options));
  OnInterrupt([&stream] { stream.Cancel(); });
  v1::JobEvent event;
  bool first = true;
  while (stream.Next(&event)) {
    if (first) {
      first = false;
      if (stream.events_lost()) {
        PrintError(fmt::format(
            "events after sequence {} were lost; replay starts at {}", after,
            stream.oldest_retained_sequence()));
      }
    }
    if (g.json) {
      PrintJson(event);
    } else {
      fmt::print("{}\n", EventLine(event));
    }
    std::fflush(stdout);
  }
  OnInterrupt(nullptr);
  const absl::Status status = stream.status();
  if (!status.ok()) return Fail(status);
  return kExitOk;
}

int RunLs(const Globals& g, const std::vector<std::string>& states,
          const std::string& task, size_t limit, bool all_nodes) {
  jobd::client::ListJobsFilter filter;
  for (const std::string& s : states) {
    std::optional<v1::JobState> st = ParseState(s);
    if (!st) {
      return Usage(fmt::format(
          "--state: '{}' is not one of queued, waiting, running, succeeded, "
          "failed, cancelled",
          s));
    }
    filter.states.push_back(*st);
  }
  filter.task = task;
  filter.limit = limit;
  filter.all_nodes = all_nodes;
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<std::vector<v1::Job>> jobs = client->ListJobs(filter);
  if (!jobs.ok()) return Fail(jobs.status());
  if (g.json) {
    for (const v1::Job& job : *jobs) PrintJson(job);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "TASK", "STATE", "EXECUTOR", "CREATED", "RUN TIME",
                  "RESULT/ERROR"});
  for (const v1::Job& job : *jobs) {
    std::string detail = JobDetail(job);
    if (detail.size() > 60) detail = detail.substr(0, 57) + "...";
    rows.push_back({job.id(), job.spec().task(), StateName(job.state()),
                    ExecutorName(job.executor()), FormatTime(job.create_time()),
                    RunTime(job), detail});
  }
  PrintTable(rows);
  return kExitOk;
}

// What CLI11 writes into for these commands.
struct JobArgs {
  std::string get_id, get_wait;
  std::vector<std::string> wait_ids;
  std::string wait_timeout;
  std::vector<std::string> watch_ids;
  uint64_t watch_after = 0;
  bool watch_progress = false;
  std::vector<std::string> cancel_ids;
  std::vector<std::string> ls_states;
  std::string ls_task;
  size_t ls_limit = 100;
  bool ls_all_nodes = false;
};

}  // namespace

void AddJobCommands(CLI::App& app, CommandSet& commands) {
  auto a = std::make_shared<JobArgs>();
  CLI::App* get_cmd = commands.Add(
      app, "get",
      "Show one job. With --wait: exit 0/1 as it ended, 5 if not yet",
      [a](const Globals& g) { return RunGet(g, a->get_id, a->get_wait); });
  get_cmd->add_option("id", a->get_id, "Job id")->required();
  get_cmd->add_option("--wait", a->get_wait,
                      "Wait up to this long for the job to end");

  CLI::App* wait_cmd = commands.Add(
      app, "wait",
      "Wait for jobs to end; print one line each: ID  STATE  RESULT|ERROR",
      [a](const Globals& g) {
        return RunWait(g, a->wait_ids, a->wait_timeout);
      });
  wait_cmd->add_option("ids", a->wait_ids, "Job ids")->required();
  wait_cmd->add_option("--timeout", a->wait_timeout,
                       "Give up after this long (exit 5)");

  CLI::App* watch_cmd = commands.Add(
      app, "watch",
      "Stream job events (SEQ  JOB  TYPE  DETAIL) until the named jobs end, "
      "or of every job until Ctrl-C",
      [a](const Globals& g) {
        return RunWatch(g, a->watch_ids, a->watch_after, a->watch_progress);
      });
  watch_cmd->add_option("ids", a->watch_ids, "Job ids (none: every job)");
  watch_cmd->add_option("--after", a->watch_after,
                        "First replay retained events after this sequence");
  watch_cmd->add_flag("--progress", a->watch_progress,
                      "Include PROGRESS events");

  CLI::App* cancel_cmd = commands.Add(
      app, "cancel", "Cancel jobs",
      [a](const Globals& g) { return RunCancel(g, a->cancel_ids); });
  cancel_cmd->add_option("ids", a->cancel_ids, "Job ids")->required();

  CLI::App* ls_cmd = commands.Add(
      app, "ls", "List retained jobs, oldest first", [a](const Globals& g) {
        return RunLs(g, a->ls_states, a->ls_task, a->ls_limit, a->ls_all_nodes);
      });
  ls_cmd->add_option("--state", a->ls_states,
                     "Only jobs in this state (repeatable): queued, waiting, "
                     "running, succeeded, failed, cancelled");
  ls_cmd->add_option("--task", a->ls_task, "Only jobs of this task");
  ls_cmd->add_option("--limit", a->ls_limit, "Jobs at most")
      ->capture_default_str();
  ls_cmd->add_flag("--all-nodes", a->ls_all_nodes,
                   "Cluster mode: the jobs of every live node, node by node");
}

}  // namespace jobd::jobctl
