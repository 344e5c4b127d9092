// Integration tests of jobs over time against the real daemon (the
// binary): retries until success and retries exhausted with the whole
// history, a worker crash retried on the process pool, one terminal event
// per job on its Submit stream, a delayed job across kill -9, the cancel of
// a WAITING job, a job expired before it started never runs, refusals
// naming the field, and jobctl's --delay/--retries with `jobctl get`.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/journaled_daemon.h"

namespace jobd {
namespace {

using testing::Shell;

using testing::Deadline;
using ::testing::HasSubstr;
using testing::StreamResult;
using testing::SubmitAll;

using RetryTest = testing::JournaledDaemonTest;

google::protobuf::Duration Ms(int64_t ms) {
  google::protobuf::Duration d;
  d.set_seconds(ms / 1000);
  d.set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
  return d;
}

void Retries(v1::JobSpec& s, uint32_t attempts, int64_t backoff_ms = 10) {
  s.mutable_retry()->set_max_attempts(attempts);
  *s.mutable_retry()->mutable_initial_backoff() = Ms(backoff_ms);
  *s.mutable_retry()->mutable_max_backoff() = Ms(backoff_ms);
}

int Count(const StreamResult& r, v1::EventType type) {
  int n = 0;
  for (const v1::JobEvent& e : r.events) n += e.type() == type;
  return n;
}

TEST_F(RetryTest, RetriesUntilSuccessWithOneTerminalEvent) {
  StartDaemon({"--exec-allow", "/bin/sh"});
  // Fails twice, then succeeds: its count of runs is in a file.
  const std::string count = dir_ + "/runs";
  v1::JobSpec s = Shell(absl::StrCat("n=$(cat ", count,
                                     " 2>/dev/null || "
                                     "echo 0); n=$((n+1)); echo $n > ",
                                     count, "; [ $n -ge 3 ]"));
  Retries(s, 5);
  const StreamResult r = SubmitAll(*stub_, {s});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(Count(r, v1::EVENT_TYPE_RETRYING), 2);
  for (const v1::JobEvent& e : r.events) {
    if (e.type() != v1::EVENT_TYPE_RETRYING) continue;
    EXPECT_TRUE(e.has_next_attempt_time());
    EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TASK_ERROR);
  }
  absl::StatusOr<v1::Job> job = GetJob(r.Terminal()[0].job_id());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->attempts(), 3u);
  ASSERT_EQ(job->history_size(), 2);
  EXPECT_EQ(job->history(0).attempt(), 1u);
  EXPECT_EQ(job->history(1).attempt(), 2u);
}

TEST_F(RetryTest, RetriesExhaustedKeepTheWholeHistory) {
  StartDaemon();
  v1::JobSpec s = testing::Spec("fail");
  (*s.mutable_kwargs()->mutable_fields())["message"].set_string_value("nope");
  Retries(s, 3);
  const StreamResult r = SubmitAll(*stub_, {s});
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_FAILED);
  absl::StatusOr<v1::Job> job = GetJob(r.Terminal()[0].job_id());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->attempts(), 3u);
  ASSERT_EQ(job->history_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(job->history(i).attempt(), i + 1u);
    EXPECT_THAT(job->history(i).error().message(), HasSubstr("nope"));
    EXPECT_TRUE(job->history(i).has_start_time());
    EXPECT_TRUE(job->history(i).has_finish_time());
  }
}

TEST_F(RetryTest, AWorkerCrashIsRetriedOnTheProcessPool) {
  StartDaemon({"--process-workers", "1"});
  v1::JobSpec s;
  s.set_task("crash");
  s.set_kind(v1::JOB_KIND_CPU_BOUND);
  s.set_executor(v1::EXECUTOR_PROCESS);
  Retries(s, 2);
  s.mutable_retry()->add_retry_on(v1::ERROR_REASON_WORKER_CRASHED);
  const StreamResult r = SubmitAll(*stub_, {s});
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_EQ(r.Terminal()[0].error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(Count(r, v1::EVENT_TYPE_RETRYING), 1);
  absl::StatusOr<v1::Job> job = GetJob(r.Terminal()[0].job_id());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->attempts(), 2u);
  ASSERT_EQ(job->history_size(), 2);
  EXPECT_EQ(job->history(0).error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
  // The pool replaced the worker each time and still serves.
  EXPECT_EQ(testing::RunOne(*stub_, testing::Spec("echo", {1})).type(),
            v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(RetryTest, ADelayedJobRunsAfterKillNine) {
  StartDaemon({"--exec-allow", "/bin/sh"});
  const std::string mark = dir_ + "/ran";
  v1::JobSpec s = Shell("echo ran > " + mark);
  *s.mutable_delay() = Ms(1500);
  std::string id;
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    auto stream = stub_->Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf({s})));
    v1::SubmitResponse resp;
    while (id.empty() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) id = e.job_id();
      }
    }
    ASSERT_FALSE(id.empty());
    absl::StatusOr<v1::Job> waiting = GetJob(id);
    ASSERT_TRUE(waiting.ok());
    EXPECT_EQ(waiting->state(), v1::JOB_STATE_WAITING);
    ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
    ctx.TryCancel();
  }
  EXPECT_FALSE(std::filesystem::exists(mark));
  StartDaemon({"--exec-allow", "/bin/sh"});
  absl::StatusOr<v1::Job> job = GetJob(id, absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED) << job->error().message();
  EXPECT_GE(
      job->start_time().seconds() * 1000 + job->start_time().nanos() / 1000000,
      job->create_time().seconds() * 1000 +
          job->create_time().nanos() / 1000000 + 1500);
  EXPECT_TRUE(std::filesystem::exists(mark));
}

TEST_F(RetryTest, AWaitingJobIsListedAndCancelledAndNeverRuns) {
  StartDaemon({"--exec-allow", "/bin/sh"});
  const std::string mark = dir_ + "/ran";
  v1::JobSpec s = Shell("echo ran > " + mark);
  *s.mutable_delay() = Ms(1000);
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  ASSERT_TRUE(stream->Write(testing::SubmitRequestOf({s})));
  ASSERT_TRUE(stream->WritesDone());
  std::string id;
  std::vector<v1::JobEvent> events;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      events.push_back(e);
      if (e.type() != v1::EVENT_TYPE_ACCEPTED) continue;
      id = e.job_id();
      v1::ListJobsRequest list;
      list.add_states(v1::JOB_STATE_WAITING);
      v1::ListJobsResponse listed;
      grpc::ClientContext lc;
      ASSERT_TRUE(stub_->ListJobs(&lc, list, &listed).ok());
      ASSERT_EQ(listed.jobs_size(), 1);
      EXPECT_EQ(listed.jobs(0).id(), id);
      grpc::ClientContext cc;
      v1::CancelJobRequest cancel;
      cancel.set_job_id(id);
      v1::CancelJobResponse cancelled;
      ASSERT_TRUE(stub_->CancelJob(&cc, cancel, &cancelled).ok());
      EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
    }
  }
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(events.back().type(), v1::EVENT_TYPE_CANCELLED);
  // Past its time: it never ran.
  absl::SleepFor(absl::Milliseconds(1500));  // Nothing to await: absence.
  EXPECT_FALSE(std::filesystem::exists(mark));
  EXPECT_EQ(GetJob(id)->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(RetryTest, AJobNotStartedByItsStartDeadlineNeverRuns) {
  StartDaemon({"--exec-allow", "/bin/sh", "--reactor-max-jobs", "1"});
  const std::string mark = dir_ + "/ran";
  v1::JobSpec blocker = Shell("sleep 2");
  v1::JobSpec late = Shell("echo ran > " + mark);
  *late.mutable_start_deadline() = Ms(300);
  const StreamResult r = SubmitAll(*stub_, {blocker, late});
  ASSERT_EQ(r.Terminal().size(), 2u);
  for (const v1::JobEvent& e : r.Terminal()) {
    if (e.client_tag() != 2) continue;
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
    EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_EXPIRED);
    EXPECT_THAT(e.error().message(), HasSubstr("start_deadline"));
  }
  EXPECT_FALSE(std::filesystem::exists(mark));
}

TEST_F(RetryTest, BadTimingIsRefusedNamingTheField) {
  StartDaemon({"--retry-max-attempts-limit", "5", "--max-delay", "1h"});
  std::vector<v1::JobSpec> specs(5, testing::Spec("echo", {1}));
  *specs[0].mutable_delay() = Ms(0);
  specs[1].mutable_delay()->set_seconds(-5);
  specs[2].mutable_delay()->set_seconds(7200);
  specs[3].mutable_retry()->set_max_attempts(6);
  specs[4].mutable_retry()->add_retry_on(v1::ERROR_REASON_CANCELLED);
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_EQ(r.Terminal().size(), 5u);
  std::vector<std::string> messages(5);
  for (const v1::JobEvent& e : r.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
    messages.at(e.client_tag() - 1) = e.error().message();
  }
  EXPECT_THAT(messages[0], HasSubstr("spec.delay: must be positive"));
  EXPECT_THAT(messages[1], HasSubstr("spec.delay: must not be negative"));
  EXPECT_THAT(messages[2], HasSubstr("max-delay"));
  EXPECT_THAT(messages[3], HasSubstr("spec.retry.max_attempts"));
  EXPECT_THAT(messages[4], HasSubstr("spec.retry.retry_on[0]"));
  // Nothing else was affected.
  EXPECT_EQ(testing::RunOne(*stub_, testing::Spec("echo", {1})).type(),
            v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(RetryTest, JobctlSubmitsDelayedAndRetriedJobsAndShowsTheHistory) {
  StartDaemon();
  const std::string address = daemon_->unix_address();
  testing::CommandResult r =
      testing::RunCommand({testing::JobctlPath(), "--address", address,
                           "submit", "echo", "1", "--delay", "10m"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string delayed = r.out.substr(0, r.out.find('\n'));
  r = testing::RunCommand(
      {testing::JobctlPath(), "--address", address, "get", delayed});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("WAITING"));
  EXPECT_THAT(r.out, HasSubstr("next attempt:"));
  r = testing::RunCommand({testing::JobctlPath(), "--address", address,
                           "submit", "echo", "1", "--at",
                           "2027-01-01T09:00:00Z", "--delay", "1m"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("not both"));
  r = testing::RunCommand({testing::JobctlPath(), "--address", address,
                           "submit", "fail", "--retries", "2",
                           "--retry-backoff", "10ms"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string failed = r.out.substr(0, r.out.find('\n'));
  r = testing::RunCommand({testing::JobctlPath(), "--address", address, "get",
                           failed, "--wait", "20s"});
  EXPECT_EQ(r.exit_code, 1) << r.err;  // Ended, FAILED.
  EXPECT_THAT(r.out, HasSubstr("FAILED"));
  EXPECT_THAT(r.out, HasSubstr("attempt 1:"));
  EXPECT_THAT(r.out, HasSubstr("attempt 3:"));
}

}  // namespace
}  // namespace jobd
