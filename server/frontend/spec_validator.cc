#include "server/frontend/spec_validator.h"

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

}  // namespace

absl::StatusOr<NewJob> ValidateSpec(v1::JobSpec spec,
                                    const TaskRegistry& registry,
                                    const SpecLimits& limits) {
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
  if (spec.has_timeout()) {
    absl::Status s = ValidateDuration(spec.timeout(), "spec.timeout");
    if (!s.ok()) return s;
    if (spec.timeout().seconds() == 0 && spec.timeout().nanos() == 0) {
      return absl::InvalidArgumentError(
          "spec.timeout: must be positive (leave it unset for no timeout)");
    }
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
  if (absl::Status key =
          ValidateKey(spec.concurrency_key(), "spec.concurrency_key");
      !key.ok()) {
    return key;
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
  // From here the spec is shared and immutable: the job record (GetJob),
  // the journal and the bound arguments (the executor) point into the same
  // one, kept without its task name (the TaskDef has it: stored_spec.h).
  StoredSpec stored(std::move(spec), *task);
  absl::StatusOr<TaskArgs> bound = TaskRegistry::Bind(*task, stored.body());
  if (!bound.ok()) return bound.status();
  if (task->validate) {
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
