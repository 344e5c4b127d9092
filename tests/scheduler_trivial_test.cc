// Unit tests: the Scheduler's trivial tasks' jobs (TaskDef::trivial;
// Scheduler::Hand and RunTrivial): run on the thread that starts them, in
// no slot, in one go (a large Submit's as one batch on the pool); queued behind
// a full lane like any other; a large spec goes to the executor; a long chain
// runs in a loop, not in nested calls; with a journal, those whose claim became
// durable run on the journal's thread if few, else go to the executor as one
// batch. A real daemon runs `echo` so in every integration test.
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

class SchedulerTrivialTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    executor().set_runs_trivial(true);
  }

  // Submits one job of trivial_ with `payload`, depending on `deps`.
  Admission SubmitTrivial(std::string payload, std::vector<uint64_t> deps = {},
                          int priority = 0) {
    return SubmitTo(*scheduler_, trivial_, std::move(payload), deps, priority,
                    sink_);
  }
  // The same to `scheduler`, of `task`, its events to `sink`.
  Admission SubmitTo(Scheduler& scheduler, const TaskDef& task,
                     std::string payload, const std::vector<uint64_t>& deps,
                     int priority, std::shared_ptr<RecordingSink> sink) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_payload(std::move(payload));
    spec->set_priority(priority);
    for (uint64_t d : deps) spec->add_depends_on(absl::StrCat(d));
    std::vector<NewJob> jobs(1);
    jobs[0].task = &task;
    jobs[0].args = *TaskRegistry::Bind(task, spec);
    jobs[0].spec = std::move(spec);
    jobs[0].tag = next_tag_++;
    std::vector<Admission> out;
    scheduler.Submit(jobs, Subscriber{sink, 0, kAllEvents}, out);
    return out.at(0);
  }
  // Submits `n` jobs of trivial_ in one call; returns their ids.
  std::vector<uint64_t> SubmitManyTrivial(int n) {
    std::vector<NewJob> jobs(n);
    for (NewJob& job : jobs) {
      auto spec = std::make_shared<v1::JobSpec>();
      spec->set_task(trivial_.name);
      spec->set_kind(v1::JOB_KIND_IO_BOUND);
      job.task = &trivial_;
      job.args = *TaskRegistry::Bind(trivial_, spec);
      job.spec = std::move(spec);
      job.tag = next_tag_++;
    }
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
    std::vector<uint64_t> ids;
    for (const Admission& a : out) ids.push_back(a.job_id);
    return ids;
  }
  std::set<std::thread::id> RanOn() {
    absl::MutexLock lock(&ran_mu_);
    return ran_on_;
  }

  absl::Mutex ran_mu_;
  std::set<std::thread::id> ran_on_ ABSL_GUARDED_BY(ran_mu_);
  // Returns its payload; notes the thread it ran on.
  const TaskDef trivial_ = {
      .name = "echo",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .variadic = true,
      .trivial = true,
      .run = [this](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
        {
          absl::MutexLock lock(&ran_mu_);
          ran_on_.insert(std::this_thread::get_id());
        }
        TaskOutput out;
        out.payload = ctx.args().payload();
        return out;
      }};
};

TEST_F(SchedulerTrivialTest, RunOnTheSubmittingThreadInNoSlot) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 50; ++i) {
    const Admission a = SubmitTrivial(absl::StrCat("p", i));
    ASSERT_TRUE(a.status.ok()) << a.status;
    ids.push_back(a.job_id);
    // Ended within the call (no journal: its events arrive in it too).
    ASSERT_EQ(State(a.job_id), v1::JOB_STATE_SUCCEEDED) << "job " << a.job_id;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_THAT(
        sink_->TypesOf(ids[i]),
        ::testing::ElementsAre(v1::EVENT_TYPE_ACCEPTED, v1::EVENT_TYPE_STARTED,
                               v1::EVENT_TYPE_SUCCEEDED));
    EXPECT_EQ(scheduler_->GetJob(ids[i])->result().payload(),
              absl::StrCat("p", i));
  }
  // Never handed to the executor, and its one slot stayed free.
  EXPECT_TRUE(executor().starts().empty());
  EXPECT_TRUE(executor().trivial_batches().empty());
  EXPECT_EQ(executor().busy(), 0);
  EXPECT_EQ(RanOn(), std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST_F(SchedulerTrivialTest, ALargeSubmitGoesToThePoolAsOneBatch) {
  // A few run on the submitting thread; many go to a pool thread in one
  // hand-over, so that the submitting thread reads the next request.
  const std::vector<uint64_t> few = SubmitManyTrivial(4);
  for (uint64_t id : few) EXPECT_EQ(State(id), v1::JOB_STATE_SUCCEEDED);
  const std::vector<uint64_t> many = SubmitManyTrivial(200);
  ASSERT_EQ(executor().trivial_batches(),
            std::vector<std::vector<uint64_t>>{many});
  for (uint64_t id : many) EXPECT_EQ(State(id), v1::JOB_STATE_RUNNING);
  executor().FinishTrivial();
  for (uint64_t id : many) EXPECT_EQ(State(id), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(executor().starts().empty());
}

TEST_F(SchedulerTrivialTest, WaitTheirTurnBehindAFullLaneThenRunByPriority) {
  const Admission busy = Submit(gate_task_);  // Takes the only slot.
  ASSERT_EQ(executor().running(), std::vector<uint64_t>{busy.job_id});
  const Admission low = SubmitTrivial("low", {}, 0);
  const Admission high = SubmitTrivial("high", {}, 5);
  EXPECT_EQ(State(low.job_id), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(State(high.job_id), v1::JOB_STATE_QUEUED);
  Done(busy.job_id);  // Its end starts both, on this thread, in order.
  EXPECT_EQ(State(low.job_id), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(State(high.job_id), v1::JOB_STATE_SUCCEEDED);
  EXPECT_LT(sink_->WaitFor(high.job_id, v1::EVENT_TYPE_STARTED).sequence,
            sink_->WaitFor(low.job_id, v1::EVENT_TYPE_STARTED).sequence);
  EXPECT_EQ(executor().starts(),
            std::vector<std::vector<uint64_t>>{{busy.job_id}});
}

TEST_F(SchedulerTrivialTest, ALargeSpecRunsInASlotOfTheExecutor) {
  const Admission a = SubmitTrivial(std::string(kTrivialSpecBytes + 1, 'x'));
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(executor().running(), std::vector<uint64_t>{a.job_id});
  EXPECT_TRUE(RanOn().empty());
}

TEST_F(SchedulerTrivialTest, ALongChainRunsInALoopNotInNestedCalls) {
  // Each job waits for the one before; the first waits behind a busy slot.
  const Admission busy = Submit(gate_task_);
  std::vector<uint64_t> chain = {SubmitTrivial("0").job_id};
  constexpr int kJobs = 20000;  // Nested calls would overflow the stack.
  for (int i = 1; i < kJobs; ++i) {
    const Admission a = SubmitTrivial(absl::StrCat(i), {chain.back()});
    ASSERT_TRUE(a.status.ok()) << a.status;
    chain.push_back(a.job_id);
  }
  EXPECT_EQ(State(chain.back()), v1::JOB_STATE_WAITING);
  Done(busy.job_id);  // The whole chain runs within this call.
  EXPECT_EQ(State(chain.back()), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetJob(chain.back())->result().payload(),
            absl::StrCat(kJobs - 1));
}

TEST_F(SchedulerTrivialTest, AnotherSchedulersRunsOnThisThreadKeepTheirLoop) {
  // A second scheduler (as a process with two daemons has), whose trivial
  // job is submitted from inside this one's run of a trivial job.
  Scheduler other({}, clock_, nullptr);
  auto fake = std::make_unique<FakeExecutor>(
      v1::EXECUTOR_THREAD, 1, other.listener_for(v1::EXECUTOR_THREAD));
  fake->set_runs_trivial(true);
  other.AddExecutor(std::move(fake));
  auto other_sink = std::make_shared<RecordingSink>();
  uint64_t other_id = 0;
  const TaskDef submits = {
      .name = "submits",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .variadic = true,
      .trivial = true,
      .run = [&](TaskContext&) -> absl::StatusOr<TaskOutput> {
        other_id =
            SubmitTo(other, trivial_, "other's", {}, 0, other_sink).job_id;
        return TaskOutput{};
      }};
  const Admission a = SubmitTo(*scheduler_, submits, "", {}, 0, sink_);
  EXPECT_EQ(State(a.job_id), v1::JOB_STATE_SUCCEEDED);
  ASSERT_NE(other_id, 0u);
  // Run and reported by the other scheduler's own loop.
  EXPECT_EQ(other.GetJob(other_id)->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(other.GetJob(other_id)->result().payload(), "other's");
}

TEST_F(SchedulerTrivialTest, WithAJournalALoneOneRunsOnTheJournalsThread) {
  BuildWithJournal(1);
  executor().set_runs_trivial(true);
  // Claimed (at most once): it starts once its claim is durable, which the
  // journal's thread learns first; it runs it there, without a hand-off.
  const uint64_t id = SubmitTrivial("p").job_id;
  EXPECT_EQ(sink_->WaitEnd(id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_TRUE(executor().trivial_batches().empty());
  EXPECT_TRUE(executor().starts().empty());
  const std::set<std::thread::id> ran = RanOn();
  ASSERT_EQ(ran.size(), 1u);
  EXPECT_NE(*ran.begin(), std::this_thread::get_id());
}

TEST_F(SchedulerTrivialTest, WithAJournalManyGoToTheExecutorNotTheJournals) {
  BuildWithJournal(1);
  executor().set_runs_trivial(true);
  // The journal held (a waiter of an empty commit that blocks) while they
  // are submitted: their claims share the next commit, which lets them
  // start at once; the journal's thread hands them on as a batch. (Jobs
  // claimed later, as others end, come a few to a commit: those run on
  // the journal's thread.)
  auto holding = std::make_shared<absl::Notification>();
  auto release = std::make_shared<absl::Notification>();
  journal_->WhenDurable(journal_->ticket(), [holding, release](bool) {
    holding->Notify();
    release->WaitForNotificationWithTimeout(absl::Seconds(10));
  });
  ASSERT_TRUE(holding->WaitForNotificationWithTimeout(absl::Seconds(10)));
  const std::vector<uint64_t> ids = SubmitManyTrivial(20);
  release->Notify();
  auto all_ended = [&] {
    for (uint64_t id : ids) {
      if (!IsTerminal(State(id))) return false;
    }
    return true;
  };
  size_t seen = 0;
  for (int round = 0; round < 200 && !all_ended(); ++round) {
    executor().AwaitTrivialBatches(seen + 1, absl::Milliseconds(50));
    seen = executor().trivial_batches().size();
    executor().FinishTrivial();  // Runs them on this thread.
  }
  for (uint64_t id : ids) {
    EXPECT_EQ(sink_->WaitEnd(id).type, v1::EVENT_TYPE_SUCCEEDED) << id;
  }
  EXPECT_TRUE(executor().starts().empty());
  // Only a commit's few stay on the journal's thread: what it hands on
  // is more. (As a rule the held commit hands on most of them; a slow
  // build, ASan's, may see each commit let a few start.)
  for (const std::vector<uint64_t>& batch : executor().trivial_batches()) {
    EXPECT_GT(batch.size(), Scheduler::kTrivialRunsOnJournal);
  }
}

}  // namespace
}  // namespace jobd
