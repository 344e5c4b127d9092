// Job log lines: jobd's log lines about one job carry its id, task,
// executor, caller and (when the job has one) W3C trace id, as text
// ("job 17 [task=echo executor=thread caller=local]: started") or, with
// --log-format json, as members of a JSON-lines record:
//   {"time":"2026-12-05T06:00:00.123456Z","level":"info","msg":"started",
//    "job_id":"17","task":"echo","executor":"thread","caller":"local"}
// JsonLogFormatter is the spdlog formatter of that format (every line,
// job line or not, becomes one JSON object: time, level, msg, and the job
// fields of a LogJob line). Strings are made valid UTF-8 and escaped.
//
// Thread-safety: LogJob may be called from any thread; the format is set
// once at start (SetJsonLogFormat) before other threads log. The fields
// of a line reach the formatter through a thread-local pointer, valid
// during the spdlog call that formats it (jobd's loggers are synchronous).
#ifndef JOBD_SERVER_JOBS_JOB_LOG_H_
#define JOBD_SERVER_JOBS_JOB_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "jobd/v1/jobd.pb.h"
#include "spdlog/common.h"
#include "spdlog/formatter.h"

namespace jobd {

struct JobLogFields {
  uint64_t job_id = 0;
  std::string_view task;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  std::string_view caller;
  std::string_view trace_id;  // 32 hex digits, or empty.
};

// Logs `message` about a job at `level` (nothing is built when the level
// is off).
void LogJob(spdlog::level::level_enum level, const JobLogFields& fields,
            std::string_view message);

// "thread", "process", "reactor", or "" while not routed.
std::string_view ExecutorLogName(v1::Executor executor);

// Job lines as JSON members rather than a text prefix (call at start, with
// JsonLogFormatter installed).
void SetJsonLogFormat(bool json);

// The JSON-lines formatter (one object per line, "\n"-terminated); with
// `priority_prefix`, each line starts with its sd-daemon priority ("<6>"),
// which journald takes off (stderr is the journal).
std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter(bool priority_prefix);

// `s` as the body of a JSON string (quotes, backslashes and control
// characters escaped; invalid UTF-8 replaced by U+FFFD).
std::string JsonEscape(std::string_view s);

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_JOB_LOG_H_
