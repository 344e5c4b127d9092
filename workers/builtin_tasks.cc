#include "workers/builtin_tasks.h"

#include <algorithm>
#include <csignal>

#include "absl/strings/str_cat.h"

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

absl::StatusOr<TaskOutput> Crash(TaskContext& ctx) {
  std::raise(SIGSEGV);
  return absl::InternalError("SIGSEGV was not delivered");
}

TaskParam Param(std::string name, ParamType type, std::string help) {
  TaskParam p;
  p.name = std::move(name);
  p.type = type;
  p.help = std::move(help);
  return p;
}

TaskParam OptionalParam(std::string name, ParamType type, Value def,
                        std::string help) {
  TaskParam p = Param(std::move(name), type, std::move(help));
  p.required = false;
  p.default_value = std::move(def);
  return p;
}

Value StringValue(std::string s) {
  Value v;
  v.set_string_value(std::move(s));
  return v;
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
                  .run = Echo});
  defs.push_back(
      {.name = "sleep",
       .description = "Sleeps for `ms` milliseconds; returns ms. "
                      "Ends early when cancelled.",
       .default_kind = v1::JOB_KIND_IO_BOUND,
       .params = {Param("ms", ParamType::kInt, "milliseconds to sleep, >= 0")},
       .run = Sleep});
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
  if (options.testing_tasks) {
    defs.push_back({.name = "crash",
                    .description = "Raises SIGSEGV (testing only).",
                    .default_kind = v1::JOB_KIND_CPU_BOUND,
                    .needs_isolation = true,
                    .run = Crash});
  }
  for (TaskDef& def : defs) {
    absl::Status s = registry.Add(std::move(def));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace jobd
