#include "server/jobs/event_proto.h"

#include <string>

#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "workers/sdk/task.h"

namespace jobd {

void ToProto(const Event& event, uint64_t client_tag, v1::JobEvent* out) {
  out->set_sequence(event.sequence);
  if (event.job_id != 0) {
    out->set_job_id(FormatJobId(event.job_id, event.node));
  }
  out->set_client_tag(client_tag);
  out->set_type(event.type);
  *out->mutable_time() = ToProtoTime(event.time);
  out->set_executor(event.executor);
  if (event.duplicate) out->set_duplicate(true);
  if (event.task() != nullptr) out->set_task(event.task()->name);
  if (!event.traceparent().empty()) {
    out->set_traceparent(std::string(event.traceparent()));
  }
  if (event.progress() != nullptr) {
    *out->mutable_progress() = *event.progress();
  }
  if (event.end() != nullptr) SetEnd(*event.end(), out);
  if (const RetryNote* retry = event.retry(); retry != nullptr) {
    *out->mutable_error() = retry->error;
    *out->mutable_next_attempt_time() = ToProtoTime(retry->next_time);
    out->set_attempt(retry->attempt);
  }
}

}  // namespace jobd
