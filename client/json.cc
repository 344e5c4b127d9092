#include "client/json.h"

#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace jobd::client {

absl::StatusOr<google::protobuf::Value> ParseJson(std::string_view json) {
  google::protobuf::Value value;
  google::protobuf::util::JsonParseOptions options;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &value, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError("invalid JSON: " +
                                      std::string(status.message()));
  }
  return value;
}

google::protobuf::Value JsonOrString(std::string_view text) {
  absl::StatusOr<google::protobuf::Value> v = ParseJson(text);
  if (v.ok()) return *std::move(v);
  return ToValue(text);
}

std::string ToJson(const google::protobuf::Value& value) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(value, &out);
  return out;
}

std::string ToJson(const google::protobuf::Message& message,
                   bool print_defaults) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = print_defaults;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(
      absl::ToInt64Nanoseconds(d));
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

}  // namespace jobd::client
