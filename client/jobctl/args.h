// jobctl's parsing of argument values shared by its commands: durations,
// --kind / --executor, job states, key=value pairs, the JSON value of an
// input line, and the marker that keeps CLI11 from splitting "[a,b]".
// Every refusal is an InvalidArgument status that names the flag, as
// "--timeout: 'soon' is not a duration (like 500ms, 2s, 1m, 1h30m)".
//
// Thread-safety: every function is stateless and safe from any thread.
// Ownership: results are returned by value (string_views point into the
// caller's text).
#ifndef JOBD_CLIENT_JOBCTL_ARGS_H_
#define JOBD_CLIENT_JOBCTL_ARGS_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::jobctl {

// A duration: absl's form (500ms, 1h30m, inf) or a number of seconds.
// Negative ones are refused. `flag` names the flag in the error.
absl::StatusOr<absl::Duration> ParseDurationArg(const std::string& text,
                                                std::string_view flag);

// An optional duration flag: `fallback` when it was not given (empty).
absl::StatusOr<absl::Duration> ParseOptionalDuration(const std::string& text,
                                                     std::string_view flag,
                                                     absl::Duration fallback);

// "cpu" / "cpu-bound", "io" / "io-bound", "auto"; nullopt otherwise.
std::optional<v1::JobKind> ParseKind(std::string_view s);

// "process", "thread", "reactor"; "any" and "auto" are UNSPECIFIED (jobd
// routes); nullopt otherwise.
std::optional<v1::Executor> ParseExecutor(std::string_view s);

// --kind and --executor of submit and map; an empty --executor lets jobd
// route. InvalidArgument naming the flag otherwise.
absl::StatusOr<std::pair<v1::JobKind, v1::Executor>> ParseRouting(
    const std::string& kind_text, const std::string& executor_text);

// A job state by its short or full name, any case: "failed",
// "JOB_STATE_FAILED"; nullopt for UNSPECIFIED and unknown names.
std::optional<v1::JobState> ParseState(std::string s);

// "key=value" split at the first '='; nullopt without '=' or with an empty
// key. The views point into `kv`.
std::optional<std::pair<std::string_view, std::string_view>> SplitKeyValue(
    std::string_view kv);

// The JSON value of a line of text (map's input): fast paths for numbers,
// true/false/null and plain words; the JSON parser for the rest; text that
// is not valid JSON is a string. "" is the empty string.
void LineToValue(std::string_view line, google::protobuf::Value* out);

// CLI11 splits a value written "[a,b]" into several values; a JSON array
// argument must stay one. MarkedArgs hides each such argument behind a
// marker byte and returns the arguments reversed, as CLI11's
// App::parse(std::vector<std::string>&) wants them; DropMarker removes the
// marker from a parsed value again.
constexpr char kMarker = '\x01';
std::vector<std::string> MarkedArgs(int argc, const char* const* argv);
void DropMarker(std::string* value);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_ARGS_H_
