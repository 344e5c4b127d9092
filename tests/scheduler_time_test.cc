// Unit tests: the Scheduler's jobs over time on a ManualClock (scheduler_
// time.cc): delayed jobs WAITING until their time and cancellable, retries
// with backoff, RETRYING events and their history, start and total
// deadlines, and WAITING jobs across a restart (a real journal).
#include <functional>
#include <memory>
#include <vector>

#include "server/jobs/proto_time.h"
#include "server/scheduler/retry_policy.h"
#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class SchedulerTimeTest : public SchedulerFixture {
 protected:
  static void Retry(v1::JobSpec& spec, uint32_t attempts,
                    absl::Duration initial = absl::Seconds(1),
                    absl::Duration cap = absl::Seconds(8)) {
    v1::RetryPolicy& p = *spec.mutable_retry();
    p.set_max_attempts(attempts);
    *p.mutable_initial_backoff() = ToProtoDuration(initial);
    p.set_backoff_multiplier(2);
    *p.mutable_max_backoff() = ToProtoDuration(cap);
  }
  void Fail(uint64_t id, v1::ErrorReason reason = v1::ERROR_REASON_TASK_ERROR) {
    executor().Fail(id, absl::InternalError("boom"), reason);
  }
};

TEST_F(SchedulerTimeTest, ADelayedJobWaitsUntilItsTimeThenRuns) {
  const Admission a = SubmitWith([](v1::JobSpec& s) {
    *s.mutable_delay() = ToProtoDuration(absl::Minutes(10));
  });
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(State(a.job_id), v1::JOB_STATE_WAITING);
  EXPECT_EQ(FromProtoTime(scheduler_->GetJob(a.job_id)->next_attempt_time()),
            clock_.Now() + absl::Minutes(10));
  EXPECT_EQ(scheduler_->GetStats().waiting(), 1u);
  EXPECT_EQ(scheduler_->GetStats().executors(v1::EXECUTOR_THREAD).queued(), 0u);
  clock_.Advance(absl::Minutes(10) - absl::Milliseconds(1));
  EXPECT_THAT(executor().running(), IsEmpty());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(executor().running(), ElementsAre(a.job_id));
  EXPECT_EQ(scheduler_->GetStats().waiting(), 0u);
  Done(a.job_id);
  EXPECT_THAT(sink_->TypesOf(a.job_id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_SUCCEEDED));
}

TEST_F(SchedulerTimeTest, JobsWaitingForDifferentTimesRunInTimeOrder) {
  std::vector<uint64_t> ids;
  for (int minutes : {30, 10, 20}) {
    ids.push_back(SubmitWith([&](v1::JobSpec& s) {
                    *s.mutable_not_before() =
                        ToProtoTime(clock_.Now() + absl::Minutes(minutes));
                  }).job_id);
  }
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(executor().running(), ElementsAre(ids[1]));
  Done(ids[1]);
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(executor().running(), ElementsAre(ids[2]));
  Done(ids[2]);
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(executor().running(), ElementsAre(ids[0]));
}

TEST_F(SchedulerTimeTest, AWaitingJobCanBeCancelledAndNeverRuns) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        *s.mutable_delay() = ToProtoDuration(absl::Minutes(1));
                      }).job_id;
  auto state = scheduler_->Cancel(id);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->first, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(scheduler_->GetStats().waiting(), 0u);
  clock_.Advance(absl::Minutes(2));
  EXPECT_THAT(executor().starts(), IsEmpty());
  EXPECT_EQ(State(id), v1::JOB_STATE_CANCELLED);
}

TEST_F(SchedulerTimeTest, AFailedAttemptRetriesAfterItsBackoffWithHistory) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) { Retry(s, 3); }).job_id;
  ASSERT_THAT(executor().running(), ElementsAre(id));
  Fail(id);
  // Not terminal: RETRYING, WAITING with its next time within the ceiling.
  v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_WAITING);
  const absl::Time next = FromProtoTime(job.next_attempt_time());
  EXPECT_GE(next, clock_.Now());
  EXPECT_LE(next, clock_.Now() + absl::Seconds(1));
  ASSERT_EQ(job.history_size(), 1);
  EXPECT_EQ(job.history(0).attempt(), 1u);
  EXPECT_EQ(job.history(0).error().message(), "boom");
  const std::vector<Event> events = sink_->EventsOf(id);
  ASSERT_EQ(events.back().type, v1::EVENT_TYPE_RETRYING);
  ASSERT_NE(events.back().retry(), nullptr);
  EXPECT_EQ(events.back().retry()->attempt, 1u);
  EXPECT_EQ(absl::Time(events.back().retry()->next_time), next);
  EXPECT_EQ(events.back().retry()->error.reason(), v1::ERROR_REASON_TASK_ERROR);
  clock_.Advance(next - clock_.Now());
  ASSERT_THAT(executor().running(), ElementsAre(id));
  Done(id);
  job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.attempts(), 2u);
  EXPECT_EQ(job.history_size(), 1);
  EXPECT_EQ(scheduler_->GetStats().retried(), 1u);
  // One terminal event only.
  int terminal = 0;
  for (v1::EventType t : sink_->TypesOf(id)) terminal += IsTerminal(t);
  EXPECT_EQ(terminal, 1);
}

TEST_F(SchedulerTimeTest, RetriesExhaustedEndWithTheWholeHistory) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        Retry(s, 3, absl::Seconds(1), absl::Seconds(1));
                      }).job_id;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ASSERT_THAT(executor().running(), ElementsAre(id)) << attempt;
    Fail(id);
    clock_.Advance(absl::Seconds(1));  // The ceiling: always due by then.
  }
  const v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.attempts(), 3u);
  ASSERT_EQ(job.history_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(job.history(i).attempt(), i + 1u);
  EXPECT_THAT(sink_->TypesOf(id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_RETRYING, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_RETRYING, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_FAILED));
}

TEST_F(SchedulerTimeTest, AReasonNotRetriedEndsTheJobAtOnce) {
  const uint64_t id =
      SubmitWith([](v1::JobSpec& s) {
        Retry(s, 3);
        s.mutable_retry()->add_retry_on(v1::ERROR_REASON_WORKER_CRASHED);
      }).job_id;
  Fail(id, v1::ERROR_REASON_TASK_ERROR);
  EXPECT_EQ(State(id), v1::JOB_STATE_FAILED);
}

TEST_F(SchedulerTimeTest, ATimeoutIsRetried) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        Retry(s, 2, absl::ZeroDuration(), absl::ZeroDuration());
                        *s.mutable_timeout() =
                            ToProtoDuration(absl::Seconds(5));
                      }).job_id;
  clock_.Advance(absl::Seconds(5));
  // Stopped and retried (no backoff), but not before the stopped run has
  // returned: never two runs of one job at once.
  v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_WAITING);
  ASSERT_EQ(job.history_size(), 1);
  EXPECT_EQ(job.history(0).error().reason(), v1::ERROR_REASON_TIMEOUT);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(executor().starts().size(), 1u);
  // What it writes while it is stopped is kept (its first write, too).
  scheduler_->listener_for(v1::EXECUTOR_THREAD)
      .OnJobOutput(id, v1::OUTPUT_STREAM_STDERR, "stopping\n");
  // It returns late (what it says is dropped); the next attempt starts.
  executor().Fail(id, absl::CancelledError("stopped"),
                  v1::ERROR_REASON_CANCELLED);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(executor().starts().size(), 2u);
  job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.history_size(), 1);
  const absl::StatusOr<OutputRead> output =
      scheduler_->ReadOutput(id, "", 0, 1 << 20);
  ASSERT_TRUE(output.ok());
  ASSERT_EQ(output->pieces.size(), 1u);
  EXPECT_EQ(output->pieces[0].data, "stopping\n");
}

TEST_F(SchedulerTimeTest, AJobNotStartedByItsStartDeadlineExpires) {
  Build({}, 1);
  const uint64_t blocker = Submit(ok_task_).job_id;  // Holds the one slot.
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        *s.mutable_start_deadline() =
                            ToProtoDuration(absl::Seconds(30));
                      }).job_id;
  clock_.Advance(absl::Seconds(30));
  const v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().reason(), v1::ERROR_REASON_EXPIRED);
  EXPECT_THAT(job.error().message(), HasSubstr("start_deadline"));
  Done(blocker);
  EXPECT_EQ(executor().starts().size(), 1u);  // It never ran.
  EXPECT_EQ(scheduler_->GetStats().expired(), 1u);
}

TEST_F(SchedulerTimeTest, AStartedJobIsNotExpiredByItsStartDeadline) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        *s.mutable_start_deadline() =
                            ToProtoDuration(absl::Seconds(30));
                      }).job_id;
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(State(id), v1::JOB_STATE_RUNNING);
}

TEST_F(SchedulerTimeTest, TheTotalDeadlineStopsARunAndFurtherAttempts) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        Retry(s, 5, absl::Seconds(1), absl::Seconds(1));
                        *s.mutable_total_deadline() =
                            ToProtoDuration(absl::Seconds(10));
                      }).job_id;
  Fail(id);
  clock_.Advance(absl::Seconds(1));
  ASSERT_EQ(State(id), v1::JOB_STATE_RUNNING);
  clock_.Advance(absl::Seconds(9));  // 10 s after it was due: stopped.
  const v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().reason(), v1::ERROR_REASON_DEADLINE_EXCEEDED);
  EXPECT_EQ(job.attempts(), 2u);
}

TEST_F(SchedulerTimeTest, NoRetryIsScheduledPastTheTotalDeadline) {
  const uint64_t id = SubmitWith([](v1::JobSpec& s) {
                        Retry(s, 5, absl::Seconds(60), absl::Seconds(60));
                        *s.mutable_total_deadline() =
                            ToProtoDuration(absl::Seconds(1));
                      }).job_id;
  // The backoff's ceiling is 60 s: a jittered one may still fit 1 s, so
  // fail until it ends; it never waits past the deadline.
  for (int i = 0; i < 5 && State(id) != v1::JOB_STATE_FAILED; ++i) {
    if (State(id) == v1::JOB_STATE_WAITING) {
      const v1::Job job = *scheduler_->GetJob(id);
      EXPECT_LT(FromProtoTime(job.next_attempt_time()),
                absl::FromUnixSeconds(1767225600) + absl::Seconds(1));
      clock_.Advance(FromProtoTime(job.next_attempt_time()) - clock_.Now());
    }
    if (State(id) == v1::JOB_STATE_RUNNING) Fail(id);
  }
  EXPECT_EQ(State(id), v1::JOB_STATE_FAILED);
}

TEST_F(SchedulerTimeTest, WaitingJobsSurviveARestartWithTimeAndHistory) {
  BuildWithJournal(1);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(Def("ok")).ok());
  const uint64_t delayed = SubmitWith([](v1::JobSpec& s) {
                             *s.mutable_delay() =
                                 ToProtoDuration(absl::Minutes(10));
                           }).job_id;
  const uint64_t retried = SubmitWith([](v1::JobSpec& s) {
                             Retry(s, 3, absl::Minutes(5), absl::Minutes(5));
                           }).job_id;
  AwaitStart(retried);
  Fail(retried);
  const absl::Time next =
      FromProtoTime(scheduler_->GetJob(retried)->next_attempt_time());
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  // A new daemon on the same journal, as after kill -9.
  scheduler_.reset();
  const std::string path = journal_dir_ + "/jobd.db";
  journal_.reset();
  Recovered recovered;
  auto journal = Journal::Open({.path = path}, &recovered);
  ASSERT_TRUE(journal.ok()) << journal.status();
  journal_ = *std::move(journal);
  Build({}, 1);
  const RestoreSummary s = scheduler_->Restore(std::move(recovered), registry);
  EXPECT_EQ(s.waiting, 2u);
  v1::Job job = *scheduler_->GetJob(retried);
  EXPECT_EQ(job.state(), v1::JOB_STATE_WAITING);
  EXPECT_EQ(FromProtoTime(job.next_attempt_time()), next);
  ASSERT_EQ(job.history_size(), 1);
  EXPECT_EQ(job.history(0).error().message(), "boom");
  EXPECT_EQ(State(delayed), v1::JOB_STATE_WAITING);
  clock_.Advance(absl::Minutes(10));  // Both due: the earlier first.
  AwaitStart(retried);
  Done(retried);
  AwaitStart(delayed);
}

TEST_F(SchedulerTimeTest, AJobDueWhileJobdWasDownRunsAtStartOrExpires) {
  BuildWithJournal(2);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(Def("ok")).ok());
  const uint64_t due = SubmitWith([](v1::JobSpec& s) {
                         *s.mutable_delay() = ToProtoDuration(absl::Minutes(1));
                       }).job_id;
  const uint64_t expiring =
      SubmitWith([](v1::JobSpec& s) {
        *s.mutable_delay() = ToProtoDuration(absl::Minutes(1));
        *s.mutable_start_deadline() = ToProtoDuration(absl::Minutes(1));
      }).job_id;
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  scheduler_.reset();
  const std::string path = journal_dir_ + "/jobd.db";
  journal_.reset();
  clock_.Advance(absl::Minutes(5));  // Down meanwhile.
  Recovered recovered;
  auto journal = Journal::Open({.path = path}, &recovered);
  ASSERT_TRUE(journal.ok()) << journal.status();
  journal_ = *std::move(journal);
  Build({}, 2);
  const RestoreSummary s = scheduler_->Restore(std::move(recovered), registry);
  EXPECT_EQ(s.expired, 1u);
  EXPECT_EQ(s.queued, 1u);
  AwaitStart(due);
  EXPECT_EQ(scheduler_->GetJob(expiring)->error().reason(),
            v1::ERROR_REASON_EXPIRED);
}

}  // namespace
}  // namespace jobd
