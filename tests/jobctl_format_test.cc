// Unit tests of jobctl's output formatting (client/jobctl/format.h): enum
// names, compact JSON, times and durations, tables, and the one-line forms
// of a job's end and of an event.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/jobctl/format.h"
#include "client/json.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace jobd::jobctl {
namespace {

using google::protobuf::util::TimeUtil;
using jobd::client::FromProtoTime;

TEST(JobctlFormatTest, EnumNamesAreShort) {
  EXPECT_EQ(ShortName("JOB_STATE_SUCCEEDED", "JOB_STATE_"), "SUCCEEDED");
  EXPECT_EQ(ShortName("OTHER", "JOB_STATE_"), "OTHER");
  EXPECT_EQ(StateName(v1::JOB_STATE_CANCELLED), "CANCELLED");
  EXPECT_EQ(ReasonName(v1::ERROR_REASON_TIMEOUT), "TIMEOUT");
  EXPECT_EQ(EventName(v1::EVENT_TYPE_STARTED), "STARTED");
  EXPECT_EQ(KindName(v1::JOB_KIND_CPU_BOUND), "cpu");
  EXPECT_EQ(KindName(v1::JOB_KIND_IO_BOUND), "io");
  EXPECT_EQ(KindName(v1::JOB_KIND_AUTO), "auto");
  EXPECT_EQ(KindName(v1::JOB_KIND_UNSPECIFIED), "-");
  EXPECT_EQ(ExecutorName(v1::EXECUTOR_PROCESS), "process");
  EXPECT_EQ(ExecutorName(v1::EXECUTOR_REACTOR), "reactor");
  EXPECT_EQ(ExecutorName(v1::EXECUTOR_UNSPECIFIED), "-");
}

TEST(JobctlFormatTest, ValuesAsCompactJson) {
  EXPECT_EQ(ValueJson(client::ToValue(5)), "5");
  EXPECT_EQ(ValueJson(client::ToValue(2.5)), "2.5");
  EXPECT_EQ(ValueJson(client::ToValue(-1e21)), "-1e+21");
  EXPECT_EQ(ValueJson(client::ToValue(true)), "true");
  EXPECT_EQ(ValueJson(client::ToValue(nullptr)), "null");
  EXPECT_EQ(ValueJson(google::protobuf::Value()), "null");  // Kind not set.
  EXPECT_EQ(ValueJson(client::ToValue("h\"i")), "\"h\\\"i\"");
  EXPECT_EQ(ValueJson(client::JsonOrString("[1,{\"a\":\"b\"}]")),
            "[1,{\"a\":\"b\"}]");
  std::string out = "x=";
  AppendJson(&out, client::ToValue(7));
  EXPECT_EQ(out, "x=7");
}

TEST(JobctlFormatTest, PrintJsonPrintsDefaultsWithProtoNames) {
  v1::CancelJobResponse r;
  ::testing::internal::CaptureStdout();
  PrintJson(r);
  EXPECT_EQ(::testing::internal::GetCapturedStdout(),
            "{\"state\":\"JOB_STATE_UNSPECIFIED\",\"already_ended\":false}\n");
}

TEST(JobctlFormatTest, ErrorsProgressAndDetail) {
  v1::JobError e;
  e.set_reason(v1::ERROR_REASON_TASK_ERROR);
  e.set_message("boom");
  EXPECT_EQ(ErrorText(e), "TASK_ERROR: boom");

  v1::Progress p;
  p.set_fraction(0.425);
  p.set_message("rows");
  EXPECT_EQ(ProgressText(p), "42.5% rows");
  p.set_fraction(-1);
  EXPECT_EQ(ProgressText(p), "rows");

  v1::Job job;
  job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(JobDetail(job), "");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  *job.mutable_result()->mutable_value() = client::ToValue("done");
  EXPECT_EQ(JobDetail(job), "\"done\"");
  job.set_state(v1::JOB_STATE_FAILED);
  *job.mutable_error() = e;
  EXPECT_EQ(JobDetail(job), "TASK_ERROR: boom");
}

TEST(JobctlFormatTest, ShortDurations) {
  EXPECT_EQ(FormatDurationShort(absl::ZeroDuration()), "0us");
  EXPECT_EQ(FormatDurationShort(absl::Microseconds(250)), "250us");
  EXPECT_EQ(FormatDurationShort(absl::Microseconds(12500)), "12.5ms");
  EXPECT_EQ(FormatDurationShort(absl::Milliseconds(3250)), "3.25s");
  EXPECT_EQ(FormatDurationShort(absl::Milliseconds(125900)), "2m5s");
  EXPECT_EQ(FormatDurationShort(absl::Hours(2)), "2h");
}

TEST(JobctlFormatTest, TimesInTheLocalZone) {
  EXPECT_EQ(FormatTime(google::protobuf::Timestamp()), "-");
  google::protobuf::Timestamp t;
  t.set_seconds(1714564800);  // 2024-05-01 12:00:00 UTC.
  t.set_nanos(250000000);
  EXPECT_EQ(FromProtoTime(t),
            absl::FromUnixSeconds(1714564800) + absl::Milliseconds(250));
  EXPECT_EQ(FormatTime(t),
            absl::FormatTime("%Y-%m-%d %H:%M:%E3S", FromProtoTime(t),
                             absl::LocalTimeZone()));
  EXPECT_THAT(FormatTime(t),
              ::testing::MatchesRegex("2024-05-0[12] [0-9:]+\\.250"));
}

TEST(JobctlFormatTest, RunTimeOfAJob) {
  v1::Job job;
  EXPECT_EQ(RunTime(job), "-");  // Not started.
  *job.mutable_start_time() = TimeUtil::SecondsToTimestamp(1000);
  *job.mutable_finish_time() = TimeUtil::MillisecondsToTimestamp(1001500);
  EXPECT_EQ(RunTime(job), "1.50s");
  job.clear_finish_time();  // Still running: start..now, years by now.
  EXPECT_THAT(RunTime(job), ::testing::MatchesRegex("[0-9]+h.*"));
}

TEST(JobctlFormatTest, TablesAlignColumnsAndTrimTheLastOne) {
  EXPECT_EQ(FormatTable({}), "");
  EXPECT_EQ(FormatTable({{"ID", "STATE", "RESULT"},
                         {"12", "SUCCEEDED", "5"},
                         {"7", "FAILED", ""}}),
            "ID  STATE      RESULT\n"
            "12  SUCCEEDED  5\n"
            "7   FAILED\n");
  // Rows of different lengths; an empty middle cell keeps its column.
  EXPECT_EQ(FormatTable({{"key:", "value"}, {"longer key:", "", "x"}, {"k"}}),
            "key:         value\n"
            "longer key:         x\n"
            "k\n");
  ::testing::internal::CaptureStdout();
  PrintTable({{"a", "b"}});
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "a  b\n");
}

TEST(JobctlFormatTest, JobEndLines) {
  v1::Job job;
  job.set_id("9");
  job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(JobEndLine(job), "9  RUNNING");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  *job.mutable_result()->mutable_value() = client::ToValue(300);
  EXPECT_EQ(JobEndLine(job), "9  SUCCEEDED  300");
  job.set_state(v1::JOB_STATE_CANCELLED);
  job.mutable_error()->set_reason(v1::ERROR_REASON_CANCELLED);
  job.mutable_error()->set_message("by request");
  EXPECT_EQ(JobEndLine(job), "9  CANCELLED  CANCELLED: by request");
}

TEST(JobctlFormatTest, EventLines) {
  v1::JobEvent e;
  e.set_sequence(41);
  e.set_job_id("3");
  e.set_type(v1::EVENT_TYPE_ACCEPTED);
  e.set_task("echo");
  EXPECT_EQ(EventLine(e), "41  3  ACCEPTED  task=echo executor=-");
  e.set_duplicate(true);
  e.set_executor(v1::EXECUTOR_THREAD);
  EXPECT_EQ(EventLine(e),
            "41  3  ACCEPTED  task=echo executor=thread duplicate");
  e.set_type(v1::EVENT_TYPE_STARTED);
  EXPECT_EQ(EventLine(e), "41  3  STARTED  executor=thread");
  e.set_type(v1::EVENT_TYPE_PROGRESS);
  e.mutable_progress()->set_fraction(0.5);
  e.mutable_progress()->set_message("half");
  EXPECT_EQ(EventLine(e), "41  3  PROGRESS  50.0% half");
  e.set_type(v1::EVENT_TYPE_SUCCEEDED);
  *e.mutable_result()->mutable_value() = client::ToValue("ok");
  EXPECT_EQ(EventLine(e), "41  3  SUCCEEDED  \"ok\"");
  e.set_type(v1::EVENT_TYPE_FAILED);
  e.mutable_error()->set_reason(v1::ERROR_REASON_TIMEOUT);
  e.mutable_error()->set_message("after 1s");
  EXPECT_EQ(EventLine(e), "41  3  FAILED  TIMEOUT: after 1s");
}

TEST(JobctlFormatTest, CallbackStatusText) {
  v1::CallbackStatus c;
  c.set_state(v1::CALLBACK_STATE_DELIVERED);
  c.set_attempts(1);
  EXPECT_EQ(CallbackText(c), "delivered (1 attempt)");
  c.set_state(v1::CALLBACK_STATE_PENDING);
  c.set_attempts(3);
  c.set_last_error("HTTP 503");
  EXPECT_EQ(CallbackText(c), "pending (3 attempts; last: HTTP 503)");
  c.set_state(v1::CALLBACK_STATE_WAITING);
  EXPECT_EQ(CallbackText(c), "waiting for the job to end");
}

}  // namespace
}  // namespace jobd::jobctl
