#include "server/frontend/spec_validator.h"

#include <algorithm>
#include <optional>
#include <string>

#include "server/callbacks/callback_url.h"
#include "server/frontend/call_batch.h"
#include "server/jobs/dependency_results.h"
#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "server/scheduler/key_limits.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

int Depth(const google::protobuf::Value& v, int limit);

int Depth(
    const google::protobuf::RepeatedPtrField<google::protobuf::Value>& list,
    int limit) {
  int d = 0;
  for (const auto& v : list) {
    d = std::max(d, Depth(v, limit));
    if (d > limit) break;
  }
  return d;
}

int Depth(const google::protobuf::Struct& s, int limit) {
  int d = 0;
  for (const auto& [k, v] : s.fields()) {
    d = std::max(d, Depth(v, limit));
    if (d > limit) break;
  }
  return d;
}

int Depth(const google::protobuf::Value& v, int limit) {
  if (limit < 0) return 1;
  if (v.has_list_value()) return 1 + Depth(v.list_value().values(), limit - 1);
  if (v.has_struct_value()) return 1 + Depth(v.struct_value(), limit - 1);
  return 0;
}

std::string Format(absl::Duration d) { return absl::FormatDuration(d); }

bool IsZero(const google::protobuf::Duration& d) {
  return d.seconds() == 0 && d.nanos() == 0;
}

// A positive duration, or an error naming `field`.
absl::Status ValidatePositive(const google::protobuf::Duration& d,
                              const char* field, const char* unset) {
  absl::Status s = ValidateDuration(d, field);
  if (!s.ok()) return s;
  if (IsZero(d)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: must be positive (leave it unset for {})", field, unset));
  }
  return absl::OkStatus();
}

// Delays, not_before, deadlines and the retry policy (completed from the
// defaults).
absl::Status ValidateTiming(v1::JobSpec& spec, const SpecLimits& limits,
                            absl::Time now, absl::Time rpc_deadline) {
  if (spec.has_delay() && spec.has_not_before()) {
    return absl::InvalidArgumentError(
        "spec.delay: set either delay or not_before, not both");
  }
  if (spec.has_delay()) {
    absl::Status s = ValidatePositive(spec.delay(), "spec.delay", "no delay");
    if (!s.ok()) return s;
    if (FromProto(spec.delay()) > limits.max_delay) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.delay: {} is more than the limit of {} (max-delay)",
          Format(FromProto(spec.delay())), Format(limits.max_delay)));
    }
  }
  if (spec.has_not_before()) {
    absl::Status s = ValidateTimestamp(spec.not_before(), "spec.not_before");
    if (!s.ok()) return s;
    const absl::Time at = FromProtoTime(spec.not_before());
    if (at - now > limits.max_delay) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.not_before: {} is more than {} (max-delay) from now",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", at, absl::UTCTimeZone()),
          Format(limits.max_delay)));
    }
  }
  if (spec.has_start_deadline()) {
    absl::Status s = ValidatePositive(spec.start_deadline(),
                                      "spec.start_deadline", "no deadline");
    if (!s.ok()) return s;
  } else if (rpc_deadline != absl::InfiniteFuture() && !spec.has_delay() &&
             spec.depends_on_size() == 0 &&
             !(spec.has_not_before() &&
               FromProtoTime(spec.not_before()) > now)) {
    // Due at once: the caller's deadline is its schedule-to-start.
    *spec.mutable_start_deadline() =
        ToProtoDuration(std::max(absl::Milliseconds(1), rpc_deadline - now));
  }
  if (spec.has_total_deadline()) {
    absl::Status s = ValidatePositive(spec.total_deadline(),
                                      "spec.total_deadline", "no deadline");
    if (!s.ok()) return s;
  }
  // The retry policy: the spec's fields over the task's and the daemon's.
  // A policy of the job's own is built only if the task or the spec changes
  // the daemon's defaults; else the defaults are checked as they are (not
  // copied per job, to be dropped again for the usual job that asks
  // nothing).
  uint32_t attempts = limits.default_retry.max_attempts();
  if (auto it = limits.task_retries.find(spec.task());
      it != limits.task_retries.end()) {
    attempts = it->second;
  }
  std::optional<v1::RetryPolicy> own;
  if (spec.has_retry() || attempts != limits.default_retry.max_attempts()) {
    own = limits.default_retry;
    own->set_max_attempts(attempts);
  }
  if (spec.has_retry()) {
    v1::RetryPolicy& policy = *own;
    const v1::RetryPolicy& asked = spec.retry();
    if (asked.max_attempts() != 0) {
      policy.set_max_attempts(asked.max_attempts());
    }
    if (!asked.retry_on().empty()) {
      *policy.mutable_retry_on() = asked.retry_on();
    }
    if (asked.has_initial_backoff()) {
      absl::Status s = ValidateDuration(asked.initial_backoff(),
                                        "spec.retry.initial_backoff");
      if (!s.ok()) return s;
      *policy.mutable_initial_backoff() = asked.initial_backoff();
    }
    if (asked.has_max_backoff()) {
      absl::Status s =
          ValidateDuration(asked.max_backoff(), "spec.retry.max_backoff");
      if (!s.ok()) return s;
      *policy.mutable_max_backoff() = asked.max_backoff();
    }
    if (asked.backoff_multiplier() != 0) {
      if (!(asked.backoff_multiplier() >= 1.0 &&
            asked.backoff_multiplier() <= 1000.0)) {
        return absl::InvalidArgumentError(
            fmt::format("spec.retry.backoff_multiplier: {}; must be between "
                        "1 and 1000 (0 = the default)",
                        asked.backoff_multiplier()));
      }
      policy.set_backoff_multiplier(asked.backoff_multiplier());
    }
  }
  const v1::RetryPolicy& policy = own ? *own : limits.default_retry;
  if (policy.max_attempts() > limits.max_attempts_limit) {
    return absl::InvalidArgumentError(
        fmt::format("spec.retry.max_attempts: {} is more than the limit of {} "
                    "(retry-max-attempts-limit)",
                    policy.max_attempts(), limits.max_attempts_limit));
  }
  for (int i = 0; i < policy.retry_on_size(); ++i) {
    const int reason = policy.retry_on(i);
    if (reason != v1::ERROR_REASON_TASK_ERROR &&
        reason != v1::ERROR_REASON_TIMEOUT &&
        reason != v1::ERROR_REASON_WORKER_CRASHED &&
        reason != v1::ERROR_REASON_OUT_OF_MEMORY) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.retry.retry_on[{}]: {} is never retried (only "
          "ERROR_REASON_TASK_ERROR, _TIMEOUT, _WORKER_CRASHED and "
          "_OUT_OF_MEMORY are)",
          i,
          v1::ErrorReason_IsValid(reason)
              ? v1::ErrorReason_Name(static_cast<v1::ErrorReason>(reason))
              : std::to_string(reason)));
    }
  }
  const absl::Duration initial = FromProto(policy.initial_backoff());
  const absl::Duration cap = FromProto(policy.max_backoff());
  if (cap < initial) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.retry.max_backoff: {} is less than initial_backoff ({})",
        Format(cap), Format(initial)));
  }
  if (cap > limits.max_delay) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.retry.max_backoff: {} is more than the limit of {} (max-delay)",
        Format(cap), Format(limits.max_delay)));
  }
  // Kept only when it retries: a job without retries stays as small.
  if (policy.max_attempts() > 1) {
    *spec.mutable_retry() = own ? *std::move(own) : policy;
  } else {
    spec.clear_retry();
  }
  return absl::OkStatus();
}

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool AllZeros(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == '0'; });
}

}  // namespace

v1::RetryPolicy SpecLimits::DefaultRetryPolicy() {
  v1::RetryPolicy p;
  p.set_max_attempts(1);
  *p.mutable_initial_backoff() = ToProtoDuration(absl::Seconds(1));
  p.set_backoff_multiplier(2.0);
  *p.mutable_max_backoff() = ToProtoDuration(absl::Minutes(5));
  return p;
}

bool IsValidTraceparent(std::string_view v) {
  constexpr size_t kLength = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2.
  if (v.size() < kLength || v.size() > 256) return false;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  const std::string_view version = v.substr(0, 2);
  const std::string_view trace_id = v.substr(3, 32);
  const std::string_view parent_id = v.substr(36, 16);
  const std::string_view flags = v.substr(53, 2);
  if (!IsLowerHex(version) || !IsLowerHex(trace_id) || !IsLowerHex(parent_id) ||
      !IsLowerHex(flags)) {
    return false;
  }
  if (version == "ff" || AllZeros(trace_id) || AllZeros(parent_id)) {
    return false;
  }
  if (version == "00") return v.size() == kLength;
  return v.size() == kLength || v[kLength] == '-';
}

absl::StatusOr<NewJob> ValidateSpec(v1::JobSpec spec,
                                    const TaskRegistry& registry,
                                    const SpecLimits& limits, absl::Time now,
                                    absl::Time rpc_deadline) {
  if (spec.task().empty()) {
    return absl::InvalidArgumentError("spec.task: missing task name");
  }
  const TaskDef* task = registry.Find(spec.task());
  if (task == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("spec.task: unknown task '{}' (see ListTasks / jobctl "
                    "tasks)",
                    ClipUtf8(spec.task(), 128)));
  }
  if (spec.kind() == v1::JOB_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "spec.kind: JOB_KIND_UNSPECIFIED; set JOB_KIND_CPU_BOUND, "
        "JOB_KIND_IO_BOUND or JOB_KIND_AUTO");
  }
  if (!v1::JobKind_IsValid(spec.kind())) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.kind: unknown value {}", static_cast<int>(spec.kind())));
  }
  if (!v1::Executor_IsValid(spec.executor())) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.executor: unknown value {}", static_cast<int>(spec.executor())));
  }
  if (!v1::Delivery_IsValid(spec.delivery())) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.delivery: unknown value {}", static_cast<int>(spec.delivery())));
  }
  if (spec.in_memory()) {
    if (!limits.allow_in_memory) {
      return absl::InvalidArgumentError(
          "spec.in_memory: this jobd journals every job (started with "
          "--in-memory-jobs forbid)");
    }
    if (spec.delivery() == v1::DELIVERY_AT_LEAST_ONCE) {
      return absl::InvalidArgumentError(
          "spec.in_memory: an in-memory job cannot be "
          "DELIVERY_AT_LEAST_ONCE (nothing of it survives a restart to run "
          "it again)");
    }
  }
  if (spec.has_timeout()) {
    absl::Status s = ValidateDuration(spec.timeout(), "spec.timeout");
    if (!s.ok()) return s;
    if (spec.timeout().seconds() == 0 && spec.timeout().nanos() == 0) {
      return absl::InvalidArgumentError(
          "spec.timeout: must be positive (leave it unset for no timeout)");
    }
  }
  if (absl::Status s = ValidateTiming(spec, limits, now, rpc_deadline);
      !s.ok()) {
    return s;
  }
  // A task's own limit (a command task's `timeout`) caps the job's.
  if (task->max_timeout > absl::ZeroDuration() &&
      (!spec.has_timeout() || FromProto(spec.timeout()) > task->max_timeout)) {
    *spec.mutable_timeout() = ToProtoDuration(task->max_timeout);
  }
  if (spec.payload().size() > limits.max_payload_bytes) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.payload: {} bytes; the limit is {} (max_payload_bytes)",
        spec.payload().size(), limits.max_payload_bytes));
  }
  if (!spec.callback_url().empty()) {
    absl::Status s = callbacks::CheckCallbackUrl(
        spec.callback_url(), limits.callback_allowed_prefixes);
    if (!s.ok()) return s;
  }
  if (static_cast<size_t>(spec.labels_size()) > limits.max_labels) {
    return absl::InvalidArgumentError(
        fmt::format("spec.labels: {} labels; the limit is {}",
                    spec.labels_size(), limits.max_labels));
  }
  for (const auto& [k, v] : spec.labels()) {
    if (k.size() > limits.max_label_bytes ||
        v.size() > limits.max_label_bytes) {
      return absl::InvalidArgumentError(
          fmt::format("spec.labels[{}]: key or value longer than {} bytes",
                      ClipUtf8(k, 64), limits.max_label_bytes));
    }
  }
  if (spec.idempotency_key().size() > limits.max_idempotency_key_bytes) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.idempotency_key: {} bytes; the limit is {}",
        spec.idempotency_key().size(), limits.max_idempotency_key_bytes));
  }
  if (!spec.traceparent().empty() && !IsValidTraceparent(spec.traceparent())) {
    return absl::InvalidArgumentError(
        "spec.traceparent: not a W3C traceparent "
        "(00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>, lowercase, "
        "ids not all zeros)");
  }
  if (absl::Status key =
          ValidateKey(spec.concurrency_key(), "spec.concurrency_key");
      !key.ok()) {
    return key;
  }
  if (static_cast<size_t>(spec.depends_on_size()) > limits.max_dependencies) {
    return absl::InvalidArgumentError(
        fmt::format("spec.depends_on: {} dependencies; the limit is {} "
                    "(max-dependencies)",
                    spec.depends_on_size(), limits.max_dependencies));
  }
  for (int i = 0; i < spec.depends_on_size(); ++i) {
    const std::string field = fmt::format("spec.depends_on[{}]", i);
    absl::StatusOr<JobRef> ref = ParseJobRef(spec.depends_on(i), field);
    if (!ref.ok()) return ref.status();
    if (ref->here()) {
      // Kept as a bare number: the node's name may change, or cluster
      // mode be turned off, before a restart reads it back.
      spec.set_depends_on(i, std::to_string(ref->number));
      continue;
    }
    if (!limits.remote_dependencies) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: '{}' is a job of node '{}'; this node is not in a cluster, "
          "so a job depends only on its own jobs",
          field, ClipUtf8(spec.depends_on(i), 80), ref->node));
    }
  }
  if (!v1::DependencyPolicy_IsValid(spec.dependency_policy())) {
    return absl::InvalidArgumentError(
        fmt::format("spec.dependency_policy: {} is not a DependencyPolicy",
                    static_cast<int>(spec.dependency_policy())));
  }
  if (spec.dependency_policy() != v1::DEPENDENCY_POLICY_UNSPECIFIED &&
      spec.depends_on_size() == 0) {
    return absl::InvalidArgumentError(
        "spec.dependency_policy: set without spec.depends_on");
  }
  if (spec.dependency_results_passed()) {
    return absl::InvalidArgumentError(
        "spec.dependency_results_passed: set by jobd, not by clients");
  }
  if (spec.dependency_results() && spec.depends_on_size() == 0) {
    return absl::InvalidArgumentError(
        "spec.dependency_results: set without spec.depends_on");
  }
  if (Depth(spec.args(), limits.max_value_depth) > limits.max_value_depth ||
      Depth(spec.kwargs(), limits.max_value_depth) > limits.max_value_depth) {
    return absl::InvalidArgumentError(
        fmt::format("spec.args/spec.kwargs: nested deeper than {} levels",
                    limits.max_value_depth));
  }
  size_t args_bytes = spec.kwargs().ByteSizeLong();
  for (const google::protobuf::Value& v : spec.args()) {
    args_bytes += v.ByteSizeLong();
  }
  if (args_bytes > limits.max_args_bytes) {
    return absl::InvalidArgumentError(fmt::format(
        "spec.args/spec.kwargs: {} bytes, more than the limit of {} "
        "(max-args-bytes); send bulk data as the payload",
        args_bytes, limits.max_args_bytes));
  }
  if (spec.flat_calls()) {
    if (spec.calls().empty()) {
      return absl::InvalidArgumentError(
          "spec.flat_calls: set without spec.calls");
    }
    if (!task->takes_flat_calls) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.flat_calls: task '{}' does not take flat batches (only tasks "
          "whose TaskInfo.takes_flat_calls is set do)",
          task->name));
    }
  }
  if (!spec.calls().empty()) {
    if (!task->takes_calls) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.calls: task '{}' does not take batches (only tasks whose "
          "TaskInfo.takes_calls is set do: Python tasks)",
          task->name));
    }
    if (spec.args_size() > 0 || spec.kwargs().fields_size() > 0) {
      return absl::InvalidArgumentError(
          "spec.calls: set with spec.args or spec.kwargs; a batch's "
          "arguments are in its calls only");
    }
    if (spec.dependency_results()) {
      return absl::InvalidArgumentError(
          "spec.calls: set with spec.dependency_results; a batch takes no "
          "results of other jobs");
    }
    if (spec.calls().size() > limits.max_args_bytes) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.calls: {} bytes, more than the limit of {} (max-args-bytes); "
          "send fewer calls per batch (a smaller chunksize)",
          spec.calls().size(), limits.max_args_bytes));
    }
    size_t calls = 0;
    if (absl::Status s = CheckBatchCalls(spec.calls(), spec.flat_calls(), *task,
                                         limits.max_value_depth, &calls);
        !s.ok()) {
      return s;
    }
  }
  // From here the spec is shared and immutable: the job record (GetJob),
  // the journal and the bound arguments (the executor) point into the same
  // one, kept without its task name (the TaskDef has it: stored_spec.h).
  StoredSpec stored(std::move(spec), *task);
  absl::StatusOr<TaskArgs> bound = BindSpec(*task, stored.body());
  if (!bound.ok()) return bound.status();
  if (task->validate && stored.body()->calls().empty()) {
    absl::Status s = task->validate(*bound);
    if (!s.ok()) {
      return absl::Status(s.code(), fmt::format("spec ({}): {}", task->name,
                                                std::string(s.message())));
    }
  }
  NewJob job;
  job.task = task;
  job.args = *std::move(bound);
  job.spec = std::move(stored);
  return job;
}

}  // namespace jobd
