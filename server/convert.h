// Conversions between the scheduler's internal types and the jobd.v1 API
// messages (times, durations, events, status codes). Stateless.
#ifndef JOBD_SERVER_CONVERT_H_
#define JOBD_SERVER_CONVERT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "jobd/v1/jobd.pb.h"
#include "server/scheduler.h"

namespace jobd {

google::protobuf::Timestamp ToProtoTime(absl::Time t);
google::protobuf::Duration ToProtoDuration(absl::Duration d);
// Precondition: a valid Duration (see ValidateDuration).
absl::Duration FromProto(const google::protobuf::Duration& d);
// InvalidArgument naming `field` if `d` is malformed or negative.
absl::Status ValidateDuration(const google::protobuf::Duration& d,
                              const char* field);

// Sets `out`'s result (SUCCEEDED) or error (otherwise) from `end`; `out` is
// a v1::JobEvent or a v1::Job.
template <typename JobOrEvent>
void SetEnd(const JobEnd& end, JobOrEvent* out) {
  if (end.state == v1::JOB_STATE_SUCCEEDED) {
    *out->mutable_result() = end.result();
  } else {
    *out->mutable_error() = end.error();
  }
}

// Fills `out` from `event` as seen by a subscriber with `client_tag`.
void ToProto(const Event& event, uint64_t client_tag, v1::JobEvent* out);

// Job ids travel as decimal strings. InvalidArgument naming `field`.
absl::StatusOr<uint64_t> ParseJobId(const std::string& id, const char* field);

}  // namespace jobd

#endif  // JOBD_SERVER_CONVERT_H_
