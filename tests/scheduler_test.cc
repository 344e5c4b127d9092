// Unit tests: the Scheduler state machine, queues, admission, cancellation,
// timeouts, retention, idempotency, fan-out and drain, over a real
// ThreadPoolExecutor and test-only tasks.
#include "server/scheduler/scheduler.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/sdk/task_registry.h"
#include "workers/threads/thread_pool.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);

// Polls `done` every 5 ms for at most `limit`; true once it holds.
bool WaitFor(const std::function<bool()>& done, absl::Duration limit = kWait) {
  const absl::Time end = absl::Now() + limit;
  for (int i = 0; i < 100000; ++i) {
    if (done()) return true;
    if (absl::Now() >= end) return false;
    absl::SleepFor(absl::Milliseconds(5));  // Polling state over time.
  }
  return false;
}

// Holds every "gate" job until opened (or the job is cancelled).
class Gate {
 public:
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  // Returns false if cancelled first.
  bool Pass(TaskContext& ctx) {
    for (int i = 0; i < 10000; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (open_) return true;
      }
      if (ctx.SleepFor(absl::Milliseconds(1)) == false) return false;
    }
    return false;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

// Records every event it is given.
class RecordingSink : public EventSink {
 public:
  bool Deliver(const Event& event, uint64_t tag) override {
    absl::MutexLock lock(&mu_);
    events_.push_back({event, tag});
    return false;
  }
  void Flush() override {}

  // Waits until a terminal event for `job_id` arrived; returns it.
  Event WaitEnd(uint64_t job_id) {
    return WaitFor(job_id, [](v1::EventType type) { return IsTerminal(type); });
  }
  // Waits until an event of `type` for `job_id` arrived; returns it.
  Event WaitFor(uint64_t job_id, v1::EventType type) {
    return WaitFor(job_id, [type](v1::EventType t) { return t == type; });
  }
  Event WaitFor(uint64_t job_id, std::function<bool(v1::EventType)> match) {
    absl::MutexLock lock(&mu_);
    const Event* found = nullptr;
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& [e, tag] : events_) {
        if (e.job_id == job_id && match(e.type)) {
          found = &e;
          return true;
        }
      }
      return false;
    };
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&arrived), kWait))
        << "job " << job_id << ": the event did not arrive";
    return found ? *found : Event{};
  }
  std::vector<v1::EventType> TypesOf(uint64_t job_id) {
    absl::MutexLock lock(&mu_);
    std::vector<v1::EventType> out;
    for (const auto& [e, tag] : events_) {
      if (e.job_id == job_id) out.push_back(e.type);
    }
    return out;
  }
  std::vector<Event> EventsOf(uint64_t job_id) {
    absl::MutexLock lock(&mu_);
    std::vector<Event> out;
    for (const auto& [e, tag] : events_) {
      if (e.job_id == job_id) out.push_back(e);
    }
    return out;
  }
  std::vector<uint64_t> Sequences() {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> out;
    for (const auto& [e, tag] : events_) out.push_back(e.sequence);
    return out;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return events_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<Event, uint64_t>> events_ ABSL_GUARDED_BY(mu_);
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { Build({}, 1); }

  void Build(SchedulerOptions options, int threads) {
    scheduler_.reset();
    scheduler_ = std::make_unique<Scheduler>(options, clock_);
    scheduler_->AddExecutor(std::make_unique<ThreadPoolExecutor>(
        threads, scheduler_->listener_for(v1::EXECUTOR_THREAD)));
  }

  // A scheduler with a journal (in a fresh temporary directory) and
  // `threads` thread workers.
  void BuildWithJournal(int threads, JournalOptions journal_options = {},
                        SchedulerOptions options = {}) {
    scheduler_.reset();
    char dir[] = "/tmp/jobd-scheduler-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    journal_dir_ = dir;
    Recovered recovered;
    journal_options.path = journal_dir_ + "/jobd.db";
    auto journal = Journal::Open(journal_options, &recovered);
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = *std::move(journal);
    scheduler_ = std::make_unique<Scheduler>(options, clock_, journal_.get());
    scheduler_->AddExecutor(std::make_unique<ThreadPoolExecutor>(
        threads, scheduler_->listener_for(v1::EXECUTOR_THREAD)));
  }

  void TearDown() override {
    gate_.Open();
    scheduler_.reset();
    journal_.reset();
    if (!journal_dir_.empty()) std::filesystem::remove_all(journal_dir_);
  }

  static TaskDef Def(std::string name, SyncTaskFn fn) {
    return {.name = std::move(name),
            .default_kind = v1::JOB_KIND_IO_BOUND,
            .variadic = true,
            .run = std::move(fn)};
  }

  // Submits one job of `task` with priority; returns its admission.
  Admission Submit(const TaskDef& task, int priority = 0, std::string key = "",
                   absl::Duration timeout = absl::ZeroDuration()) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_priority(priority);
    spec->set_idempotency_key(key);
    if (timeout > absl::ZeroDuration()) {
      spec->mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(timeout)));
    }
    std::vector<NewJob> jobs(1);
    jobs[0].task = &task;
    jobs[0].spec = std::move(spec);
    jobs[0].args = TaskArgs();
    jobs[0].tag = next_tag_++;
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
    return out.at(0);
  }

  // Submits one job of `task` whose payload is `payload` bytes, as `owner`
  // within `quota`.
  Admission SubmitBytes(const TaskDef& task, size_t payload,
                        std::string owner = "", OwnerQuota quota = {}) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_payload(std::string(payload, 'p'));
    std::vector<NewJob> jobs(1);
    jobs[0].task = &task;
    jobs[0].args = *TaskRegistry::Bind(task, spec);  // The task reads it.
    jobs[0].spec = std::move(spec);
    jobs[0].tag = next_tag_++;
    jobs[0].owner = std::move(owner);
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out, quota);
    return out.at(0);
  }
  bool Retained(uint64_t id) { return scheduler_->GetJob(id).ok(); }

  RealClock clock_;
  ManualClock manual_clock_{absl::Now()};
  Gate gate_;
  std::shared_ptr<RecordingSink> sink_ = std::make_shared<RecordingSink>();
  std::unique_ptr<Journal> journal_;  // BuildWithJournal only.
  std::string journal_dir_;
  std::unique_ptr<Scheduler> scheduler_;
  uint64_t next_tag_ = 1;

  absl::Mutex order_mu_;
  std::vector<int> started_order_ ABSL_GUARDED_BY(order_mu_);

  const TaskDef gate_task_ =
      Def("gate", [this](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        if (!gate_.Pass(ctx)) return absl::CancelledError("gate cancelled");
        return TaskOutput{};
      });
  const TaskDef ok_task_ =
      Def("ok", [](TaskContext&) -> absl::StatusOr<TaskOutput> {
        TaskOutput out;
        out.value.set_string_value("done");
        return out;
      });
  const TaskDef ignore_cancel_task_ =
      Def("stubborn", [this](TaskContext&) -> absl::StatusOr<TaskOutput> {
        // Ignores its token; only the gate releases it.
        for (int i = 0; i < 10000; ++i) {
          if (released_.HasBeenNotified()) break;
          absl::SleepFor(absl::Milliseconds(1));
        }
        return TaskOutput{};
      });
  absl::Notification released_;
  // Returns its payload (as echo does): a result as big as its input.
  const TaskDef echo_task_ =
      Def("echo", [](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        TaskOutput out;
        out.payload = ctx.args().payload();
        return out;
      });
  // Waits at the gate, then returns its payload.
  const TaskDef gated_echo_task_ =
      Def("gated.echo", [this](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        if (!gate_.Pass(ctx)) return absl::CancelledError("gate cancelled");
        TaskOutput out;
        out.payload = ctx.args().payload();
        return out;
      });
  TaskDef MakeRecorder(int n) {
    return Def("rec" + std::to_string(n),
               [this, n](TaskContext&) -> absl::StatusOr<TaskOutput> {
                 absl::MutexLock lock(&order_mu_);
                 started_order_.push_back(n);
                 return TaskOutput{};
               });
  }
};

TEST_F(SchedulerTest, RunsAJobThroughItsStates) {
  const Admission a = Submit(ok_task_);
  ASSERT_TRUE(a.status.ok());
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

TEST_F(SchedulerTest, ATaskThatThrowsFailsOnlyItsJob) {
  const TaskDef thrower =
      Def("thrower", [](TaskContext&) -> absl::StatusOr<TaskOutput> {
        throw std::runtime_error("boom");
      });
  const Admission bad = Submit(thrower);
  const Admission good = Submit(ok_task_);
  const Event end = sink_->WaitEnd(bad.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_THAT(end.end()->error().message(),
              HasSubstr("threw an exception: boom"));
  EXPECT_EQ(sink_->WaitEnd(good.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(SchedulerTest, HigherPriorityFirstFifoWithin) {
  // One worker, blocked by a gate job; then queue jobs of mixed priority.
  const Admission blocker = Submit(gate_task_);
  std::vector<TaskDef> recs;
  for (int i = 0; i < 5; ++i) recs.push_back(MakeRecorder(i));
  Submit(recs[0], 0);
  Submit(recs[1], 5);
  Submit(recs[2], 0);
  Submit(recs[3], 5);
  const Admission last = Submit(recs[4], -1);
  gate_.Open();
  sink_->WaitEnd(blocker.job_id);
  sink_->WaitEnd(last.job_id);
  absl::MutexLock lock(&order_mu_);
  EXPECT_THAT(started_order_, ElementsAre(1, 3, 0, 2, 4));
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

TEST_F(SchedulerTest, ManyCancelledQueuedJobsAreCompactedAway) {
  Submit(gate_task_);  // Holds the only worker.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back(Submit(ok_task_, i % 3).job_id);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    ASSERT_TRUE(scheduler_->Cancel(ids[i]).ok());
  }
  EXPECT_EQ(scheduler_->GetStats().executors(1).queued(), 1u);
  gate_.Open();
  EXPECT_EQ(sink_->WaitEnd(ids.back()).type, v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(SchedulerTest, CancelRunningSetsTheTokenAndEndsAtOnce) {
  const Admission running = Submit(gate_task_);
  const Admission next = Submit(ok_task_);
  // Wait for STARTED.
  for (int i = 0; i < 1000 && sink_->TypesOf(running.job_id).size() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_TRUE(scheduler_->Cancel(running.job_id).ok());
  const Event end = sink_->WaitEnd(running.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_CANCELLED);
  // The gate task saw its token and returned, freeing the slot.
  EXPECT_EQ(sink_->WaitEnd(next.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(SchedulerTest, TimeoutFailsTheJobEvenIfTheTaskIgnoresIt) {
  const Admission a =
      Submit(ignore_cancel_task_, 0, "", absl::Milliseconds(50));
  const Admission queued = Submit(ok_task_);
  const Event end = sink_->WaitEnd(a.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_THAT(end.end()->error().message(), HasSubstr("timeout of 50ms"));
  // The slot stays busy until the task returns; then the queue moves.
  auto stats = scheduler_->GetStats();
  EXPECT_EQ(stats.executors(1).busy(), 1u);
  released_.Notify();
  EXPECT_EQ(sink_->WaitEnd(queued.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetJob(a.job_id)->state(), v1::JOB_STATE_FAILED);
}

TEST_F(SchedulerTest, IdempotencyKeyReturnsTheSameJob) {
  const Admission a = Submit(ok_task_, 0, "key-1");
  sink_->WaitEnd(a.job_id);
  const Admission b = Submit(ok_task_, 0, "key-1");
  EXPECT_EQ(a.job_id, b.job_id);
  EXPECT_TRUE(b.duplicate);
  EXPECT_EQ(scheduler_->GetStats().accepted(), 1u);
  const Admission c = Submit(ok_task_, 0, "key-2");
  EXPECT_NE(c.job_id, a.job_id);
}

TEST_F(SchedulerTest, RetentionByCountAndTtl) {
  ManualClock& manual = manual_clock_;
  scheduler_.reset();
  scheduler_ = std::make_unique<Scheduler>(
      SchedulerOptions{.retention_ttl = absl::Minutes(10), .max_retained = 3},
      manual);
  scheduler_->AddExecutor(std::make_unique<ThreadPoolExecutor>(
      1, scheduler_->listener_for(v1::EXECUTOR_THREAD)));
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(Submit(ok_task_, 0, "k" + std::to_string(i)).job_id);
    sink_->WaitEnd(ids.back());
  }
  // Only the newest 3 remain; evicted keys are free again.
  EXPECT_EQ(scheduler_->GetJob(ids[0]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->GetJob(ids[1]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler_->GetJob(ids[2]).ok());
  EXPECT_EQ(scheduler_->GetStats().retained(), 3u);
  manual.Advance(absl::Minutes(11));
  scheduler_->SweepRetention();
  EXPECT_EQ(scheduler_->GetStats().retained(), 0u);
  EXPECT_FALSE(scheduler_->GetJob(ids[4]).ok());
  EXPECT_FALSE(Submit(ok_task_, 0, "k4").duplicate);
}

TEST_F(SchedulerTest, RetainedBytesForgetTheOldestFirst) {
  // Each job holds ~20 KB retained (a 10 KB payload and its echo): three
  // fit in 64 KB, a fourth does not.
  Build({.max_retained_bytes = 64 << 10}, 1);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(SubmitBytes(echo_task_, 10 << 10).job_id);
    const Event end = sink_->WaitEnd(ids.back());
    EXPECT_EQ(end.end()->result().payload().size(), 10u << 10);  // Delivered.
  }
  EXPECT_FALSE(Retained(ids[0]));
  EXPECT_FALSE(Retained(ids[1]));
  for (int i = 2; i < 5; ++i) EXPECT_TRUE(Retained(ids[i])) << i;
  const v1::GetStatsResponse stats = scheduler_->GetStats();
  EXPECT_EQ(stats.retained(), 3u);
  EXPECT_GT(stats.retained_bytes(), 60u << 10);
  EXPECT_LE(stats.retained_bytes(), 64u << 10);
  EXPECT_EQ(stats.live_bytes(), 0u);
  // A lower budget applies at the next sweep.
  scheduler_->SetLimits({.max_retained_bytes = 30 << 10});
  scheduler_->SweepRetention();
  EXPECT_EQ(scheduler_->GetStats().retained(), 1u);
  EXPECT_TRUE(Retained(ids[4]));
}

TEST_F(SchedulerTest, LiveBytesRefuseWhatWouldPassTheBudget) {
  Build({.max_live_bytes = 100 << 10}, 1);
  const Admission a = SubmitBytes(gated_echo_task_, 40 << 10);
  const Admission b = SubmitBytes(gated_echo_task_, 40 << 10);
  ASSERT_TRUE(a.status.ok());
  ASSERT_TRUE(b.status.ok());
  const Admission c = SubmitBytes(gated_echo_task_, 40 << 10);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status.message(), HasSubstr("(max-live-bytes)"));
  EXPECT_THAT(c.status.message(), HasSubstr("limit is 100.0 KiB"));
  // A small one still fits.
  EXPECT_TRUE(SubmitBytes(gated_echo_task_, 1 << 10).status.ok());
  gate_.Open();
  sink_->WaitEnd(b.job_id);
  // Ended: their specs no longer count as live.
  EXPECT_TRUE(WaitFor([&] { return scheduler_->GetStats().live() == 0; }));
  EXPECT_EQ(scheduler_->GetStats().live_bytes(), 0u);
  EXPECT_TRUE(SubmitBytes(gated_echo_task_, 40 << 10).status.ok());
}

TEST_F(SchedulerTest, AnOwnerOverItsByteQuotaLosesItsOwnOldResultsFirst) {
  Build({}, 2);
  const OwnerQuota quota{.max_bytes = 100 << 10};
  // Bob keeps two results; Alice, under a quota, fills hers.
  std::vector<uint64_t> bob;
  for (int i = 0; i < 2; ++i) {  // ~40 KB each retained.
    bob.push_back(SubmitBytes(echo_task_, 20 << 10, "bob", quota).job_id);
    sink_->WaitEnd(bob.back());
  }
  std::vector<uint64_t> alice;
  for (int i = 0; i < 4; ++i) {  // ~60 KB each retained.
    const Admission a = SubmitBytes(echo_task_, 30 << 10, "alice", quota);
    ASSERT_TRUE(a.status.ok()) << a.status;
    alice.push_back(a.job_id);
    sink_->WaitEnd(alice.back());
  }
  // Only her newest fits in 100 KB; Bob's are untouched.
  EXPECT_FALSE(Retained(alice[0]));
  EXPECT_FALSE(Retained(alice[1]));
  EXPECT_FALSE(Retained(alice[2]));
  EXPECT_TRUE(Retained(alice[3]));
  EXPECT_TRUE(Retained(bob[0]));
  EXPECT_TRUE(Retained(bob[1]));
  // Her unfinished jobs alone may not pass it: refused, naming the quota.
  const Admission a1 = SubmitBytes(gated_echo_task_, 45 << 10, "alice", quota);
  const Admission a2 = SubmitBytes(gated_echo_task_, 45 << 10, "alice", quota);
  ASSERT_TRUE(a1.status.ok());
  ASSERT_TRUE(a2.status.ok());
  EXPECT_FALSE(Retained(alice[3]));  // Made room for them.
  const Admission a3 = SubmitBytes(gated_echo_task_, 45 << 10, "alice", quota);
  EXPECT_EQ(a3.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(a3.status.message(), HasSubstr("caller 'alice'"));
  EXPECT_THAT(a3.status.message(), HasSubstr("(quota-max-bytes)"));
  // Others go on.
  EXPECT_TRUE(SubmitBytes(echo_task_, 10 << 10, "bob", quota).status.ok());
  // Without a quota (admin), nothing is refused or trimmed by it.
  EXPECT_TRUE(SubmitBytes(gated_echo_task_, 200 << 10, "alice").status.ok());
  gate_.Open();
}

TEST_F(SchedulerTest, AResultOverTheRetainedSizeIsDeliveredThenDropped) {
  Build({.max_retained_result_bytes = 4096}, 1);
  const Admission small = SubmitBytes(echo_task_, 1000);
  const Admission big = SubmitBytes(gated_echo_task_, 10000);
  // A caller waiting for it gets it too.
  absl::Notification answered;
  absl::StatusOr<v1::Job> waited;
  scheduler_->WaitJob(big.job_id, absl::Now() + kWait,
                      [&](absl::StatusOr<v1::Job> job) {
                        waited = std::move(job);
                        answered.Notify();
                      });
  gate_.Open();
  const Event end = sink_->WaitEnd(big.job_id);
  EXPECT_EQ(end.end()->result().payload().size(), 10000u);
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(kWait));
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(waited->result().payload().size(), 10000u);
  // Later: the job, without its result.
  auto job = scheduler_->GetJob(big.job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(job->result().dropped());
  EXPECT_TRUE(job->result().payload().empty());
  EXPECT_LT(scheduler_->GetStats().retained_bytes(), 2 * 10000u);
  auto kept = scheduler_->GetJob(small.job_id);
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(kept->result().dropped());
  EXPECT_EQ(kept->result().payload().size(), 1000u);
}

TEST_F(SchedulerTest, WithAJournalNearlyFullEndedJobsAreForgottenEarly) {
  // A 4 MiB journal; each job keeps ~200 KB in it (spec and result). The
  // sweeps are this test's.
  BuildWithJournal(1, {.max_bytes = 4 << 20},
                   {.sweep_interval = absl::Hours(1)});
  std::vector<uint64_t> ids;
  for (int i = 0; i < 19; ++i) {  // ~3.9 MB: past 7/8 of the cap.
    ids.push_back(SubmitBytes(echo_task_, 100 << 10).job_id);
    sink_->WaitEnd(ids.back());
  }
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  EXPECT_GT(journal_->usage().used_bytes, (4u << 20) / 8 * 7);
  scheduler_->SweepRetention();
  // The oldest went, down to 3/4 of the cap; the newest stay.
  EXPECT_FALSE(Retained(ids[0]));
  EXPECT_TRUE(Retained(ids.back()));
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  EXPECT_LE(journal_->usage().used_bytes, (4u << 20) / 4 * 3);
  // Past the cap, writes fail (new jobs are refused) until the sweep frees
  // room: not for the whole retention time.
  for (int i = 0; i < 12; ++i) {
    const Admission a = SubmitBytes(echo_task_, 100 << 10);
    if (!a.status.ok()) break;
    ids.push_back(a.job_id);
  }
  ASSERT_TRUE(WaitFor([&] { return !journal_->accepting(); }));
  EXPECT_TRUE(journal_->usage().full);
  bool accepting = false;
  for (int i = 0; i < 20 && !accepting; ++i) {
    scheduler_->SweepRetention();
    accepting =
        WaitFor([&] { return journal_->accepting(); }, absl::Milliseconds(500));
  }
  EXPECT_TRUE(accepting);
  EXPECT_TRUE(SubmitBytes(echo_task_, 100 << 10).status.ok());
}

TEST_F(SchedulerTest, WatchReplaysRetainedEventsAndReportsLoss) {
  Build({.event_log_size = 4}, 1);
  const Admission a = Submit(ok_task_);
  sink_->WaitEnd(a.job_id);
  const Admission b = Submit(ok_task_);
  sink_->WaitEnd(b.job_id);
  // 6 events so far (3 per job); the log keeps the last 4 (seq 3..6).
  auto watcher = std::make_shared<RecordingSink>();
  auto r = scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->events_lost);
  EXPECT_EQ(r->oldest_retained_sequence, 3u);
  EXPECT_THAT(watcher->Sequences(), ElementsAre(3, 4, 5, 6));
  // Then live events follow.
  const Admission c = Submit(ok_task_);
  watcher->WaitEnd(c.job_id);
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_EQ(watcher->size(), 7u);
}

TEST_F(SchedulerTest, WatchReplaysWhatEventsCarryButNotForgottenJobs) {
  Build({.max_retained = 1}, 1);
  const Admission a = Submit(ok_task_);
  sink_->WaitEnd(a.job_id);
  const Admission b = Submit(ok_task_);
  sink_->WaitEnd(b.job_id);
  scheduler_->SweepRetention();  // Forgets a: one ended job is retained.
  ASSERT_FALSE(scheduler_->GetJob(a.job_id).ok());
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents}).ok());
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_TRUE(watcher->EventsOf(a.job_id).empty());
  const std::vector<Event> replayed = watcher->EventsOf(b.job_id);
  ASSERT_EQ(replayed.size(), 3u);
  EXPECT_EQ(replayed[0].type, v1::EVENT_TYPE_ACCEPTED);
  ASSERT_NE(replayed[0].task(), nullptr);
  EXPECT_EQ(replayed[0].task()->name, ok_task_.name);
  EXPECT_EQ(replayed[1].type, v1::EVENT_TYPE_STARTED);
  EXPECT_EQ(replayed[1].executor, v1::EXECUTOR_THREAD);
  EXPECT_EQ(replayed[2].type, v1::EVENT_TYPE_SUCCEEDED);
  ASSERT_NE(replayed[2].end(), nullptr);
  EXPECT_EQ(replayed[2].end()->result().value().string_value(), "done");
  EXPECT_LT(replayed[0].sequence, replayed[2].sequence);
}

TEST_F(SchedulerTest, WatchOfAnEndedJobDeliversItsEnd) {
  const Admission a = Submit(ok_task_);
  sink_->WaitEnd(a.job_id);
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({a.job_id}, 0, Subscriber{watcher, 0, kAllEvents})
          .ok());
  EXPECT_EQ(watcher->WaitEnd(a.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(scheduler_->Watch({424242}, 0, Subscriber{watcher, 0, kAllEvents})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, WaitJobAnswersAtTheEndOrAtTheDeadline) {
  const Admission a = Submit(gate_task_);
  absl::Notification timed_out;
  v1::JobState seen = v1::JOB_STATE_UNSPECIFIED;
  scheduler_->WaitJob(a.job_id, absl::Now() + absl::Milliseconds(20),
                      [&](absl::StatusOr<v1::Job> job) {
                        seen = job->state();
                        timed_out.Notify();
                      });
  ASSERT_TRUE(timed_out.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(seen, v1::JOB_STATE_RUNNING);
  absl::Notification ended;
  scheduler_->WaitJob(a.job_id, absl::Now() + absl::Hours(1),
                      [&](absl::StatusOr<v1::Job> job) {
                        seen = job->state();
                        ended.Notify();
                      });
  gate_.Open();
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(seen, v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerTest, DrainRejectsNewJobsAndShutdownCancelsTheRest) {
  const Admission running = Submit(gate_task_);
  const Admission queued = Submit(ok_task_);
  scheduler_->BeginDrain();
  const Admission late = Submit(ok_task_);
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(
      scheduler_->WaitNoneRunning(absl::Now() + absl::Milliseconds(20)));
  auto [ids, kept] = scheduler_->EndForShutdown();
  EXPECT_THAT(ids, ElementsAre(running.job_id, queued.job_id));
  EXPECT_EQ(kept, 0u);  // No journal: nothing is kept for a next start.
  const Event end = sink_->WaitEnd(queued.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(end.end()->error().reason(), v1::ERROR_REASON_SHUTDOWN);
  EXPECT_TRUE(scheduler_->WaitNoneRunning(absl::Now() + kWait));
  EXPECT_TRUE(scheduler_->StopExecutors(absl::Now() + kWait));
}

// The newest job's state as the journal file holds it (committed only).
v1::JobState NewestStateOnDisk(const std::string& path) {
  sqlite3* db = nullptr;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db,
                           "SELECT state FROM jobs ORDER BY id DESC LIMIT 1",
                           -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      state = static_cast<v1::JobState>(sqlite3_column_int(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close_v2(db);
  return state;
}

TEST_F(SchedulerTest, WithAJournalAJobStartsOnlyOnceItsClaimIsDurable) {
  std::atomic<int> on_disk_when_run{0};
  const TaskDef probe =
      Def("probe", [&](TaskContext&) -> absl::StatusOr<TaskOutput> {
        on_disk_when_run = NewestStateOnDisk(journal_dir_ + "/jobd.db");
        return TaskOutput{};
      });
  BuildWithJournal(2);
  for (int i = 0; i < 20; ++i) {
    const Admission a = Submit(probe);
    ASSERT_TRUE(a.status.ok()) << a.status;
    sink_->WaitEnd(a.job_id);
    // When the task ran, the file already said it may have begun: a crash
    // then fails it LOST_ON_RESTART instead of running it again.
    EXPECT_EQ(on_disk_when_run.load(), v1::JOB_STATE_RUNNING)
        << "job " << a.job_id;
  }
  scheduler_.reset();  // Before `probe`.
}

TEST_F(SchedulerTest, WithAJournalAClaimedJobIsQueuedUntilItIsHandedOver) {
  BuildWithJournal(1);
  // Tiny jobs first: the slot claims jobs ahead of itself for them.
  std::vector<uint64_t> tiny;
  for (int i = 0; i < 200; ++i) tiny.push_back(Submit(ok_task_).job_id);
  for (uint64_t id : tiny) sink_->WaitEnd(id);
  const Admission running = Submit(gate_task_);
  const Admission next = Submit(ok_task_);
  sink_->WaitFor(running.job_id, v1::EVENT_TYPE_STARTED);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  // The slot is busy: the next job is queued, not started ahead of it.
  EXPECT_EQ(scheduler_->GetJob(next.job_id)->state(), v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(scheduler_->GetJob(next.job_id)->has_start_time());
  for (const Event& e : sink_->EventsOf(next.job_id)) {
    EXPECT_NE(e.type, v1::EVENT_TYPE_STARTED);
  }
  gate_.Open();
  const Event started = sink_->WaitFor(next.job_id, v1::EVENT_TYPE_STARTED);
  sink_->WaitEnd(next.job_id);
  // STARTED is stamped when the job is handed to its executor: after the
  // gate job returned, never before.
  EXPECT_GE(absl::Time(started.time),
            absl::Time(sink_->WaitEnd(running.job_id).time));
  EXPECT_EQ(scheduler_->GetJob(next.job_id)->attempts(), 1u);
}

TEST_F(SchedulerTest, WithAJournalAReplayedEventWaitsForItsOwnBatchOnly) {
  BuildWithJournal(1);
  sink_->WaitEnd(Submit(ok_task_).job_id);  // Sequences 1-3.
  const Admission b = Submit(ok_task_);
  sink_->WaitEnd(b.job_id);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  const uint64_t durable = journal_->durable();
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents}).ok());
  scheduler_->Unwatch(watcher.get(), {});
  const std::vector<Event> live = sink_->EventsOf(b.job_id);
  const std::vector<Event> replayed = watcher->EventsOf(b.job_id);
  ASSERT_EQ(replayed.size(), 3u);
  ASSERT_EQ(live.size(), 3u);
  for (size_t i = 0; i < replayed.size(); ++i) {
    // Durable already: nothing to wait for (not the batch open now).
    EXPECT_LE(replayed[i].ticket, durable) << i;
    EXPECT_TRUE(replayed[i].ticket == 0 || replayed[i].ticket == live[i].ticket)
        << i;
  }
}

TEST_F(SchedulerTest, WithAJournalPriorityStillOrdersJobsWaitingForASlot) {
  BuildWithJournal(1);
  const Admission blocker = Submit(gate_task_);
  ASSERT_TRUE(blocker.status.ok());
  // The gate job has its slot (its start is durable: STARTED went out).
  const absl::Time until = absl::Now() + kWait;
  for (int i = 0; i < 100000 && absl::Now() < until; ++i) {
    const auto types = sink_->TypesOf(blocker.job_id);
    if (std::find(types.begin(), types.end(), v1::EVENT_TYPE_STARTED) !=
        types.end()) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(1));  // Polling.
  }
  ASSERT_THAT(sink_->TypesOf(blocker.job_id),
              ::testing::Contains(v1::EVENT_TYPE_STARTED));
  // One at a time, lowest first: none may be marked started ahead of the
  // higher ones that follow while the slot is busy.
  const TaskDef r1 = MakeRecorder(1), r3 = MakeRecorder(3),
                r2 = MakeRecorder(2);
  std::vector<uint64_t> ids;
  for (const auto& [task, priority] :
       {std::pair{&r1, 1}, std::pair{&r3, 3}, std::pair{&r2, 2}}) {
    const Admission a = Submit(*task, priority);
    ASSERT_TRUE(a.status.ok());
    ids.push_back(a.job_id);
  }
  gate_.Open();
  for (uint64_t id : ids) sink_->WaitEnd(id);
  absl::MutexLock lock(&order_mu_);
  EXPECT_THAT(started_order_, ::testing::ElementsAre(3, 2, 1));
}

TEST_F(SchedulerTest, WithAJournalATimeoutCountsFromTheRealStart) {
  const TaskDef slow =
      Def("slow", [](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        ctx.SleepFor(absl::Milliseconds(600));
        return TaskOutput{};
      });
  BuildWithJournal(1);
  // The second job is marked started ahead while the first holds the only
  // slot for 600 ms; its 300 ms must count from when it really runs.
  const Admission first = Submit(slow);
  const Admission second = Submit(ok_task_, 0, "", absl::Milliseconds(300));
  ASSERT_TRUE(first.status.ok() && second.status.ok());
  EXPECT_EQ(sink_->WaitEnd(first.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  const Event end = sink_->WaitEnd(second.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_SUCCEEDED)
      << (end.end() ? end.end()->error().message() : "");
  scheduler_.reset();  // Before `slow`.
}

// A journal row as a previous run left it (restart_test covers the real
// journal; rows made by hand reach the edge cases).
JournalRow OldRow(uint64_t id, v1::JobState state, uint64_t first_seq) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("ok");
  spec->set_kind(v1::JOB_KIND_IO_BOUND);
  JournalRow row;
  row.id = id;
  row.spec = spec;
  row.state = state;
  row.executor = v1::EXECUTOR_THREAD;
  row.create_time = absl::Now() - absl::Minutes(1);
  row.accepted_seq = first_seq;
  if (state != v1::JOB_STATE_QUEUED) {
    row.start_time = row.create_time;
    row.started_seq = first_seq + 10;
  }
  if (IsTerminal(state)) {
    row.finish_time = row.create_time;
    row.ended_seq = first_seq + 20;
    auto end = std::make_shared<JobEnd>();
    end->state = state;
    row.end = end;
  }
  return row;
}

TEST_F(SchedulerTest, RestoreEndsLostJobsBeyondMaxRetained) {
  Build({.max_retained = 2}, 1);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(ok_task_).ok());
  Recovered old;
  for (uint64_t id = 1; id <= 6; ++id) {  // All running when jobd died.
    old.rows.push_back(OldRow(id, v1::JOB_STATE_RUNNING, id * 100));
  }
  old.last_sequence = 1000;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry);
  EXPECT_EQ(s.lost, 6u);
  // Ending each evicted the oldest beyond --max-retained meanwhile.
  for (uint64_t id = 1; id <= 4; ++id) {
    EXPECT_EQ(scheduler_->GetJob(id).status().code(),
              absl::StatusCode::kNotFound)
        << id;
  }
  for (uint64_t id = 5; id <= 6; ++id) {
    auto job = scheduler_->GetJob(id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
  }
}

TEST_F(SchedulerTest, WatchResumesInARestoredLogWithGapsInTheSequence) {
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(ok_task_).ok());
  Recovered old;  // Events 10, 20, 30 and 40, 50, 60 (progress not kept).
  old.rows.push_back(OldRow(1, v1::JOB_STATE_SUCCEEDED, 10));
  old.rows.push_back(OldRow(2, v1::JOB_STATE_SUCCEEDED, 40));
  old.last_sequence = 60;
  scheduler_->Restore(std::move(old), registry);
  auto watcher = std::make_shared<RecordingSink>();
  auto r = scheduler_->Watch({}, 25, Subscriber{watcher, 0, kAllEvents});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->events_lost);
  EXPECT_THAT(watcher->Sequences(), ElementsAre(30, 40, 50, 60));
  // New events carry on after the old ones.
  const Admission a = Submit(ok_task_);
  watcher->WaitEnd(a.job_id);
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_EQ(watcher->Sequences().at(4), 61u);
}

// Rows the journal could not read back fail their jobs alone, saying why;
// the other jobs are restored as usual.
TEST_F(SchedulerTest, RestoreFailsOnlyTheJobsWhoseRowsCouldNotBeRead) {
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(ok_task_).ok());
  Recovered old;
  old.rows.push_back(OldRow(1, v1::JOB_STATE_QUEUED, 10));
  old.rows.push_back(OldRow(2, v1::JOB_STATE_SUCCEEDED, 20));
  old.rows.back().problem = "its result does not parse";
  old.rows.back().end.reset();
  old.rows.push_back(OldRow(3, v1::JOB_STATE_SUCCEEDED, 30));
  old.rows.push_back(OldRow(4, v1::JOB_STATE_QUEUED, 40));
  old.rows.back().problem = "its spec does not parse";
  old.last_sequence = 60;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry);
  EXPECT_EQ(s.unreadable, 2u);
  EXPECT_EQ(s.retained, 1u);
  EXPECT_EQ(s.queued, 1u);
  for (uint64_t id : {2, 4}) {
    auto job = scheduler_->GetJob(id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
    EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
    EXPECT_EQ(job->error().code(),
              static_cast<int>(absl::StatusCode::kDataLoss));
    EXPECT_THAT(job->error().message(),
                HasSubstr(id == 2 ? "its result does not parse"
                                  : "its spec does not parse"));
  }
  EXPECT_EQ(scheduler_->GetJob(3)->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(sink_->size(), 0u);
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler_->Watch({1}, 0, Subscriber{watcher, 0}).ok());
  EXPECT_EQ(watcher->WaitEnd(1).type, v1::EVENT_TYPE_SUCCEEDED);
}

// What a task returns reaches the wire as valid UTF-8 (strings and keys
// repaired), with error and progress texts cut on a character boundary.
TEST_F(SchedulerTest, OutputIsMadeValidUtf8AndErrorsShort) {
  const TaskDef bad_result =
      Def("bad", [](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        ctx.ReportProgress(0.5, std::string(5000, 'p') + "\xff");
        TaskOutput out;
        auto& f = *out.value.mutable_struct_value()->mutable_fields();
        f["x-bad"].set_string_value("\xff\xfe");
        f["k\xe9y"].set_number_value(1);
        out.payload = "\xff raw bytes stay";
        return out;
      });
  const TaskDef bad_error =
      Def("err", [](TaskContext&) -> absl::StatusOr<TaskOutput> {
        return absl::InternalError(std::string(40000, 'e') + "\xc3");
      });
  const Admission a = Submit(bad_result);
  const Admission b = Submit(bad_error);
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
  const auto& f = ea.end()->result().value().struct_value().fields();
  EXPECT_EQ(f.at("x-bad").string_value(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(f.contains("k\xEF\xBF\xBDy"));
  EXPECT_EQ(ea.end()->result().payload(), "\xff raw bytes stay");
  ASSERT_EQ(eb.type, v1::EVENT_TYPE_FAILED);
  EXPECT_LE(eb.end()->error().message().size(), kMaxErrorMessageBytes);
  EXPECT_THAT(eb.end()->error().message(), ::testing::EndsWith("..."));
}

// A result that would not fit one message with its spec fails its job
// (RESULT_TOO_LARGE), at its end or when a journal brings it back.
TEST_F(SchedulerTest, AResultTooLargeForAMessageFailsItsJob) {
  Build({.max_message_bytes = 256 << 10}, 1);
  auto returning = [](size_t bytes) {
    return [bytes](TaskContext&) -> absl::StatusOr<TaskOutput> {
      TaskOutput out;
      out.payload.assign(bytes, 'r');
      return out;
    };
  };
  const TaskDef big = Def("big", returning(300 << 10));
  const TaskDef fits = Def("fits", returning(150 << 10));
  const Admission a = Submit(big);
  const Admission b = Submit(fits);
  const Event ea = sink_->WaitEnd(a.job_id);
  ASSERT_EQ(ea.type, v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(ea.end()->error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
  EXPECT_THAT(ea.end()->error().message(), HasSubstr("--max-message-bytes"));
  EXPECT_EQ(sink_->WaitEnd(b.job_id).type, v1::EVENT_TYPE_SUCCEEDED);

  // The same result restored with a spec that leaves it no room.
  Build({.max_message_bytes = 256 << 10}, 1);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(ok_task_).ok());
  Recovered old;
  old.rows.push_back(OldRow(1, v1::JOB_STATE_SUCCEEDED, 10));
  auto spec = std::make_shared<v1::JobSpec>(*old.rows[0].spec);
  spec->set_payload(std::string(100 << 10, 's'));
  old.rows[0].spec = spec;
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_SUCCEEDED;
  end->mutable_result().set_payload(std::string(150 << 10, 'r'));
  old.rows[0].end = end;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry);
  EXPECT_EQ(s.unreadable, 1u);
  auto job = scheduler_->GetJob(1);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
}

// A page of ListJobs stops at its byte budget (at least one job), saying
// there is more.
TEST_F(SchedulerTest, ListJobsPagesStopAtTheirByteBudget) {
  auto returning = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
    TaskOutput out;
    out.payload.assign(10000, 'r');
    return out;
  };
  const TaskDef task = Def("ten.kb", returning);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit(task).job_id);
  for (uint64_t id : ids) sink_->WaitEnd(id);
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

}  // namespace
}  // namespace jobd
