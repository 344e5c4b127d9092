// Unit tests: the process pool's slot bookkeeping (workers/process/
// internal/pool_slots.h): which slot a chunk goes to, jobs going back to
// the queue in order when a worker leaves, the respawn backoff, and the
// reason of a job stopped by cancellation.
#include "workers/process/internal/pool_slots.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

InFlight Job(uint64_t id) {
  InFlight f;
  f.run.job_id = id;
  return f;
}

std::vector<uint64_t> Ids(const std::deque<InFlight>& q) {
  std::vector<uint64_t> ids;
  for (const InFlight& f : q) ids.push_back(f.run.job_id);
  return ids;
}

TEST(ChooseFreeSlotTest, PrefersAFreeSlotWhoseWorkerIsUp) {
  std::vector<Slot> slots(4);  // 3 job slots, then a spare.
  slots[0].chunks = 1;         // Busy.
  slots[1].worker = 0;         // Free, worker being forked.
  slots[2].worker = 7;         // Free, worker up.
  slots[3].worker = 9;         // The spare: never chosen.
  EXPECT_EQ(ChooseFreeSlot(slots, 3, 1), 2);
  slots[2].chunks = 1;
  EXPECT_EQ(ChooseFreeSlot(slots, 3, 1), 1);  // The first free one then.
  slots[1].chunks = 1;
  EXPECT_EQ(ChooseFreeSlot(slots, 3, 1), -1);  // All busy.
}

TEST(ChooseFreeSlotTest, QueuesAtABusyWorkerOnlyWhenEveryWorkerIsBusy) {
  std::vector<Slot> slots(3);  // 2 job slots, then a spare.
  slots[0].worker = 5;
  slots[1].worker = 6;
  slots[2].worker = 9;
  slots[0].chunks = 1;
  // Worker 1 is idle: it gets the chunk, not a queue behind worker 0.
  EXPECT_EQ(ChooseFreeSlot(slots, 2, 4), 1);
  slots[1].chunks = 1;
  EXPECT_EQ(ChooseFreeSlot(slots, 2, 4), 0);  // Both busy: the first.
  slots[0].chunks = 2;
  EXPECT_EQ(ChooseFreeSlot(slots, 2, 4), 1);  // The least loaded.
  slots[0].chunks = 4;
  slots[1].chunks = 4;
  EXPECT_EQ(ChooseFreeSlot(slots, 2, 4), -1);  // Every queue is full.
  EXPECT_EQ(ChooseFreeSlot(slots, 2, 5), 0);
}

TEST(RequeueInFlightTest, SentJobsGoBackBeforeThePendingOnesInOrder) {
  Slot s;
  s.inflight.push_back(Job(3));
  s.inflight.push_back(Job(4));
  s.pending.push_back(Job(5));
  RequeueInFlight(s);
  EXPECT_TRUE(s.inflight.empty());
  EXPECT_THAT(Ids(s.pending), ElementsAre(3, 4, 5));
}

TEST(QuickDeathBackoffTest, DoublesFromTwentyMillisecondsUpToFiveSeconds) {
  EXPECT_EQ(QuickDeathBackoff(1), absl::Milliseconds(20));
  EXPECT_EQ(QuickDeathBackoff(2), absl::Milliseconds(40));
  EXPECT_EQ(QuickDeathBackoff(8), absl::Milliseconds(2560));
  EXPECT_EQ(QuickDeathBackoff(9), absl::Seconds(5));
  EXPECT_EQ(QuickDeathBackoff(1000), absl::Seconds(5));
}

TEST(CancelOutcomeReasonTest, FollowsTheTokensReason) {
  JobRun run;
  run.cancel = std::make_shared<CancelToken>();
  EXPECT_EQ(CancelOutcomeReason(run), v1::ERROR_REASON_CANCELLED);
  run.cancel->Cancel(CancelReason::kTimeout);
  EXPECT_EQ(CancelOutcomeReason(run), v1::ERROR_REASON_TIMEOUT);
  run.cancel = std::make_shared<CancelToken>();
  run.cancel->Cancel(CancelReason::kShutdown);
  EXPECT_EQ(CancelOutcomeReason(run), v1::ERROR_REASON_SHUTDOWN);
  run.cancel = std::make_shared<CancelToken>();
  run.cancel->Cancel(CancelReason::kCancelled);
  EXPECT_EQ(CancelOutcomeReason(run), v1::ERROR_REASON_CANCELLED);
}

}  // namespace
}  // namespace jobd
