#include "server/frontend/convert.h"

#include <memory>
#include <string_view>

#include "absl/time/clock.h"
#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"
#include "workers/executor/executor.h"
#include "workers/sdk/utf8.h"

namespace jobd {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

Event Rejection(const absl::Status& status) {
  Event e;
  e.type = v1::EVENT_TYPE_REJECTED;
  e.time = absl::Now();
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_UNSPECIFIED;
  v1::JobError& error = end->mutable_error();
  error.set_code(static_cast<int32_t>(status.code()));
  const absl::string_view message = status.message();
  error.set_message(ClipUtf8(std::string_view(message.data(), message.size()),
                             kMaxErrorMessageBytes));
  error.set_reason(status.code() == absl::StatusCode::kResourceExhausted
                       ? v1::ERROR_REASON_OVERLOADED
                   : status.code() == absl::StatusCode::kUnavailable
                       ? v1::ERROR_REASON_SHUTDOWN
                       : v1::ERROR_REASON_INVALID_INPUT);
  end->bytes = static_cast<uint32_t>(error.ByteSizeLong());
  e.set_end(std::move(end));
  return e;
}

v1::TaskParam ToProto(const TaskParam& p) {
  v1::TaskParam out;
  out.set_name(p.name);
  out.set_type(ParamTypeName(p.type));
  out.set_required(p.required);
  if (!p.required) *out.mutable_default_value() = p.default_value;
  out.set_help(p.help);
  return out;
}

v1::TaskInfo ToProto(const TaskDef& def, bool quarantined) {
  v1::TaskInfo info;
  info.set_name(def.name);
  info.set_description(def.description);
  info.set_default_kind(def.default_kind);
  info.set_variadic(def.variadic);
  info.set_takes_calls(def.takes_calls);
  info.set_takes_flat_calls(def.takes_calls && def.takes_flat_calls);
  // Sync tasks run in worker processes and, unless they need isolation,
  // on threads; async ones on the reactor.
  // A command task's CPU-bound jobs hold a process-pool slot.
  if (def.has_sync() || def.holds_pool_slot) {
    info.add_executors(v1::EXECUTOR_PROCESS);
  }
  if (def.has_sync() && !def.needs_isolation) {
    info.add_executors(v1::EXECUTOR_THREAD);
  }
  if (def.has_async()) info.add_executors(v1::EXECUTOR_REACTOR);
  for (const TaskParam& p : def.params) *info.add_params() = ToProto(p);
  info.set_quarantined(quarantined);
  return info;
}

void ToProto(const ServiceLimits& limits, v1::ServerLimits* out) {
  out->set_max_jobs_per_request(
      static_cast<uint32_t>(limits.max_jobs_per_request));
  out->set_default_window(limits.default_window);
  out->set_max_window(limits.max_window);
  out->set_max_payload_bytes(limits.spec.max_payload_bytes);
  out->set_max_message_bytes(limits.max_message_bytes);
}

absl::StatusOr<uint64_t> ParseJobId(const std::string& id, const char* field) {
  absl::StatusOr<JobRef> ref = ParseJobRef(id, field);
  if (!ref.ok()) return ref.status();
  if (!ref->here()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: '{}' is a job of node '{}'; this call reaches only this node's "
        "jobs: ask node '{}'",
        field, ClipUtf8(id, 80), ref->node, ref->node));
  }
  return ref->number;
}

}  // namespace jobd
