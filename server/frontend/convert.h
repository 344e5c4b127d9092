// Conversions at the RPC edge between the scheduler's events and the
// jobd.v1 API messages, and of job ids. Stateless.
#ifndef JOBD_SERVER_FRONTEND_CONVERT_H_
#define JOBD_SERVER_FRONTEND_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "server/jobs/proto_time.h"

namespace jobd {

// Fills `out` from `event` as seen by a subscriber with `client_tag`.
void ToProto(const Event& event, uint64_t client_tag, v1::JobEvent* out);

// Job ids travel as decimal strings. InvalidArgument naming `field`.
absl::StatusOr<uint64_t> ParseJobId(const std::string& id, const char* field);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_CONVERT_H_
