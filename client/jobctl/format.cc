#include "client/jobctl/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "client/json.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {

using jobd::client::FromProtoTime;
using jobd::client::ToJson;

void AppendJson(std::string* out, const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNumberValue:
      if (std::isfinite(v.number_value())) {
        fmt::format_to(std::back_inserter(*out), "{}", v.number_value());
        return;
      }
      break;
    case google::protobuf::Value::kBoolValue:
      out->append(v.bool_value() ? "true" : "false");
      return;
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:
      out->append("null");
      return;
    default:
      break;
  }
  out->append(ToJson(v));
}

std::string ValueJson(const google::protobuf::Value& v) {
  std::string s;
  AppendJson(&s, v);
  return s;
}

void PrintJson(const google::protobuf::Message& message) {
  fmt::print("{}\n", ToJson(message, true));
}

std::string ShortName(const std::string& full, std::string_view prefix) {
  if (full.rfind(prefix, 0) == 0) return full.substr(prefix.size());
  return full;
}

std::string StateName(v1::JobState s) {
  return ShortName(v1::JobState_Name(s), "JOB_STATE_");
}

std::string ReasonName(v1::ErrorReason r) {
  return ShortName(v1::ErrorReason_Name(r), "ERROR_REASON_");
}

std::string EventName(v1::EventType t) {
  return ShortName(v1::EventType_Name(t), "EVENT_TYPE_");
}

std::string KindName(v1::JobKind k) {
  switch (k) {
    case v1::JOB_KIND_CPU_BOUND:
      return "cpu";
    case v1::JOB_KIND_IO_BOUND:
      return "io";
    case v1::JOB_KIND_AUTO:
      return "auto";
    default:
      return "-";
  }
}

std::string ExecutorName(v1::Executor e) {
  if (e == v1::EXECUTOR_UNSPECIFIED) return "-";
  std::string s = ShortName(v1::Executor_Name(e), "EXECUTOR_");
  for (char& c : s) c = static_cast<char>(std::tolower(c));
  return s;
}

std::string ErrorText(const v1::JobError& e) {
  return fmt::format("{}: {}", ReasonName(e.reason()), e.message());
}

std::string ProgressText(const v1::Progress& p) {
  if (p.fraction() < 0) return p.message();
  return fmt::format("{:.1f}% {}", 100 * p.fraction(), p.message());
}

std::string CallbackText(const v1::CallbackStatus& c) {
  std::string state;
  switch (c.state()) {
    case v1::CALLBACK_STATE_WAITING:
      return "waiting for the job to end";
    case v1::CALLBACK_STATE_PENDING:
      state = "pending";
      break;
    case v1::CALLBACK_STATE_DELIVERED:
      state = "delivered";
      break;
    case v1::CALLBACK_STATE_FAILED:
      state = "failed";
      break;
    case v1::CALLBACK_STATE_DROPPED:
      state = "dropped";
      break;
    default:
      return "unknown";
  }
  std::string out = fmt::format("{} ({} attempt{}", state, c.attempts(),
                                c.attempts() == 1 ? "" : "s");
  if (!c.last_error().empty()) {
    out += fmt::format("; last: {}", c.last_error());
  }
  return out + ")";
}

std::string JobDetail(const v1::Job& job) {
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    return ValueJson(job.result().value());
  }
  if (job.has_error()) return ErrorText(job.error());
  return "";
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S", FromProtoTime(t),
                          absl::LocalTimeZone());
}

std::string FormatDurationShort(absl::Duration d) {
  if (d < absl::Milliseconds(1)) {
    return fmt::format("{}us", absl::ToInt64Microseconds(d));
  }
  if (d < absl::Seconds(1)) {
    return fmt::format("{:.1f}ms", absl::ToDoubleMilliseconds(d));
  }
  if (d < absl::Minutes(1)) {
    return fmt::format("{:.2f}s", absl::ToDoubleSeconds(d));
  }
  return absl::FormatDuration(absl::Trunc(d, absl::Seconds(1)));
}

std::string RunTime(const v1::Job& job) {
  if (!job.has_start_time()) return "-";
  const absl::Time start = FromProtoTime(job.start_time());
  const absl::Time end =
      job.has_finish_time() ? FromProtoTime(job.finish_time()) : absl::Now();
  return FormatDurationShort(end - start);
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::fputs(FormatTable(rows).c_str(), stdout);
}

std::string JobEndLine(const v1::Job& job) {
  const std::string detail = JobDetail(job);
  std::string line = fmt::format("{}  {}", job.id(), StateName(job.state()));
  if (!detail.empty()) line += "  " + detail;
  return line;
}

std::string EventLine(const v1::JobEvent& e) {
  std::string detail;
  switch (e.type()) {
    case v1::EVENT_TYPE_ACCEPTED:
      detail = fmt::format("task={} executor={}{}", e.task(),
                           ExecutorName(e.executor()),
                           e.duplicate() ? " duplicate" : "");
      break;
    case v1::EVENT_TYPE_STARTED:
      detail = fmt::format("executor={}", ExecutorName(e.executor()));
      break;
    case v1::EVENT_TYPE_PROGRESS:
      detail = ProgressText(e.progress());
      break;
    case v1::EVENT_TYPE_SUCCEEDED:
      detail = ValueJson(e.result().value());
      break;
    case v1::EVENT_TYPE_RETRYING:
      detail =
          fmt::format("attempt {} failed ({}); next at {}", e.attempt(),
                      ErrorText(e.error()), FormatTime(e.next_attempt_time()));
      break;
    default:
      detail = ErrorText(e.error());
      break;
  }
  return fmt::format("{}  {}  {}  {}", e.sequence(), e.job_id(),
                     EventName(e.type()), detail);
}

}  // namespace jobd::jobctl
