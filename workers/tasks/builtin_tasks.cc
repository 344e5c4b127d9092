#include "workers/tasks/builtin_tasks.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "workers/sdk/async_task.h"

extern char** environ;

namespace jobd {
namespace {

using google::protobuf::Value;

absl::StatusOr<TaskOutput> Echo(TaskContext& ctx) {
  const TaskArgs& a = ctx.args();
  TaskOutput out;
  out.payload = a.payload();
  if (a.kwargs().fields().empty()) {
    if (a.args().size() == 1) {
      out.value = a.args()[0];
    } else if (a.args().size() > 1) {
      *out.value.mutable_list_value()->mutable_values() = a.args();
    } else {
      out.value.set_null_value(google::protobuf::NULL_VALUE);
    }
    return out;
  }
  auto& fields = *out.value.mutable_struct_value()->mutable_fields();
  *fields["args"].mutable_list_value()->mutable_values() = a.args();
  *fields["kwargs"].mutable_struct_value() = a.kwargs();
  return out;
}

absl::StatusOr<TaskOutput> Sleep(TaskContext& ctx) {
  const int64_t ms = ctx.args().Int("ms");
  if (ms < 0) {
    return absl::InvalidArgumentError("ms: must be >= 0");
  }
  const absl::Duration total = absl::Milliseconds(ms);
  const absl::Time start = absl::Now();
  if (!ctx.SleepFor(total)) {
    return absl::CancelledError(
        absl::StrCat("sleep interrupted after ",
                     absl::ToInt64Milliseconds(absl::Now() - start), " ms"));
  }
  TaskOutput out;
  out.value.set_number_value(static_cast<double>(ms));
  return out;
}

absl::StatusOr<TaskOutput> PrimesCount(TaskContext& ctx) {
  const int64_t n = ctx.args().Int("n");
  if (n < 0) return absl::InvalidArgumentError("n: must be >= 0");
  int64_t count = 0;
  // Report progress in ~10 steps for big inputs, polling cancel as we go.
  const int64_t step = std::max<int64_t>(n / 10, 100000);
  for (int64_t lo = 0; lo < n; lo += step) {
    const int64_t hi = std::min(n, lo + step);
    count += CountPrimesInRange(lo, hi);
    if (ctx.cancelled()) return absl::CancelledError("primes.count cancelled");
    if (hi < n) ctx.ReportProgress(static_cast<double>(hi) / n, "");
  }
  TaskOutput out;
  out.value.set_number_value(static_cast<double>(count));
  return out;
}

absl::StatusOr<TaskOutput> Fail(TaskContext& ctx) {
  return absl::UnknownError(ctx.args().String("message"));
}

// Writes `lines` log lines to the job's output (TaskContext::Log).
template <typename Context>
absl::StatusOr<TaskOutput> LogLines(Context& ctx) {
  const int64_t n = ctx.args().Int("lines");
  for (int64_t i = 1; i <= n; ++i) {
    ctx.Log(absl::StrCat("log line ", i, " of ", n));
  }
  TaskOutput out;
  out.value = NumberValue(static_cast<double>(n));
  return out;
}

// Recurses until the stack overflows (each frame keeps 4 KiB alive); the
// bound only hides the intent from the compiler.
[[gnu::noinline]] int64_t Deeper(int64_t depth) {
  volatile char frame[4096];
  frame[0] = static_cast<char>(depth);
  if (depth == INT64_MAX) return frame[0];
  return Deeper(depth + 1) + frame[0];
}

// Kills (or wedges) the process running it, in the way `how` names.
absl::StatusOr<TaskOutput> Crash(TaskContext& ctx) {
  const std::string& how = ctx.args().String("how");
  if (how == "segv") {
    std::raise(SIGSEGV);
  } else if (how == "abort") {
    std::abort();
  } else if (how == "stack") {
    Deeper(0);
  } else if (how == "exit") {
    std::_Exit(static_cast<int>(ctx.args().Int("code")));
  } else if (how == "oom") {
    // Allocates and touches `mb` MiB, 1 MiB at a time, then holds it
    // `hold_ms`: trips an address-space rlimit (bad_alloc) or the RSS limit.
    std::vector<std::unique_ptr<char[]>> blocks;
    for (int64_t i = 0; i < ctx.args().Int("mb"); ++i) {
      blocks.emplace_back(new char[1 << 20]);
      std::memset(blocks.back().get(), 1, 1 << 20);
    }
    ctx.SleepFor(absl::Milliseconds(ctx.args().Int("hold_ms")));
    TaskOutput out;
    out.value.set_number_value(static_cast<double>(blocks.size()));
    return out;
  } else if (how == "hang" || how == "hang_ignore_term") {
    if (how == "hang_ignore_term") std::signal(SIGTERM, SIG_IGN);
    for (;;) {  // Ignores cancellation.
      asm volatile("" ::: "memory");
    }
  } else if (how == "corrupt_frame" || how == "huge_frame") {
    // Writes garbage onto the worker's socket to the daemon (fd 3).
    const unsigned char bad[] = {8,    0,    0,    0,    0xff, 0xff,
                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const unsigned char huge[] = {0xff, 0xff, 0xff, 0x7f};
    const bool corrupt = how == "corrupt_frame";
    (void)!write(3, corrupt ? bad : huge, corrupt ? sizeof(bad) : sizeof(huge));
    ctx.SleepFor(absl::Seconds(10));
  } else {
    return absl::InvalidArgumentError(
        "how: one of segv, abort, stack, exit, oom, hang, hang_ignore_term, "
        "corrupt_frame, huge_frame");
  }
  return absl::InternalError("the crash did not happen");
}

// What a task can see of the process it runs in (testing the sandbox):
// {uid, gid, no_new_privs, env: [names], fds: [open fds]}.
absl::StatusOr<TaskOutput> Inspect(TaskContext& ctx) {
  // System calls, not /proc: after a switch of user /proc/self belongs to
  // root and the worker cannot read it.
  TaskOutput out;
  auto& f = *out.value.mutable_struct_value()->mutable_fields();
  f["uid"].set_number_value(getuid());
  f["gid"].set_number_value(getgid());
  f["no_new_privs"].set_bool_value(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
  auto& env = *f["env"].mutable_list_value();
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var(*e);
    env.add_values()->set_string_value(var.substr(0, var.find('=')));
  }
  auto& fds = *f["fds"].mutable_list_value();
  for (int fd = 0; fd < 4096; ++fd) {
    if (fcntl(fd, F_GETFD) != -1) fds.add_values()->set_number_value(fd);
  }
  return out;
}

// Keeps the CPU busy for `ms` milliseconds (polling cancel); registered as
// IO-bound on purpose, so AUTO routing has something to correct.
absl::StatusOr<TaskOutput> Burn(TaskContext& ctx) {
  const absl::Time end = absl::Now() + absl::Milliseconds(ctx.args().Int("ms"));
  uint64_t spins = 0;
  while (absl::Now() < end) {
    for (int i = 0; i < 1000; ++i) asm volatile("" ::: "memory");
    ++spins;
    if (ctx.cancelled()) return absl::CancelledError("burn cancelled");
  }
  TaskOutput out;
  out.value.set_number_value(static_cast<double>(spins));
  return out;
}

// Opens /dev/null until `n` descriptors are open or none is left, holds
// them `ms` (or until cancelled), closes them and returns how many it held.
// Appends `line` to the file at `path` (one write, O_APPEND), then sleeps
// `ms`: a ledger of the runs that began, for tests that count them.
absl::StatusOr<TaskOutput> Ledger(TaskContext& ctx) {
  const std::string line = ctx.args().String("line") + "\n";
  const int fd = open(ctx.args().String("path").c_str(),
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("path: cannot open: ", std::strerror(errno)));
  }
  const ssize_t n = write(fd, line.data(), line.size());
  close(fd);
  if (n != static_cast<ssize_t>(line.size())) {
    return absl::InternalError("path: short write");
  }
  const int64_t ms = std::max<int64_t>(0, ctx.args().Int("ms"));
  const absl::Duration half = absl::Milliseconds(ms) / 2;
  if (!ctx.SleepFor(half)) {
    return absl::CancelledError("ledger: cancelled while sleeping");
  }
  if (ms > 0) ctx.ReportProgress(0.5, "halfway");
  if (!ctx.SleepFor(absl::Milliseconds(ms) - half)) {
    return absl::CancelledError("ledger: cancelled while sleeping");
  }
  TaskOutput out;
  out.value.set_string_value(ctx.args().String("line"));
  return out;
}

absl::StatusOr<TaskOutput> HoldFds(TaskContext& ctx) {
  std::vector<int> fds;
  for (int64_t i = 0; i < ctx.args().Int("n"); ++i) {
    const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  ctx.SleepFor(absl::Milliseconds(ctx.args().Int("ms")));
  for (int fd : fds) close(fd);
  TaskOutput out;
  out.value.set_number_value(static_cast<double>(fds.size()));
  return out;
}

}  // namespace

int64_t CountPrimesInRange(int64_t lo, int64_t hi) {
  int64_t count = 0;
  for (int64_t i = std::max<int64_t>(lo, 2); i < hi; ++i) {
    bool prime = true;
    for (int64_t d = 2; d * d <= i; ++d) {
      if (i % d == 0) {
        prime = false;
        break;
      }
    }
    if (prime) ++count;
  }
  return count;
}

absl::Status RegisterBuiltinTasks(TaskRegistry& registry,
                                  const BuiltinTaskOptions& options) {
  std::vector<TaskDef> defs;
  defs.push_back({.name = "echo",
                  .description = "Returns its input: the single argument, a "
                                 "list of several, or {args, kwargs}; the "
                                 "payload comes back as the result payload.",
                  .default_kind = v1::JOB_KIND_IO_BOUND,
                  .variadic = true,
                  .trivial = true,
                  .run = Echo});
  defs.push_back(
      {.name = "sleep",
       .description = "Sleeps for `ms` milliseconds; returns ms. "
                      "Ends early when cancelled.",
       .default_kind = v1::JOB_KIND_IO_BOUND,
       .params = {Param("ms", ParamType::kInt, "milliseconds to sleep, >= 0")},
       .run = Sleep,
       .async = AsyncSleep(),
       .validate = [](const TaskArgs& args) {
         return args.Int("ms") >= 0
                    ? absl::OkStatus()
                    : absl::InvalidArgumentError("ms: must be >= 0");
       }});
  defs.push_back({.name = "primes.count",
                  .description = "Counts the primes below `n` by trial "
                                 "division (CPU-bound).",
                  .default_kind = v1::JOB_KIND_CPU_BOUND,
                  .params = {Param("n", ParamType::kInt, "upper bound, >= 0")},
                  .run = PrimesCount});
  defs.push_back({.name = "fail",
                  .description = "Fails with the given message (TASK_ERROR).",
                  .default_kind = v1::JOB_KIND_IO_BOUND,
                  .params = {OptionalParam("message", ParamType::kString,
                                           StringValue("requested failure"),
                                           "the error message")},
                  .run = Fail});
  defs.push_back(HttpGetTask(options.max_message_bytes, options.http));
  defs.push_back(ExecTask(options.exec != nullptr
                              ? options.exec
                              : std::make_shared<const ExecPolicy>(),
                          options.exec_sandbox, options.max_message_bytes));
  if (options.testing_tasks) {
    defs.push_back(
        {.name = "crash",
         .description =
             "Kills its worker process (testing only): how = segv, abort, "
             "stack (overflow), exit (with `code`), oom (allocates `mb` MiB, "
             "holds `hold_ms`), "
             "hang (busy loop ignoring cancel), hang_ignore_term (also "
             "ignoring SIGTERM), corrupt_frame, huge_frame.",
         .default_kind = v1::JOB_KIND_CPU_BOUND,
         .params = {OptionalParam("how", ParamType::kString,
                                  StringValue("segv"), "how to die"),
                    OptionalParam("code", ParamType::kInt, NumberValue(3),
                                  "exit code for how=exit"),
                    OptionalParam("mb", ParamType::kInt, NumberValue(1024),
                                  "MiB to allocate for how=oom"),
                    OptionalParam("hold_ms", ParamType::kInt, NumberValue(0),
                                  "ms to hold the memory for how=oom")},
         .needs_isolation = true,
         .run = Crash});
    defs.push_back({.name = "inspect",
                    .description = "Returns what the task sees of its process: "
                                   "uid, gid, no_new_privs, environment "
                                   "names, open fds (testing only).",
                    .default_kind = v1::JOB_KIND_CPU_BOUND,
                    .run = Inspect});
    defs.push_back({.name = "burn",
                    .description = "Keeps a CPU busy for `ms` milliseconds "
                                   "(testing only; mis-tagged IO-bound so "
                                   "AUTO routing must correct it).",
                    .default_kind = v1::JOB_KIND_IO_BOUND,
                    .params = {Param("ms", ParamType::kInt, "milliseconds")},
                    .run = Burn});
    defs.push_back(
        {.name = "log",
         .description = "Writes `lines` log lines to the job's output "
                        "(testing only; sync and async forms).",
         .default_kind = v1::JOB_KIND_IO_BOUND,
         .params = {Param("lines", ParamType::kInt, "lines to write")},
         .run = LogLines<TaskContext>,
         .async = MakeTimerTask(
             {.delay = [](const TaskArgs&) -> absl::StatusOr<absl::Duration> {
                return absl::ZeroDuration();
              },
              .then = LogLines<AsyncTaskContext>})});
    defs.push_back(
        {.name = "hold_fds",
         .description = "Opens up to `n` file descriptors (all that are "
                        "left, by default) in the process it runs in and "
                        "holds them `ms` milliseconds (testing only: run it "
                        "on the thread pool to starve jobd of descriptors).",
         .default_kind = v1::JOB_KIND_IO_BOUND,
         .params = {Param("ms", ParamType::kInt, "milliseconds"),
                    OptionalParam("n", ParamType::kInt, NumberValue(1 << 20),
                                  "descriptors to open at most")},
         .run = HoldFds});
    defs.push_back(
        {.name = "ledger",
         .description = "Appends `line` to the file `path`, then sleeps "
                        "`ms` milliseconds (reporting progress 0.5 "
                        "halfway); returns line (testing only: a record of "
                        "the runs that began).",
         .default_kind = v1::JOB_KIND_IO_BOUND,
         .params = {Param("path", ParamType::kString, "the ledger file"),
                    Param("line", ParamType::kString, "the line to append"),
                    OptionalParam("ms", ParamType::kInt, NumberValue(0),
                                  "milliseconds to sleep after")},
         .run = Ledger});
  }
  for (TaskDef& def : defs) {
    absl::Status s = registry.Add(std::move(def));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace jobd
