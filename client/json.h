// jobd::client JSON and spec helpers: build JobSpecs and convert between JSON
// text and google.protobuf.Value / messages, using protobuf's own JSON support
// (google::protobuf::util), no other JSON library.
//
// Thread-safety: every function is stateless and safe to call from any
// thread. Ownership: everything is returned by value.
#ifndef JOBD_CLIENT_JSON_H_
#define JOBD_CLIENT_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::client {

// Parses one JSON text (any JSON value: object, array, string, number, bool,
// null) into a Value. INVALID_ARGUMENT if it is not valid JSON.
absl::StatusOr<google::protobuf::Value> ParseJson(std::string_view json);

// The JSON value `text` denotes if it parses, else `text` as a string value:
// "300" -> 300, "[1,2]" -> [1,2], "hello" -> "hello", "\"x\"" -> "x".
google::protobuf::Value JsonOrString(std::string_view text);

// Compact one-line JSON of a Value ("300", "\"hi\"", "{\"a\":1}").
std::string ToJson(const google::protobuf::Value& value);

// Compact one-line JSON of any message, with proto field names (snake_case)
// and enum names. `print_defaults` also prints fields holding their default
// value (0, "", false, empty lists), as machine output wants.
std::string ToJson(const google::protobuf::Message& message,
                   bool print_defaults);

// Value builders.
inline google::protobuf::Value ToValue(google::protobuf::Value v) { return v; }
inline google::protobuf::Value ToValue(std::nullptr_t) {
  google::protobuf::Value v;
  v.set_null_value(google::protobuf::NULL_VALUE);
  return v;
}
// Numbers (int, double, ...) and bool.
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
google::protobuf::Value ToValue(T n) {
  google::protobuf::Value v;
  if constexpr (std::is_same_v<T, bool>) {
    v.set_bool_value(n);
  } else {
    v.set_number_value(static_cast<double>(n));
  }
  return v;
}
inline google::protobuf::Value ToValue(std::string_view s) {
  google::protobuf::Value v;
  v.set_string_value(std::string(s));
  return v;
}
inline google::protobuf::Value ToValue(const char* s) {
  return ToValue(std::string_view(s));
}
inline google::protobuf::Value ToValue(const std::string& s) {
  return ToValue(std::string_view(s));
}
inline google::protobuf::Value ToValue(google::protobuf::ListValue list) {
  google::protobuf::Value v;
  *v.mutable_list_value() = std::move(list);
  return v;
}
inline google::protobuf::Value ToValue(google::protobuf::Struct s) {
  google::protobuf::Value v;
  *v.mutable_struct_value() = std::move(s);
  return v;
}

// A spec for `task` with the given positional arguments (each converted by
// ToValue) and kind JOB_KIND_AUTO (jobd rejects JOB_KIND_UNSPECIFIED).
//   MakeSpec("sleep", 300)   MakeSpec("echo", "hello", 1, true)
template <typename... Args>
v1::JobSpec MakeSpec(std::string task, Args&&... args) {
  v1::JobSpec spec;
  spec.set_task(std::move(task));
  spec.set_kind(v1::JOB_KIND_AUTO);
  (void)(..., (*spec.add_args() = ToValue(std::forward<Args>(args))));
  return spec;
}

// Sets spec.kwargs[key] = value.
template <typename T>
void SetKwarg(v1::JobSpec& spec, const std::string& key, T&& value) {
  (*spec.mutable_kwargs()->mutable_fields())[key] =
      ToValue(std::forward<T>(value));
}

// Conversions between absl::Duration and google.protobuf.Duration, and a
// google.protobuf.Timestamp as an absl::Time.
google::protobuf::Duration ToProtoDuration(absl::Duration d);
absl::Duration FromProtoDuration(const google::protobuf::Duration& d);
absl::Time FromProtoTime(const google::protobuf::Timestamp& t);

}  // namespace jobd::client

#endif  // JOBD_CLIENT_JSON_H_
