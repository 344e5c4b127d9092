// jobctl's human and machine output: names of the API's enums, compact JSON
// of values and messages, times and durations, aligned tables, and the
// one-line forms of a job's end and of an event that several commands print.
//
// Thread-safety: every function is stateless; Print* write to stdout.
// RunTime and FormatTime read the clock / the local time zone.
// Ownership: results are returned by value.
#ifndef JOBD_CLIENT_JOBCTL_FORMAT_H_
#define JOBD_CLIENT_JOBCTL_FORMAT_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::jobctl {

// --- JSON ---------------------------------------------------------------

// Appends the compact JSON of a value (fast for scalars): 5, "hi", [1,2].
void AppendJson(std::string* out, const google::protobuf::Value& v);
std::string ValueJson(const google::protobuf::Value& v);

// Prints a message's JSON (--json output: proto field names, enum names,
// defaults printed) and a newline.
void PrintJson(const google::protobuf::Message& message);

// --- Names --------------------------------------------------------------

// `full` without `prefix` if it starts with it:
// ("JOB_STATE_SUCCEEDED", "JOB_STATE_") -> "SUCCEEDED".
std::string ShortName(const std::string& full, std::string_view prefix);
std::string StateName(v1::JobState s);      // "SUCCEEDED"
std::string ReasonName(v1::ErrorReason r);  // "TIMEOUT"
std::string EventName(v1::EventType t);     // "STARTED"
std::string KindName(v1::JobKind k);        // "cpu", "io", "auto" or "-"
std::string ExecutorName(v1::Executor e);   // "process", ... or "-"

// "REASON: message".
std::string ErrorText(const v1::JobError& e);

// "42.0% message", or the message alone when the fraction is unknown (< 0).
std::string ProgressText(const v1::Progress& p);

// A job's callback status: "delivered (1 attempt)", "pending (3 attempts;
// last: HTTP 503)", "failed (...)", "dropped (...)", "waiting for the end".
std::string CallbackText(const v1::CallbackStatus& c);

// A job's result as JSON if it SUCCEEDED, else its error text if it has
// one, else "".
std::string JobDetail(const v1::Job& job);

// --- Times --------------------------------------------------------------

// "2024-05-01 12:00:00.250" in the local time zone; "-" for the zero time.
std::string FormatTime(const google::protobuf::Timestamp& t);

// "250us", "12.5ms", "3.25s", then whole seconds ("2m5s").
std::string FormatDurationShort(absl::Duration d);

// Run time of a job: start..finish, start..now while running, or "-".
std::string RunTime(const v1::Job& job);

// --- Tables and lines ---------------------------------------------------

// Rows as columns separated by two spaces, each line ending in '\n'; the
// last column unpadded, trailing blanks dropped.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// One line for a job's end: "<id>  <STATE>  <result or REASON: message>".
std::string JobEndLine(const v1::Job& job);

// One line for an event: "<seq>  <job id>  <TYPE>  <detail>".
std::string EventLine(const v1::JobEvent& e);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_FORMAT_H_
