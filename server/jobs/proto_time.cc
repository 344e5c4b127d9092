#include "server/jobs/proto_time.h"

#include "google/protobuf/util/time_util.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Status ValidateTimestamp(const google::protobuf::Timestamp& t,
                               const char* field) {
  if (t.seconds() < TimeUtil::kTimestampMinSeconds ||
      t.seconds() > TimeUtil::kTimestampMaxSeconds || t.nanos() < 0 ||
      t.nanos() > 999999999) {
    return absl::InvalidArgumentError(
        fmt::format("{}: not a valid time (seconds={}, nanos={})", field,
                    t.seconds(), t.nanos()));
  }
  return absl::OkStatus();
}

absl::Status ValidateDuration(const google::protobuf::Duration& d,
                              const char* field) {
  constexpr int64_t kMaxSeconds = 315576000000;  // 10,000 years.
  if (d.seconds() < 0 || d.nanos() < 0) {
    return absl::InvalidArgumentError(
        fmt::format("{}: must not be negative", field));
  }
  if (d.nanos() > 999999999 || d.seconds() > kMaxSeconds) {
    return absl::InvalidArgumentError(
        fmt::format("{}: out of range (seconds={}, nanos={})", field,
                    d.seconds(), d.nanos()));
  }
  return absl::OkStatus();
}

}  // namespace jobd
