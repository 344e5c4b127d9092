// jobctl submit: one job from the command line; prints its id, or with
// --wait its result once it ends. See command.h for how it plugs in.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/format.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;
using jobd::client::Future;
using jobd::client::JobOutcome;

struct SubmitArgs {
  std::string task;
  std::vector<std::string> args;
  std::vector<std::string> kwargs;
  std::vector<std::string> labels;
  std::string payload_file;
  std::string kind = "auto";
  std::string executor;
  int priority = 0;
  std::string timeout;
  std::string idempotency_key;
  std::string callback_url;
  std::string concurrency_key;
  bool at_least_once = false;
  bool in_memory = false;
  std::string delay;
  std::string at;
  uint32_t retries = 0;
  std::string retry_backoff;
  std::string start_deadline;
  std::string total_deadline;
  std::vector<std::string> after;
  std::string after_policy;
  bool after_results = false;
  bool wait = false;
  std::string wait_timeout;
};

// Prints the job as JSON; the exit code.
int PrintJobJson(Client& client, const std::string& id) {
  absl::StatusOr<v1::Job> job = client.GetJob(id);
  if (!job.ok()) return Fail(job.status());
  PrintJson(*job);
  return kExitOk;
}

// --delay, --at, --retries, --retry-backoff and the deadlines into `spec`;
// kExitOk, or the usage error's code.
int SetTiming(const SubmitArgs& a, v1::JobSpec& spec) {
  if (!a.delay.empty() && !a.at.empty()) {
    return Usage("--delay and --at: give one of them, not both");
  }
  if (!a.delay.empty()) {
    absl::Duration d;
    if (!absl::ParseDuration(a.delay, &d) || d <= absl::ZeroDuration() ||
        d == absl::InfiniteDuration()) {
      return Usage(fmt::format(
          "--delay: '{}' is not a positive duration like 10m or 1h30m",
          a.delay));
    }
    *spec.mutable_delay() = jobd::client::ToProtoDuration(d);
  }
  if (!a.at.empty()) {
    absl::Time t;
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, a.at, &t, &error)) {
      return Usage(
          fmt::format("--at: '{}' is not a time like 2027-01-01T09:00:00Z ({})",
                      a.at, error));
    }
    const int64_t ns = absl::ToUnixNanos(t);
    spec.mutable_not_before()->set_seconds(ns / 1000000000);
    spec.mutable_not_before()->set_nanos(static_cast<int32_t>(ns % 1000000000));
  }
  for (const std::string& id : a.after) spec.add_depends_on(id);
  if (a.after_policy == "all-ended") {
    spec.set_dependency_policy(v1::DEPENDENCY_POLICY_ALL_ENDED);
  } else if (a.after_policy == "all-succeeded") {
    spec.set_dependency_policy(v1::DEPENDENCY_POLICY_ALL_SUCCEEDED);
  } else if (!a.after_policy.empty()) {
    return Usage(
        fmt::format("--after-policy: '{}' is not all-succeeded or all-ended",
                    a.after_policy));
  }
  if (!a.after_policy.empty() && a.after.empty()) {
    return Usage("--after-policy: give the jobs with --after");
  }
  if (a.after_results && a.after.empty()) {
    return Usage("--after-results: give the jobs with --after");
  }
  spec.set_dependency_results(a.after_results);
  if (a.retries > 0) spec.mutable_retry()->set_max_attempts(a.retries + 1);
  if (!a.retry_backoff.empty()) {
    absl::Duration d;
    if (!absl::ParseDuration(a.retry_backoff, &d) || d < absl::ZeroDuration() ||
        d == absl::InfiniteDuration()) {
      return Usage(fmt::format("--retry-backoff: '{}' is not a duration",
                               a.retry_backoff));
    }
    *spec.mutable_retry()->mutable_initial_backoff() =
        jobd::client::ToProtoDuration(d);
  }
  for (auto [text, flag, field] :
       {std::tuple(&a.start_deadline, "--start-deadline",
                   &v1::JobSpec::mutable_start_deadline),
        std::tuple(&a.total_deadline, "--total-deadline",
                   &v1::JobSpec::mutable_total_deadline)}) {
    if (text->empty()) continue;
    absl::Duration d;
    if (!absl::ParseDuration(*text, &d) || d <= absl::ZeroDuration() ||
        d == absl::InfiniteDuration()) {
      return Usage(
          fmt::format("{}: '{}' is not a positive duration", flag, *text));
    }
    *(spec.*field)() = jobd::client::ToProtoDuration(d);
  }
  return kExitOk;
}

// The outcome of `future`'s job, whose Submit stream broke after jobd had
// accepted it: found again once jobd answers (within 30 s), then waited
// for until `wait_until`. A job jobd journaled survives the restart.
absl::StatusOr<JobOutcome> FollowAfterBreak(Client& client,
                                            const Future& future,
                                            absl::Time wait_until) {
  absl::StatusOr<std::string> id = future.job_id(absl::ZeroDuration());
  if (!id.ok()) return id.status();
  absl::StatusOr<v1::Job> job = client.FollowJob(
      *id, wait_until - absl::Now(), absl::Seconds(30), future.accepted_at());
  if (job.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(fmt::format(
        "the connection to jobd broke, and jobd no longer knows job {} (an "
        "in-memory job lost in a restart, or one forgotten since)",
        *id));
  }
  if (!job.ok()) return job.status();
  const v1::JobState state = job->state();
  if (state != v1::JOB_STATE_SUCCEEDED && state != v1::JOB_STATE_FAILED &&
      state != v1::JOB_STATE_CANCELLED) {
    return absl::DeadlineExceededError(fmt::format(
        "timed out waiting for job {} to end; it keeps going", *id));
  }
  if (state == v1::JOB_STATE_SUCCEEDED && job->result().dropped()) {
    return absl::DataLossError(fmt::format(
        "job {} succeeded while the stream was broken, but its result is "
        "larger than jobd retains (--max-retained-result-bytes)",
        *id));
  }
  JobOutcome outcome;
  outcome.job_id = *id;
  outcome.state = state;
  outcome.executor = job->executor();
  if (state == v1::JOB_STATE_SUCCEEDED) {
    outcome.result = job->result();
  } else {
    outcome.error = job->error();
  }
  return outcome;
}

int RunSubmit(const Globals& g, const SubmitArgs& a) {
  v1::JobSpec spec;
  spec.set_task(a.task);
  for (const std::string& arg : a.args) {
    *spec.add_args() = jobd::client::JsonOrString(arg);
  }
  for (const std::string& kv : a.kwargs) {
    const auto split = SplitKeyValue(kv);
    if (!split) return Usage(fmt::format("--kwarg: '{}' is not key=JSON", kv));
    (*spec.mutable_kwargs()->mutable_fields())[std::string(split->first)] =
        jobd::client::JsonOrString(split->second);
  }
  for (const std::string& kv : a.labels) {
    const auto split = SplitKeyValue(kv);
    if (!split) return Usage(fmt::format("--label: '{}' is not key=value", kv));
    (*spec.mutable_labels())[std::string(split->first)] =
        std::string(split->second);
  }
  if (!a.payload_file.empty()) {
    std::string data;
    if (a.payload_file == "-") {
      data.assign(std::istreambuf_iterator<char>(std::cin),
                  std::istreambuf_iterator<char>());
    } else {
      std::ifstream in(a.payload_file, std::ios::binary);
      if (!in) {
        return Usage(
            fmt::format("--payload-file: cannot read '{}'", a.payload_file));
      }
      data.assign(std::istreambuf_iterator<char>(in),
                  std::istreambuf_iterator<char>());
    }
    spec.set_payload(std::move(data));
  }
  auto routing = ParseRouting(a.kind, a.executor);
  if (!routing.ok()) return Usage(Msg(routing.status()));
  spec.set_kind(routing->first);
  spec.set_executor(routing->second);
  spec.set_priority(a.priority);
  auto timeout =
      ParseOptionalDuration(a.timeout, "--timeout", absl::InfiniteDuration());
  if (!timeout.ok()) return Usage(Msg(timeout.status()));
  if (*timeout != absl::InfiniteDuration()) {
    *spec.mutable_timeout() = jobd::client::ToProtoDuration(*timeout);
  }
  spec.set_idempotency_key(a.idempotency_key);
  spec.set_callback_url(a.callback_url);
  spec.set_concurrency_key(a.concurrency_key);
  if (a.at_least_once) spec.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  if (a.in_memory) spec.set_in_memory(true);
  if (const int code = SetTiming(a, spec); code != kExitOk) return code;
  const bool wait = a.wait || !a.wait_timeout.empty();
  auto wait_limit = ParseOptionalDuration(a.wait_timeout, "--wait-timeout",
                                          absl::InfiniteDuration());
  if (!wait_limit.ok()) return Usage(Msg(wait_limit.status()));
  const absl::Duration wait_timeout = *wait_limit;

  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  const absl::Time wait_until = absl::Now() + wait_timeout;
  Future future = client->Submit(std::move(spec));
  absl::StatusOr<std::string> id = future.job_id(client->options().rpc_timeout);
  if (!id.ok()) return Fail(id.status());
  if (!wait) {
    if (g.json) return PrintJobJson(*client, *id);
    fmt::print("{}\n", *id);
    return kExitOk;
  }
  absl::StatusOr<JobOutcome> outcome = future.Get(wait_timeout);
  if (!outcome.ok() &&
      outcome.status().code() == absl::StatusCode::kUnavailable) {
    // The stream broke after jobd had accepted the job (jobd stopped or
    // restarted): follow the job once jobd answers again.
    outcome = FollowAfterBreak(*client, future, wait_until);
  }
  if (!outcome.ok()) return Fail(outcome.status());
  if (g.json) {
    if (const int code = PrintJobJson(*client, *id); code != kExitOk) {
      return code;
    }
  } else if (outcome->ok()) {
    fmt::print("{}\n", ValueJson(outcome->result.value()));
  }
  if (!outcome->ok()) {
    PrintError(fmt::format("job {} {}: {}", outcome->job_id,
                           StateName(outcome->state),
                           ErrorText(outcome->error)));
    return kExitJobFailed;
  }
  return kExitOk;
}

}  // namespace

void AddSubmitCommand(CLI::App& app, CommandSet& commands) {
  auto submit = std::make_shared<SubmitArgs>();
  CLI::App* cmd = commands.Add(
      app, "submit",
      "Submit one job. Prints its id (--json: the job), or with --wait its "
      "result once it ends",
      [submit](const Globals& g) { return RunSubmit(g, *submit); });
  cmd->add_option("task", submit->task, "Task name (see: jobctl tasks)")
      ->required();
  cmd->add_option(
      "args", submit->args,
      "Positional arguments: each parsed as JSON if it parses, else taken "
      "as a string (use -- before arguments starting with '-')");
  cmd->add_option("-k,--kwarg", submit->kwargs,
                  "Keyword argument key=JSON (repeatable)");
  cmd->add_option("--payload-file", submit->payload_file,
                  "Read the job payload from a file ('-' = stdin)");
  AddRoutingOptions(cmd, &submit->kind, &submit->executor);
  cmd->add_option("--priority", submit->priority, "Higher runs first")
      ->capture_default_str();
  cmd->add_option("--timeout", submit->timeout,
                  "Run-time limit of the job (e.g. 30s)");
  cmd->add_option("--label", submit->labels, "Label key=value (repeatable)");
  cmd->add_option("--key", submit->concurrency_key,
                  "Concurrency key: the key's limits (jobctl limit) hold it "
                  "back; other jobs pass it");
  cmd->add_option("--idempotency-key", submit->idempotency_key,
                  "Retry-safe key: a repeat returns the same job");
  cmd->add_option("--callback-url", submit->callback_url,
                  "POST the job's end there (a URL under the daemon's "
                  "--callback-allowed-prefixes)");
  cmd->add_flag("--at-least-once", submit->at_least_once,
                "If jobd stops while the job runs, run it again at the "
                "next start (default: it fails LOST_ON_RESTART)");
  cmd->add_flag("--in-memory", submit->in_memory,
                "Keep the job out of the daemon's journal: its events wait "
                "for no disk write; a crash loses it");
  cmd->add_option("--delay", submit->delay,
                  "Run it this long from now (e.g. 10m); WAITING until then");
  cmd->add_option("--at", submit->at,
                  "Run it no earlier than this time (RFC 3339, e.g. "
                  "2027-01-01T09:00:00Z)");
  cmd->add_option("--retries", submit->retries,
                  "Run it again up to N times if it fails (task error, "
                  "timeout, worker crash, out of memory)");
  cmd->add_option("--retry-backoff", submit->retry_backoff,
                  "Backoff ceiling before the first retry (e.g. 1s); it "
                  "grows per attempt, with full jitter");
  cmd->add_option("--start-deadline", submit->start_deadline,
                  "Fail EXPIRED if not started this long after it is due");
  cmd->add_option("--total-deadline", submit->total_deadline,
                  "Fail DEADLINE_EXCEEDED if not ended this long after it "
                  "is due, all attempts together");
  cmd->add_option("--after", submit->after,
                  "Run after job ID has ended (repeatable; by default only "
                  "if all succeeded)");
  cmd->add_option("--after-policy", submit->after_policy,
                  "all-succeeded (default) or all-ended: when the jobs of "
                  "--after let this one run");
  cmd->add_flag("--after-results", submit->after_results,
                "Pass the results of the jobs of --after, as a list in their "
                "order, as the task's first argument");
  cmd->add_flag("-w,--wait", submit->wait,
                "Wait for the job to end and print its result");
  cmd->add_option("--wait-timeout", submit->wait_timeout,
                  "With --wait: give up after this long (exit 5)");
}

}  // namespace jobd::jobctl
