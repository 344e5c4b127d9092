#include "server/jobs/job_log.h"

#include <atomic>
#include <chrono>
#include <ctime>

#include "spdlog/details/log_msg.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {

namespace {

std::atomic<bool> json_format{false};
thread_local const JobLogFields* current_fields = nullptr;

void AppendField(std::string& out, std::string_view name,
                 std::string_view value) {
  if (value.empty()) return;
  out += ",\"";
  out += name;
  out += "\":\"";
  out += JsonEscape(value);
  out += '"';
}

class JsonLogFormatter final : public spdlog::formatter {
 public:
  explicit JsonLogFormatter(bool priority_prefix)
      : priority_prefix_(priority_prefix) {}
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    std::string line;
    line.reserve(128 + msg.payload.size());
    if (priority_prefix_) {
      // sd-daemon: trace, debug, info, warn, err, critical, off.
      static constexpr const char* kPriority[] = {"<7>", "<7>", "<6>", "<4>",
                                                  "<3>", "<2>", "<6>"};
      line += kPriority[static_cast<int>(msg.level) % 7];
    }
    const auto since_epoch = msg.time.time_since_epoch();
    const auto secs =
        std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
        since_epoch - secs);
    const std::time_t t = secs.count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    line +=
        fmt::format("{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\"",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                    tm.tm_min, tm.tm_sec, micros.count());
    const spdlog::string_view_t level =
        spdlog::level::to_string_view(msg.level);
    line += ",\"level\":\"";
    line.append(level.data(), level.size());
    line += "\",\"msg\":\"";
    line +=
        JsonEscape(std::string_view(msg.payload.data(), msg.payload.size()));
    line += '"';
    if (const JobLogFields* f = current_fields; f != nullptr) {
      AppendField(line, "job_id", std::to_string(f->job_id));
      AppendField(line, "task", f->task);
      AppendField(line, "executor", ExecutorLogName(f->executor));
      AppendField(line, "caller", f->caller);
      AppendField(line, "trace_id", f->trace_id);
    }
    line += "}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLogFormatter>(priority_prefix_);
  }

 private:
  const bool priority_prefix_;
};

}  // namespace

std::string_view ExecutorLogName(v1::Executor executor) {
  switch (executor) {
    case v1::EXECUTOR_THREAD:
      return "thread";
    case v1::EXECUTOR_PROCESS:
      return "process";
    case v1::EXECUTOR_REACTOR:
      return "reactor";
    default:
      return "";
  }
}

void SetJsonLogFormat(bool json) { json_format.store(json); }

std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter(bool priority_prefix) {
  return std::make_unique<JsonLogFormatter>(priority_prefix);
}

std::string JsonEscape(std::string_view s) {
  const std::string valid = MakeValidUtf8(s);
  std::string out;
  out.reserve(valid.size() + 8);
  for (const char c : valid) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\u{:04x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

void LogJob(spdlog::level::level_enum level, const JobLogFields& fields,
            std::string_view message) {
  if (!spdlog::should_log(level)) return;
  if (json_format.load(std::memory_order_relaxed)) {
    current_fields = &fields;
    spdlog::log(level, "{}", message);
    current_fields = nullptr;
    return;
  }
  std::string prefix = fmt::format("job {} [task={}", fields.job_id,
                                   fields.task.empty() ? "?" : fields.task);
  if (const std::string_view ex = ExecutorLogName(fields.executor);
      !ex.empty()) {
    prefix += fmt::format(" executor={}", ex);
  }
  if (!fields.caller.empty())
    prefix += fmt::format(" caller={}", fields.caller);
  if (!fields.trace_id.empty()) {
    prefix += fmt::format(" trace_id={}", fields.trace_id);
  }
  spdlog::log(level, "{}]: {}", prefix, message);
}

}  // namespace jobd
