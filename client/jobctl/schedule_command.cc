// jobctl schedule: periodic schedules (README: Schedules).
//
//   schedule add ID (--cron EXPR [--tz ZONE] | --every DURATION) TASK [ARG...]
//   schedule ls | get ID | pause ID | resume ID | rm ID
//
// add takes the job options of submit (kwargs, labels, priority, timeout,
// kind, executor, at-least-once). See command.h for how it plugs in.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
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

struct AddArgs {
  std::string id;
  std::string cron, every, tz;
  std::string overlap = "skip";
  std::string catch_up = "skip";
  bool paused = false;
  std::string task;
  std::vector<std::string> args, kwargs, labels;
  std::string kind = "auto";
  std::string executor;
  int priority = 0;
  std::string timeout;
  bool at_least_once = false;
};

std::string OverlapName(v1::OverlapPolicy p) {
  switch (p) {
    case v1::OVERLAP_POLICY_QUEUE:
      return "queue";
    case v1::OVERLAP_POLICY_CANCEL_PREVIOUS:
      return "cancel";
    default:
      return "skip";
  }
}

std::string CatchUpName(v1::CatchUpPolicy p) {
  return p == v1::CATCH_UP_POLICY_RUN_ONCE ? "once" : "skip";
}

std::string When(const v1::ScheduleSpec& s) {
  if (!s.cron().empty()) {
    return s.time_zone().empty()
               ? s.cron()
               : fmt::format("{} ({})", s.cron(), s.time_zone());
  }
  return fmt::format(
      "every {}", FormatDurationShort(absl::Seconds(s.interval().seconds())));
}

void PrintSchedule(const v1::Schedule& s) {
  fmt::print("id:         {}\n", s.id());
  fmt::print("when:       {}\n", When(s.spec()));
  fmt::print("task:       {}\n", s.spec().job().task());
  fmt::print("overlap:    {}\n", OverlapName(s.spec().overlap()));
  fmt::print("catch-up:   {}\n", CatchUpName(s.spec().catch_up()));
  fmt::print("state:      {}{}\n", s.paused() ? "paused" : "active",
             s.from_config() ? " (config file)" : "");
  fmt::print("owner:      {}\n", s.owner());
  if (s.has_next_fire_time()) {
    fmt::print("next:       {}\n", FormatTime(s.next_fire_time()));
  }
  if (s.has_last_slot_time()) {
    fmt::print("last slot:  {}\n", FormatTime(s.last_slot_time()));
  }
  if (!s.last_job_id().empty()) {
    fmt::print("last job:   {}\n", s.last_job_id());
  }
  fmt::print("runs:       {} (skipped {}, missed {})\n", s.runs(), s.skipped(),
             s.missed());
  if (!s.last_error().empty()) {
    fmt::print("last error: {}\n", s.last_error());
  }
}

int RunAdd(const Globals& g, const AddArgs& a) {
  v1::ScheduleSpec spec;
  if (a.cron.empty() == a.every.empty()) {
    return Usage("schedule add: give exactly one of --cron and --every");
  }
  if (!a.cron.empty()) {
    spec.set_cron(a.cron);
    spec.set_time_zone(a.tz);
  } else {
    if (!a.tz.empty()) return Usage("--tz: only with --cron");
    auto every = ParseDurationArg(a.every, "--every");
    if (!every.ok()) return Usage(Msg(every.status()));
    if (*every < absl::Seconds(1) || *every == absl::InfiniteDuration() ||
        *every != absl::Seconds(absl::ToInt64Seconds(*every))) {
      return Usage(fmt::format(
          "--every: '{}' is not a whole number of seconds, at least 1s",
          a.every));
    }
    spec.mutable_interval()->set_seconds(absl::ToInt64Seconds(*every));
  }
  if (a.overlap == "skip") {
    spec.set_overlap(v1::OVERLAP_POLICY_SKIP);
  } else if (a.overlap == "queue") {
    spec.set_overlap(v1::OVERLAP_POLICY_QUEUE);
  } else if (a.overlap == "cancel") {
    spec.set_overlap(v1::OVERLAP_POLICY_CANCEL_PREVIOUS);
  } else {
    return Usage(
        fmt::format("--overlap: '{}' is not skip, queue or cancel", a.overlap));
  }
  if (a.catch_up == "skip") {
    spec.set_catch_up(v1::CATCH_UP_POLICY_SKIP_MISSED);
  } else if (a.catch_up == "once") {
    spec.set_catch_up(v1::CATCH_UP_POLICY_RUN_ONCE);
  } else {
    return Usage(
        fmt::format("--catch-up: '{}' is not skip or once", a.catch_up));
  }
  v1::JobSpec& job = *spec.mutable_job();
  job.set_task(a.task);
  for (const std::string& arg : a.args) {
    *job.add_args() = jobd::client::JsonOrString(arg);
  }
  for (const std::string& kv : a.kwargs) {
    const auto split = SplitKeyValue(kv);
    if (!split) return Usage(fmt::format("--kwarg: '{}' is not key=JSON", kv));
    (*job.mutable_kwargs()->mutable_fields())[std::string(split->first)] =
        jobd::client::JsonOrString(split->second);
  }
  for (const std::string& kv : a.labels) {
    const auto split = SplitKeyValue(kv);
    if (!split) return Usage(fmt::format("--label: '{}' is not key=value", kv));
    (*job.mutable_labels())[std::string(split->first)] =
        std::string(split->second);
  }
  auto routing = ParseRouting(a.kind, a.executor);
  if (!routing.ok()) return Usage(Msg(routing.status()));
  job.set_kind(routing->first);
  job.set_executor(routing->second);
  job.set_priority(a.priority);
  auto timeout =
      ParseOptionalDuration(a.timeout, "--timeout", absl::InfiniteDuration());
  if (!timeout.ok()) return Usage(Msg(timeout.status()));
  if (*timeout != absl::InfiniteDuration()) {
    *job.mutable_timeout() = jobd::client::ToProtoDuration(*timeout);
  }
  if (a.at_least_once) job.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);

  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  auto created = client->CreateSchedule(a.id, spec, a.paused);
  if (!created.ok()) return Fail(created.status());
  if (g.json) {
    PrintJson(*created);
  } else {
    const v1::Schedule& s = created->schedule();
    fmt::print(
        "schedule '{}' {}{}\n", s.id(),
        created->existed() ? "exists already (same spec)" : "created",
        s.has_next_fire_time()
            ? fmt::format(", next run {}", FormatTime(s.next_fire_time()))
            : std::string(s.paused() ? ", paused" : ""));
  }
  return kExitOk;
}

int RunList(const Globals& g) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  auto list = client->ListSchedules();
  if (!list.ok()) return Fail(list.status());
  if (g.json) {
    for (const v1::Schedule& s : *list) PrintJson(s);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "WHEN", "TASK", "STATE", "NEXT", "RUNS", "LAST JOB"});
  for (const v1::Schedule& s : *list) {
    rows.push_back(
        {s.id(), When(s.spec()), s.spec().job().task(),
         s.paused() ? "paused" : "active",
         s.has_next_fire_time() ? FormatTime(s.next_fire_time()) : "-",
         std::to_string(s.runs()),
         s.last_job_id().empty() ? "-" : s.last_job_id()});
  }
  PrintTable(rows);
  return kExitOk;
}

int RunGet(const Globals& g, const std::string& id) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  auto s = client->GetSchedule(id);
  if (!s.ok()) return Fail(s.status());
  if (g.json) {
    PrintJson(*s);
  } else {
    PrintSchedule(*s);
  }
  return kExitOk;
}

int RunPause(const Globals& g, const std::string& id, bool paused) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  auto s = client->PauseSchedule(id, paused);
  if (!s.ok()) return Fail(s.status());
  if (g.json) {
    PrintJson(*s);
  } else {
    fmt::print(
        "schedule '{}' {}{}\n", id, paused ? "paused" : "resumed",
        s->has_next_fire_time()
            ? fmt::format(", next run {}", FormatTime(s->next_fire_time()))
            : "");
  }
  return kExitOk;
}

int RunRemove(const Globals& g, const std::string& id) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  auto existed = client->DeleteSchedule(id);
  if (!existed.ok()) return Fail(existed.status());
  if (g.json) {
    v1::DeleteScheduleResponse response;
    response.set_existed(*existed);
    PrintJson(response);
  } else {
    fmt::print("schedule '{}' {}\n", id,
               *existed ? "deleted" : "did not exist");
  }
  return kExitOk;
}

}  // namespace

void AddScheduleCommand(CLI::App& app, CommandSet& commands) {
  CLI::App* schedule = app.add_subcommand("schedule",
                                          "Periodic schedules: add, ls, get, "
                                          "pause, resume, rm");
  schedule->require_subcommand(1);
  auto a = std::make_shared<AddArgs>();
  CLI::App* add = commands.Add(
      *schedule, "add",
      "Create a schedule: a cron expression or an interval, and a job",
      [a](const Globals& g) { return RunAdd(g, *a); });
  add->add_option("id", a->id, "Schedule id (letters, digits, . _ -)")
      ->required();
  add->add_option("task", a->task, "Task name (see: jobctl tasks)")->required();
  add->add_option("args", a->args, "Positional arguments (JSON or string)");
  add->add_option("--cron", a->cron,
                  "Cron expression: 5 fields, or 6 with the second first");
  add->add_option("--tz", a->tz, "Time zone of --cron (default UTC)");
  add->add_option("--every", a->every,
                  "Fixed interval instead of --cron (e.g. 30s, 5m, 1h)");
  add->add_option("--overlap", a->overlap,
                  "While the previous run is live: skip, queue or cancel "
                  "(default skip)");
  add->add_option("--catch-up", a->catch_up,
                  "Slots missed while jobd was down: skip, or once (one "
                  "run) (default skip)");
  add->add_flag("--paused", a->paused, "Create it paused");
  add->add_option("-k,--kwarg", a->kwargs,
                  "Keyword argument key=JSON (repeatable)");
  add->add_option("--label", a->labels, "Label key=value (repeatable)");
  AddRoutingOptions(add, &a->kind, &a->executor);
  add->add_option("--priority", a->priority, "Higher runs first");
  add->add_option("--timeout", a->timeout, "Run-time limit of each run");
  add->add_flag("--at-least-once", a->at_least_once,
                "Run again after a restart that interrupted it");
  commands.Add(*schedule, "ls", "List schedules", RunList);
  auto id = std::make_shared<std::string>();
  commands
      .Add(*schedule, "get", "Show one schedule",
           [id](const Globals& g) { return RunGet(g, *id); })
      ->add_option("id", *id, "Schedule id")
      ->required();
  commands
      .Add(*schedule, "pause", "Pause a schedule (no run until resumed)",
           [id](const Globals& g) { return RunPause(g, *id, true); })
      ->add_option("id", *id, "Schedule id")
      ->required();
  commands
      .Add(*schedule, "resume", "Resume a schedule from its next slot",
           [id](const Globals& g) { return RunPause(g, *id, false); })
      ->add_option("id", *id, "Schedule id")
      ->required();
  commands
      .Add(*schedule, "rm", "Delete a schedule (its runs stay)",
           [id](const Globals& g) { return RunRemove(g, *id); })
      ->add_option("id", *id, "Schedule id")
      ->required();
}

}  // namespace jobd::jobctl
