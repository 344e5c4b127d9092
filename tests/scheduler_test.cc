// Unit tests: the Scheduler's state machine (scheduler.cc): states and
// events, admission, idempotency, cancellation, timeouts, waiters, drain
// and shutdown, and what tasks return. The fake executor starts and ends
// jobs as each test says, on its thread; time is a ManualClock.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "tests/scheduler_fixture.h"
#include "workers/threads/thread_pool.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using SchedulerTest = SchedulerFixture;

TEST_F(SchedulerTest, RunsAJobThroughItsStates) {
  const Admission a = Submit(ok_task_);
  ASSERT_TRUE(a.status.ok());
  EXPECT_THAT(executor().running(), ElementsAre(a.job_id));
  Done(a.job_id);
  const Event end = sink_->WaitEnd(a.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(end.end()->result().value().string_value(), "done");
  EXPECT_THAT(sink_->TypesOf(a.job_id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_SUCCEEDED));
  auto job = scheduler_->GetJob(a.job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job->executor(), v1::EXECUTOR_THREAD);
  EXPECT_TRUE(job->has_finish_time());
  // Sequences are strictly increasing.
  const auto seqs = sink_->Sequences();
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_LT(seqs[i - 1], seqs[i]);
}

// The spec a client reads back is the one it sent, task name included,
// and so is the one the executor and the journal get.
TEST_F(SchedulerTest, TheSpecKeepsItsTaskNameEverywhere) {
  const Admission a = Submit(ok_task_);
  ASSERT_TRUE(a.status.ok());
  EXPECT_EQ(scheduler_->GetJob(a.job_id)->spec().task(), "ok");
  EXPECT_EQ(executor().run(a.job_id)->spec->task(), "ok");
  const std::vector<v1::Job> page = scheduler_->ListJobs({});
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].spec().task(), "ok");
}

TEST_F(SchedulerTest, AFailedRunFailsOnlyItsJob) {
  const Admission bad = Submit(ok_task_);
  const Admission good = Submit(ok_task_);
  executor().Fail(bad.job_id,
                  absl::InternalError("task 'ok' threw an exception: boom"));
  const Event end = sink_->WaitEnd(bad.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_THAT(end.end()->error().message(),
              HasSubstr("threw an exception: boom"));
  Done(good.job_id);
  EXPECT_EQ(sink_->WaitEnd(good.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
}

// The real thread pool under the scheduler: a task that throws fails its
// own job (TASK_ERROR, the exception named) and the next job still runs.
TEST(SchedulerThreadPoolTest, ATaskThatThrowsFailsOnlyItsJob) {
  RealClock clock;
  Scheduler scheduler({}, clock);
  scheduler.AddExecutor(std::make_unique<ThreadPoolExecutor>(
      1, scheduler.listener_for(v1::EXECUTOR_THREAD)));
  const TaskDef thrower = {
      .name = "thrower",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
        throw std::runtime_error("boom");
      }};
  const TaskDef ok = {.name = "ok",
                      .default_kind = v1::JOB_KIND_IO_BOUND,
                      .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
                        return TaskOutput{};
                      }};
  auto sink = std::make_shared<RecordingSink>();
  std::vector<NewJob> jobs(2);
  for (int i = 0; i < 2; ++i) {
    const TaskDef& task = i == 0 ? thrower : ok;
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    jobs[i].task = &task;
    jobs[i].args = *TaskRegistry::Bind(task, spec);
    jobs[i].spec = std::move(spec);
    jobs[i].tag = i + 1;
  }
  std::vector<Admission> out;
  scheduler.Submit(jobs, Subscriber{sink, 0, kAllEvents}, out);
  ASSERT_EQ(out.size(), 2u);
  const Event end = sink->WaitEnd(out[0].job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_FAILED);
  ASSERT_NE(end.end(), nullptr);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_THAT(end.end()->error().message(),
              HasSubstr("threw an exception: boom"));
  EXPECT_EQ(sink->WaitEnd(out[1].job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_TRUE(scheduler.StopExecutors(absl::Now() + absl::Seconds(10)));
}

TEST_F(SchedulerTest, RejectsWhenTheQueueIsFull) {
  Build({.max_queued = 2}, 1);
  // Starts at once in the free slot: never counts as queued.
  EXPECT_TRUE(Submit(gate_task_).status.ok());
  EXPECT_TRUE(Submit(ok_task_).status.ok());
  EXPECT_TRUE(Submit(ok_task_).status.ok());
  const Admission full = Submit(ok_task_);
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status.message(), HasSubstr("limit is 2 (max_queued)"));
  EXPECT_EQ(scheduler_->GetStats().rejected(), 1u);
}

TEST_F(SchedulerTest, CancelQueuedIsImmediate) {
  Submit(gate_task_);
  const Admission queued = Submit(ok_task_);
  auto r = scheduler_->Cancel(queued.job_id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(r->second);
  EXPECT_EQ(sink_->WaitEnd(queued.job_id).type, v1::EVENT_TYPE_CANCELLED);
  EXPECT_THAT(sink_->TypesOf(queued.job_id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_CANCELLED));
  // A second cancel reports the end and changes nothing.
  r = scheduler_->Cancel(queued.job_id);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->second);
  EXPECT_EQ(scheduler_->Cancel(999999).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(executor().cancelled().empty());  // It never ran.
}

TEST_F(SchedulerTest, CancelWithNothingRetained) {
  Build({.max_retained = 0}, 1);
  const Admission a = Submit(gate_task_);
  auto r = scheduler_->Cancel(a.job_id);  // The job is evicted as it ends.
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(scheduler_->GetJob(a.job_id).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, CancelRunningSetsTheTokenAndEndsAtOnce) {
  const Admission running = Submit(gate_task_);
  const Admission next = Submit(ok_task_);
  sink_->WaitFor(running.job_id, v1::EVENT_TYPE_STARTED);
  ASSERT_TRUE(scheduler_->Cancel(running.job_id).ok());
  const Event end = sink_->WaitEnd(running.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_CANCELLED);
  // The executor was told, and the run's token is set.
  EXPECT_THAT(executor().cancelled(), ElementsAre(running.job_id));
  EXPECT_TRUE(executor().run(running.job_id)->cancel->cancelled());
  // The slot stays busy until the task returns; then the queue moves.
  EXPECT_THAT(executor().running(), ElementsAre(running.job_id));
  executor().Fail(running.job_id, absl::CancelledError("gate cancelled"));
  Done(next.job_id);
  EXPECT_EQ(sink_->WaitEnd(next.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  // What it returned late changed nothing.
  EXPECT_EQ(scheduler_->GetJob(running.job_id)->error().reason(),
            v1::ERROR_REASON_CANCELLED);
}

TEST_F(SchedulerTest, TimeoutFailsTheJobEvenIfTheTaskIgnoresIt) {
  const Admission a = Submit(ok_task_, 0, "", absl::Milliseconds(50));
  const Admission queued = Submit(ok_task_);
  clock_.Advance(absl::Milliseconds(49));
  EXPECT_THAT(sink_->TypesOf(a.job_id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED));
  clock_.Advance(absl::Milliseconds(1));
  const Event end = sink_->WaitEnd(a.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_THAT(end.end()->error().message(), HasSubstr("timeout of 50ms"));
  EXPECT_EQ(executor().run(a.job_id)->deadline,
            clock_.Now());  // Counted from its start.
  // The slot stays busy until the task returns; then the queue moves.
  auto stats = scheduler_->GetStats();
  EXPECT_EQ(stats.executors(1).busy(), 1u);
  EXPECT_THAT(executor().running(), ElementsAre(a.job_id));
  Done(a.job_id);  // Late: dropped.
  Done(queued.job_id);
  EXPECT_EQ(sink_->WaitEnd(queued.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetJob(a.job_id)->state(), v1::JOB_STATE_FAILED);
}

TEST_F(SchedulerTest, AJobThatEndsInTimeCancelsItsTimeout) {
  const Admission a = Submit(ok_task_, 0, "", absl::Milliseconds(50));
  Done(a.job_id);
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(sink_->TypesOf(a.job_id),
              ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED,
                          v1::EVENT_TYPE_SUCCEEDED));
}

TEST_F(SchedulerTest, IdempotencyKeyReturnsTheSameJob) {
  const Admission a = Submit(ok_task_, 0, "key-1");
  Done(a.job_id);
  sink_->WaitEnd(a.job_id);
  const Admission b = Submit(ok_task_, 0, "key-1");
  EXPECT_EQ(a.job_id, b.job_id);
  EXPECT_TRUE(b.duplicate);
  EXPECT_EQ(scheduler_->GetStats().accepted(), 1u);
  const Admission c = Submit(ok_task_, 0, "key-2");
  EXPECT_NE(c.job_id, a.job_id);
}

// A duplicate's caller hears ACCEPTED (marked duplicate) and, once the job
// ends, its end; it is subscribed to it meanwhile.
TEST_F(SchedulerTest, ADuplicateSubscribesItsCallerToTheJob) {
  const Admission a = Submit(ok_task_, 0, "key");
  const Admission b = Submit(ok_task_, 0, "key");
  ASSERT_TRUE(b.duplicate);
  std::vector<Event> events = sink_->EventsOf(a.job_id);
  ASSERT_EQ(events.size(), 3u);  // ACCEPTED, STARTED, ACCEPTED again.
  EXPECT_TRUE(events[2].duplicate);
  EXPECT_EQ(events[2].task(), &ok_task_);
  Done(a.job_id);
  EXPECT_THAT(sink_->Tags(), ElementsAre(1, 1, 2, 1, 2));  // End to both.
}

TEST_F(SchedulerTest, WaitJobAnswersAtTheEndOrAtTheDeadline) {
  const Admission a = Submit(gate_task_);
  absl::Notification timed_out;
  v1::JobState seen = v1::JOB_STATE_UNSPECIFIED;
  scheduler_->WaitJob(a.job_id, clock_.Now() + absl::Milliseconds(20),
                      [&](absl::StatusOr<v1::Job> job) {
                        seen = job->state();
                        timed_out.Notify();
                      });
  clock_.Advance(absl::Milliseconds(19));
  EXPECT_FALSE(timed_out.HasBeenNotified());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(timed_out.HasBeenNotified());
  EXPECT_EQ(seen, v1::JOB_STATE_RUNNING);
  absl::Notification ended;
  scheduler_->WaitJob(a.job_id, clock_.Now() + absl::Hours(1),
                      [&](absl::StatusOr<v1::Job> job) {
                        seen = job->state();
                        ended.Notify();
                      });
  Done(a.job_id);
  ASSERT_TRUE(ended.HasBeenNotified());
  EXPECT_EQ(seen, v1::JOB_STATE_SUCCEEDED);
  // Ended: a wait answers at once; an unknown job is NotFound.
  absl::StatusOr<v1::Job> at_once;
  scheduler_->WaitJob(a.job_id, clock_.Now() + absl::Hours(1),
                      [&](absl::StatusOr<v1::Job> job) { at_once = job; });
  EXPECT_EQ(at_once->state(), v1::JOB_STATE_SUCCEEDED);
  scheduler_->WaitJob(424242, clock_.Now() + absl::Hours(1),
                      [&](absl::StatusOr<v1::Job> job) { at_once = job; });
  EXPECT_EQ(at_once.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, ProgressIsSpacedButTheLatestIsKept) {
  const Admission a = Submit(ok_task_);
  executor().Progress(a.job_id, 0.1, "first");
  executor().Progress(a.job_id, 0.2, "too soon");
  EXPECT_EQ(scheduler_->GetJob(a.job_id)->progress().message(), "too soon");
  clock_.Advance(absl::Milliseconds(20));
  executor().Progress(a.job_id, 0.3, "later");
  std::vector<double> sent;
  for (const Event& e : sink_->EventsOf(a.job_id)) {
    if (e.type == v1::EVENT_TYPE_PROGRESS)
      sent.push_back(e.progress()->fraction());
  }
  EXPECT_THAT(sent, ElementsAre(0.1, 0.3));
}

TEST_F(SchedulerTest, DrainRejectsNewJobsAndShutdownCancelsTheRest) {
  const Admission running = Submit(gate_task_);
  const Admission queued = Submit(ok_task_);
  scheduler_->BeginDrain();
  const Admission late = Submit(ok_task_);
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(scheduler_->WaitNoneRunning(absl::Now()));
  auto [ids, kept] = scheduler_->EndForShutdown();
  EXPECT_THAT(ids, ElementsAre(running.job_id, queued.job_id));
  EXPECT_EQ(kept, 0u);  // No journal: nothing is kept for a next start.
  const Event end = sink_->WaitEnd(queued.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_SHUTDOWN);
  EXPECT_TRUE(scheduler_->WaitNoneRunning(absl::Now() + kWait));
  EXPECT_FALSE(executor().Shutdown(absl::Now()));  // Its task still runs.
  executor().Fail(running.job_id, absl::CancelledError("stopped"));
  EXPECT_TRUE(scheduler_->StopExecutors(absl::Now() + kWait));
}

// What a task returns reaches the wire as valid UTF-8 (strings and keys
// repaired), with error and progress texts cut on a character boundary.
TEST_F(SchedulerTest, OutputIsMadeValidUtf8AndErrorsShort) {
  Build({}, 2);
  const Admission a = Submit(ok_task_);
  const Admission b = Submit(ok_task_);
  executor().Progress(a.job_id, 0.5, std::string(5000, 'p') + "\xff");
  TaskOutput out;
  auto& f = *out.value.mutable_struct_value()->mutable_fields();
  f["x-bad"].set_string_value("\xff\xfe");
  f["k\xe9y"].set_number_value(1);
  out.payload = "\xff raw bytes stay";
  executor().Succeed(a.job_id, std::move(out));
  executor().Fail(b.job_id,
                  absl::InternalError(std::string(40000, 'e') + "\xc3"));
  const Event ea = sink_->WaitEnd(a.job_id);
  const Event eb = sink_->WaitEnd(b.job_id);
  for (const auto& job :
       {scheduler_->GetJob(a.job_id), scheduler_->GetJob(b.job_id)}) {
    ASSERT_TRUE(job.ok());
    std::string bytes;
    ASSERT_TRUE(job->SerializeToString(&bytes));
    v1::Job back;
    EXPECT_TRUE(back.ParseFromString(bytes)) << job->id();
  }
  ASSERT_EQ(ea.type, v1::EVENT_TYPE_SUCCEEDED);
  const auto& fields = ea.end()->result().value().struct_value().fields();
  EXPECT_EQ(fields.at("x-bad").string_value(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(fields.contains("k\xEF\xBF\xBDy"));
  EXPECT_EQ(ea.end()->result().payload(), "\xff raw bytes stay");
  ASSERT_EQ(eb.type, v1::EVENT_TYPE_FAILED);
  EXPECT_LE(eb.end()->error().message().size(), kMaxErrorMessageBytes);
  EXPECT_THAT(eb.end()->error().message(), ::testing::EndsWith("..."));
}

// A result that would not fit one message with its spec fails its job
// (RESULT_TOO_LARGE); scheduler_restore_test checks it for restored jobs.
TEST_F(SchedulerTest, AResultTooLargeForAMessageFailsItsJob) {
  Build({.max_message_bytes = 256 << 10}, 2);
  const Admission a = Submit(ok_task_);
  const Admission b = Submit(ok_task_);
  TaskOutput big, fits;
  big.payload.assign(300 << 10, 'r');
  fits.payload.assign(150 << 10, 'r');
  executor().Succeed(a.job_id, std::move(big));
  executor().Succeed(b.job_id, std::move(fits));
  const Event ea = sink_->WaitEnd(a.job_id);
  ASSERT_EQ(ea.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(ea.end()->error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
  EXPECT_THAT(ea.end()->error().message(), HasSubstr("--max-message-bytes"));
  EXPECT_EQ(sink_->WaitEnd(b.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
}

// A page of ListJobs stops at its byte budget (at least one job), saying
// there is more.
TEST_F(SchedulerTest, ListJobsPagesStopAtTheirByteBudget) {
  Build({}, 5);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit(ok_task_).job_id);
  for (uint64_t id : ids) {
    TaskOutput out;
    out.payload.assign(10000, 'r');
    executor().Succeed(id, std::move(out));
  }
  bool more = false;
  std::vector<v1::Job> page =
      scheduler_->ListJobs({.limit = 100, .max_bytes = 25000}, &more);
  EXPECT_EQ(page.size(), 2u);
  EXPECT_TRUE(more);
  page = scheduler_->ListJobs({.limit = 100, .max_bytes = 100}, &more);
  EXPECT_EQ(page.size(), 1u);  // One always.
  page = scheduler_->ListJobs({.limit = 100}, &more);
  EXPECT_EQ(page.size(), 5u);
  EXPECT_FALSE(more);
}

// Newest first: the latest jobs (before before_id, if given), and a
// filtered page looks at no more than max_scanned jobs.
TEST_F(SchedulerTest, ListJobsNewestFirstWithAScanBound) {
  Build({}, 10);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(Submit(ok_task_).job_id);
  for (int i = 0; i < 10; ++i) {
    if (i != 1) executor().Succeed(ids[i], TaskOutput{});
  }
  auto id_list = [](const std::vector<v1::Job>& page) {
    std::vector<std::string> out;
    for (const v1::Job& j : page) out.push_back(j.id());
    return out;
  };
  using S = std::vector<std::string>;
  const auto str = [&](int i) { return std::to_string(ids[i]); };
  EXPECT_EQ(id_list(scheduler_->ListJobs({.limit = 3, .newest_first = true})),
            (S{str(9), str(8), str(7)}));
  EXPECT_EQ(id_list(scheduler_->ListJobs(
                {.limit = 2, .newest_first = true, .before_id = ids[5]})),
            (S{str(4), str(3)}));
  // The one running job is the second oldest: found with room to look,
  // not within the 5 newest.
  const ListJobsQuery running = {
      .states = {v1::JOB_STATE_RUNNING}, .limit = 10, .newest_first = true};
  EXPECT_EQ(id_list(scheduler_->ListJobs(running)), (S{str(1)}));
  ListJobsQuery bounded = running;
  bounded.max_scanned = 5;
  EXPECT_TRUE(scheduler_->ListJobs(bounded).empty());
  bounded.max_scanned = 9;
  EXPECT_EQ(id_list(scheduler_->ListJobs(bounded)), (S{str(1)}));
  // Oldest first, as before, also bounded.
  EXPECT_EQ(id_list(scheduler_->ListJobs({.limit = 2})), (S{str(0), str(1)}));
  EXPECT_EQ(scheduler_->ListJobs({.limit = 10, .max_scanned = 4}).size(), 4u);
}

TEST_F(SchedulerTest, OutputIsKeptFromAJobsFirstWriteWhileItRuns) {
  Build({}, 1);
  ExecutorListener& port = scheduler_->listener_for(v1::EXECUTOR_THREAD);
  const uint64_t running = Submit(ok_task_).job_id;
  const uint64_t queued = Submit(ok_task_).job_id;
  ASSERT_EQ(State(running), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(State(queued), v1::JOB_STATE_QUEUED);
  auto text = [&](uint64_t id) {
    const absl::StatusOr<OutputRead> read =
        scheduler_->ReadOutput(id, "", 0, 1 << 20);
    std::string all;
    if (!read.ok()) return all;
    for (const OutputPiece& p : read->pieces) all += p.data;
    return all;
  };
  // A reader waits on the running job before it wrote anything: its first
  // write wakes the reader and is kept.
  int woken = 0;
  ASSERT_TRUE(scheduler_->WhenOutput(running, 0, this, [&] { ++woken; }));
  port.OnJobOutput(running, v1::OUTPUT_STREAM_STDOUT, "first\n");
  EXPECT_EQ(woken, 1);
  port.OnJobOutput(running, v1::OUTPUT_STREAM_STDOUT, "second\n");
  EXPECT_EQ(text(running), "first\nsecond\n");
  // Output of a job not started yet is dropped.
  port.OnJobOutput(queued, v1::OUTPUT_STREAM_STDOUT, "too early\n");
  Done(running);
  ASSERT_EQ(State(queued), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(text(queued), "");
  // A job's first write comes without a reader (an empty log line is a
  // line too), and after its end nothing more is kept.
  port.OnJobOutput(queued, v1::OUTPUT_STREAM_LOG, "");
  port.OnJobOutput(queued, v1::OUTPUT_STREAM_STDERR, "own\n");
  Done(queued);
  port.OnJobOutput(queued, v1::OUTPUT_STREAM_STDERR, "too late\n");
  EXPECT_EQ(text(queued), "\nown\n");
  EXPECT_TRUE(scheduler_->ReadOutput(queued, "", 0, 1 << 20)->ended);
  EXPECT_EQ(text(running), "first\nsecond\n");  // Kept after its end.
}

}  // namespace
}  // namespace jobd
