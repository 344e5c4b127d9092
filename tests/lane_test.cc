// Unit tests: Lane picks the next chunk by priority (FIFO within one),
// skips and compacts jobs that ended while queued, counts slots, and
// gates starts on durable claims with its claim-ahead window. The fake
// executor records what the lane hands it.
#include "server/scheduler/lane.h"

#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_executor.h"
#include "tests/fakes/job_records.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class NoListener : public ExecutorListener {
 public:
  void OnJobProgress(uint64_t, double, std::string_view) override {}
  void OnJobFinished(uint64_t, JobOutcome) override {}
};

class LaneTest : public ::testing::Test {
 protected:
  void SetUpLane(int slots, int max_chunk = 1) {
    auto fake = std::make_unique<FakeExecutor>(v1::EXECUTOR_THREAD, slots,
                                               listener_, max_chunk);
    executor_ = fake.get();
    lane_.set_executor(std::move(fake));
  }
  void SetUp() override { SetUpLane(1); }

  // Queues job `id` (priority, chunksize, caller: owner_ if null) in the
  // lane.
  void Queue(uint64_t id, int32_t priority = 0, uint32_t chunksize = 0,
             const std::string* owner = nullptr) {
    if (owner == nullptr) owner = &owner_;
    jobs_[id] =
        MakeRecord(id, owner, {.priority = priority, .chunksize = chunksize});
    lane_.Push(priority, owner, id);
  }
  // Ends queued job `id` (cancelled): its entry goes stale.
  void Cancel(uint64_t id) {
    jobs_[id]->state = v1::JOB_STATE_CANCELLED;
    lane_.Unqueue(id, [&](uint64_t q) { return Queued(q) != nullptr; });
  }
  JobRecord* Queued(uint64_t id) {
    auto it = jobs_.find(id);
    return it != jobs_.end() && it->second->state == v1::JOB_STATE_QUEUED
               ? it->second.get()
               : nullptr;
  }
  // The ids of the next chunk.
  std::vector<uint64_t> Take() {
    std::vector<uint64_t> ids;
    for (JobRecord* job :
         lane_.TakeChunk([&](uint64_t id) { return Queued(id); })) {
      ids.push_back(job->id);
      job->state = v1::JOB_STATE_RUNNING;
    }
    return ids;
  }
  static std::vector<JobRun> Runs(std::vector<uint64_t> ids) {
    std::vector<JobRun> runs;
    for (uint64_t id : ids) {
      JobRun run;
      run.job_id = id;
      runs.push_back(std::move(run));
    }
    return runs;
  }

  NoListener listener_;
  std::string owner_;
  Lane lane_;
  FakeExecutor* executor_ = nullptr;  // Owned by lane_.
  absl::flat_hash_map<uint64_t, std::unique_ptr<JobRecord>> jobs_;
};

TEST_F(LaneTest, HigherPriorityFirstFifoWithin) {
  Queue(1, 0);
  Queue(2, 5);
  Queue(3, 0);
  Queue(4, 5);
  Queue(5, -1);
  EXPECT_EQ(lane_.queued(), 5u);
  std::vector<uint64_t> order;
  for (int i = 0; i < 6; ++i) {
    for (uint64_t id : Take()) order.push_back(id);
  }
  EXPECT_THAT(order, ElementsAre(2, 4, 1, 3, 5));
  EXPECT_EQ(lane_.queued(), 0u);
}

TEST_F(LaneTest, JobsThatEndedWhileQueuedAreSkipped) {
  Queue(1);
  Queue(2);
  Cancel(1);
  EXPECT_EQ(lane_.queued(), 1u);
  EXPECT_EQ(lane_.stale(), 1u);
  EXPECT_THAT(Take(), ElementsAre(2));
  EXPECT_EQ(lane_.stale(), 0u);
  EXPECT_THAT(Take(), IsEmpty());
}

TEST_F(LaneTest, StaleEntriesAreDroppedOnceTheyOutnumberLiveOnes) {
  for (uint64_t id = 1; id <= 3000; ++id) Queue(id, id % 3);
  for (uint64_t id = 1; id <= 1025; ++id) Cancel(id);
  EXPECT_EQ(lane_.stale(), 1025u);  // Not yet more than the live ones.
  for (uint64_t id = 1026; id <= 1600; ++id) Cancel(id);
  // Past the live ones: compacted at once (then counting again).
  EXPECT_LT(lane_.stale(), 1024u);
  EXPECT_EQ(lane_.queued(), 1400u);
  std::vector<uint64_t> taken;
  for (int i = 0; i < 2000 && lane_.queued() > 0; ++i) {
    for (uint64_t id : Take()) taken.push_back(id);
  }
  EXPECT_EQ(taken.size(), 1400u);
  for (uint64_t id : taken) EXPECT_GT(id, 1600u);
}

TEST_F(LaneTest, ChunksTakeJobsOfOnePriorityThatAllowThem) {
  SetUpLane(1, /*max_chunk=*/4);
  Queue(1, 0, 3);
  Queue(2, 0, 8);  // Capped by the first job's chunksize.
  Queue(3, 0, 8);
  Queue(4, 0, 8);
  Queue(5, 0, 0);  // Wants to travel alone.
  Queue(6, 0, 8);
  Queue(7, -1, 8);  // Another priority.
  EXPECT_THAT(Take(), ElementsAre(1, 2, 3));
  EXPECT_THAT(Take(), ElementsAre(4));
  EXPECT_THAT(Take(), ElementsAre(5));
  EXPECT_THAT(Take(), ElementsAre(6));
  EXPECT_THAT(Take(), ElementsAre(7));
}

TEST_F(LaneTest, CallersTakeTurnsWithinAPriorityNotAcrossOne) {
  const std::string alice = "alice", bob = "bob";
  for (uint64_t id = 1; id <= 4; ++id) Queue(id, 0, 0, &alice);
  Queue(5, 0, 0, &bob);
  Queue(6, 0, 0, &bob);
  Queue(7, 1, 0, &alice);  // A higher priority goes first, whoever's.
  std::vector<uint64_t> order;
  for (int i = 0; i < 8; ++i) {
    for (uint64_t id : Take()) order.push_back(id);
  }
  EXPECT_THAT(order, ElementsAre(7, 1, 5, 2, 6, 3, 4));
}

TEST_F(LaneTest, CallerWeightsSplitTheStarts) {
  const std::string alice = "alice", bob = "bob";
  lane_.SetCallerWeights(CallerWeights({{"alice", 3}}));
  for (uint64_t id = 1; id <= 8; ++id) Queue(id, 0, 0, &alice);
  for (uint64_t id = 11; id <= 18; ++id) Queue(id, 0, 0, &bob);
  std::vector<uint64_t> order;
  for (int i = 0; i < 8; ++i) {
    for (uint64_t id : Take()) order.push_back(id);
  }
  // Three of alice's for each of bob's.
  EXPECT_THAT(order, ElementsAre(1, 11, 2, 3, 4, 12, 5, 6));
}

TEST_F(LaneTest, AChunkComesFromOneCaller) {
  SetUpLane(1, /*max_chunk=*/4);
  const std::string alice = "alice", bob = "bob";
  Queue(1, 0, 4, &alice);
  Queue(2, 0, 4, &bob);
  Queue(3, 0, 4, &alice);
  Queue(4, 0, 4, &bob);
  Queue(5, 0, 4, &alice);
  EXPECT_THAT(Take(), ElementsAre(1, 3, 5));
  EXPECT_THAT(Take(), ElementsAre(2, 4));
}

TEST_F(LaneTest, SlotsAreCountedFromHandToReturn) {
  SetUpLane(2);
  EXPECT_EQ(lane_.FreeSlots(), 2);
  EXPECT_TRUE(lane_.HasRoom(2, /*gate=*/false, 0));
  lane_.Hand(Runs({1}));
  lane_.Hand(Runs({2}));
  EXPECT_EQ(lane_.busy(), 2);
  EXPECT_FALSE(lane_.HasRoom(2, false, 0));
  EXPECT_THAT(executor_->starts(), ElementsAre(ElementsAre(1), ElementsAre(2)));
  JobOutcome outcome;
  outcome.frees_slot = true;
  outcome.wall_time = absl::Milliseconds(8);
  lane_.Returned(outcome);
  EXPECT_EQ(lane_.busy(), 1);
  EXPECT_EQ(lane_.run_time(), absl::Milliseconds(8));
  outcome.wall_time = absl::Milliseconds(16);
  lane_.Returned(outcome);  // A moving average: 7/8 old, 1/8 new.
  EXPECT_EQ(lane_.run_time(), absl::Milliseconds(9));
}

TEST_F(LaneTest, AClaimStartsOnlyOnceDurableAndInOrder) {
  lane_.Claim(Runs({1}), /*ticket=*/5);
  lane_.Claim(Runs({2}), /*ticket=*/6);
  EXPECT_EQ(lane_.claimed(), 2u);
  EXPECT_EQ(lane_.FreeSlots(), 0);  // Claimed jobs take the free slot.
  EXPECT_FALSE(lane_.TakeDurable(1, 4).has_value());
  EXPECT_EQ(lane_.ArmGate(4), 5u);  // Wake me at ticket 5,
  EXPECT_EQ(lane_.ArmGate(4), 0u);  // once.
  auto first = lane_.TakeDurable(1, 6);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->front().job_id, 1u);
  lane_.Hand(*std::move(first));
  // Durable, but no free slot: it waits.
  EXPECT_FALSE(lane_.TakeDurable(1, 6).has_value());
  EXPECT_EQ(lane_.ArmGate(6), 0u);  // Durable already: no wake-up.
  JobOutcome outcome;
  outcome.frees_slot = true;
  lane_.Returned(outcome);
  auto second = lane_.TakeDurable(1, 6);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->front().job_id, 2u);
  EXPECT_EQ(lane_.claimed(), 0u);
}

TEST_F(LaneTest, TheWindowClaimsAheadOnlyForJobsShorterThanACommit) {
  const absl::Duration commit = absl::Milliseconds(2);
  EXPECT_EQ(lane_.Window(4, commit, 1000), 0u);  // No job ran yet.
  JobOutcome outcome;
  outcome.frees_slot = false;  // Only its run time counts here.
  outcome.wall_time = absl::Milliseconds(5);
  lane_.Returned(outcome);
  EXPECT_EQ(lane_.Window(4, commit, 1000), 0u);  // Longer than a commit.
  outcome.wall_time = absl::Microseconds(100);
  Lane fresh;
  fresh.Returned(outcome);
  // 2 * slots * latency / run time.
  EXPECT_EQ(fresh.Window(4, commit, 1000), 160u);
  EXPECT_EQ(fresh.Window(4, commit, 50), 50u);  // At most start_window.
  // With the window, claims may run ahead of the free slots.
  EXPECT_TRUE(fresh.HasRoom(1, /*gate=*/true, 2));
  fresh.Claim(Runs({1, 2}), 1);
  EXPECT_TRUE(fresh.HasRoom(1, true, 2));
  fresh.Claim(Runs({3}), 1);
  EXPECT_FALSE(fresh.HasRoom(1, true, 2));
}

}  // namespace
}  // namespace jobd
