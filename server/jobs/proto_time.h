// Conversions between absl times and the API's google.protobuf Timestamp
// and Duration, and the check of a Duration a client sent. Stateless.
#ifndef JOBD_SERVER_JOBS_PROTO_TIME_H_
#define JOBD_SERVER_JOBS_PROTO_TIME_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace jobd {

google::protobuf::Timestamp ToProtoTime(absl::Time t);
google::protobuf::Duration ToProtoDuration(absl::Duration d);
// Precondition: a valid Duration (see ValidateDuration).
absl::Duration FromProto(const google::protobuf::Duration& d);
// Precondition: a valid Timestamp (see ValidateTimestamp).
absl::Time FromProtoTime(const google::protobuf::Timestamp& t);
// InvalidArgument naming `field` if `t` is malformed (out of the range
// 0001-01-01 .. 9999-12-31, or nanos out of range).
absl::Status ValidateTimestamp(const google::protobuf::Timestamp& t,
                               const char* field);
// InvalidArgument naming `field` if `d` is malformed or negative.
absl::Status ValidateDuration(const google::protobuf::Duration& d,
                              const char* field);

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_PROTO_TIME_H_
