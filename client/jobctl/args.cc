#include "client/jobctl/args.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

#include "absl/status/status.h"
#include "client/json.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {

absl::StatusOr<absl::Duration> ParseDurationArg(const std::string& text,
                                                std::string_view flag) {
  absl::Duration d;
  if (absl::ParseDuration(text, &d)) {
    if (d < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: '{}' is negative", flag, text));
    }
    return d;
  }
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
  if (!text.empty() && ec == std::errc() && ptr == end &&
      std::isfinite(seconds) && seconds >= 0) {
    return absl::Seconds(seconds);
  }
  return absl::InvalidArgumentError(fmt::format(
      "{}: '{}' is not a duration (like 500ms, 2s, 1m, 1h30m)", flag, text));
}

absl::StatusOr<absl::Duration> ParseOptionalDuration(const std::string& text,
                                                     std::string_view flag,
                                                     absl::Duration fallback) {
  if (text.empty()) return fallback;
  return ParseDurationArg(text, flag);
}

std::optional<v1::JobKind> ParseKind(std::string_view s) {
  if (s == "cpu" || s == "cpu-bound") return v1::JOB_KIND_CPU_BOUND;
  if (s == "io" || s == "io-bound") return v1::JOB_KIND_IO_BOUND;
  if (s == "auto") return v1::JOB_KIND_AUTO;
  return std::nullopt;
}

std::optional<v1::Executor> ParseExecutor(std::string_view s) {
  if (s == "process") return v1::EXECUTOR_PROCESS;
  if (s == "thread") return v1::EXECUTOR_THREAD;
  if (s == "reactor") return v1::EXECUTOR_REACTOR;
  if (s == "any" || s == "auto") return v1::EXECUTOR_UNSPECIFIED;
  return std::nullopt;
}

absl::StatusOr<std::pair<v1::JobKind, v1::Executor>> ParseRouting(
    const std::string& kind_text, const std::string& executor_text) {
  std::optional<v1::JobKind> kind = ParseKind(kind_text);
  if (!kind) {
    return absl::InvalidArgumentError(
        fmt::format("--kind: '{}' is not one of cpu, io, auto", kind_text));
  }
  std::optional<v1::Executor> executor = executor_text.empty()
                                             ? v1::EXECUTOR_UNSPECIFIED
                                             : ParseExecutor(executor_text);
  if (!executor) {
    return absl::InvalidArgumentError(
        fmt::format("--executor: '{}' is not one of process, thread, reactor",
                    executor_text));
  }
  return std::make_pair(*kind, *executor);
}

std::optional<v1::JobState> ParseState(std::string s) {
  for (char& c : s) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (s.rfind("JOB_STATE_", 0) != 0) s = "JOB_STATE_" + s;
  v1::JobState state;
  if (!v1::JobState_Parse(s, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

std::optional<std::pair<std::string_view, std::string_view>> SplitKeyValue(
    std::string_view kv) {
  const size_t eq = kv.find('=');
  if (eq == std::string_view::npos || eq == 0) return std::nullopt;
  return std::make_pair(kv.substr(0, eq), kv.substr(eq + 1));
}

void LineToValue(std::string_view line, google::protobuf::Value* out) {
  if (line.empty()) {
    out->set_string_value("");
    return;
  }
  const char c = line.front();
  if ((c >= '0' && c <= '9') || c == '-') {
    double d = 0;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), d);
    if (ec == std::errc() && ptr == line.data() + line.size() &&
        std::isfinite(d) &&
        (line.size() < 2 || line[0] != '0' || line[1] == '.' ||
         line[1] == 'e')) {
      out->set_number_value(d);
      return;
    }
  }
  if (line == "true" || line == "false") {
    out->set_bool_value(line == "true");
    return;
  }
  if (line == "null") {
    out->set_null_value(google::protobuf::NULL_VALUE);
    return;
  }
  if (c == '{' || c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') ||
      c == ' ' || c == '\t') {
    absl::StatusOr<google::protobuf::Value> v = jobd::client::ParseJson(line);
    if (v.ok()) {
      out->Swap(&*v);
      return;
    }
  }
  out->set_string_value(std::string(line));
}

std::vector<std::string> MarkedArgs(int argc, const char* const* argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& arg : args) {
    if (arg.size() >= 2 && arg.front() == '[' && arg.back() == ']') {
      arg.insert(arg.begin(), kMarker);
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 wants them reversed.
  return args;
}

void DropMarker(std::string* value) {
  if (!value->empty() && value->front() == kMarker) value->erase(0, 1);
}

}  // namespace jobd::jobctl
