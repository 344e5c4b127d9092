#include "server/frontend/convert.h"

#include <charconv>

#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {

void ToProto(const Event& event, uint64_t client_tag, v1::JobEvent* out) {
  out->set_sequence(event.sequence);
  if (event.job_id != 0) out->set_job_id(std::to_string(event.job_id));
  out->set_client_tag(client_tag);
  out->set_type(event.type);
  *out->mutable_time() = ToProtoTime(event.time);
  out->set_executor(event.executor);
  if (event.duplicate) out->set_duplicate(true);
  if (event.task() != nullptr) out->set_task(event.task()->name);
  if (event.progress() != nullptr) {
    *out->mutable_progress() = *event.progress();
  }
  if (event.end() != nullptr) SetEnd(*event.end(), out);
}

absl::StatusOr<uint64_t> ParseJobId(const std::string& id, const char* field) {
  uint64_t value = 0;
  const char* end = id.data() + id.size();
  auto [ptr, ec] = std::from_chars(id.data(), end, value);
  if (id.empty() || ec != std::errc() || ptr != end || value == 0) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is not a job id (a positive decimal number)",
                    field, ClipUtf8(id, 64)));
  }
  return value;
}

}  // namespace jobd
