// Unit tests: FairQueue splits the picks between callers by their weights
// (1:1, 1:3), a flood of 100x cannot starve a trickle, a caller that
// arrives late or comes back gets no burst of saved-up turns, stale
// entries cost nothing, and a caller's flow lives only while it has
// queued jobs (or is briefly ahead). Deterministic: no clock, no threads.
#include "server/scheduler/fair_queue.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using Verdict = FairQueue::Verdict;

class FairQueueTest : public ::testing::Test {
 protected:
  // Job ids tell their caller: alice's from 1, bob's from 1000000.
  static constexpr uint64_t kBob = 1000000;

  void Queue(const std::string* caller, int n, uint32_t weight = 1) {
    uint64_t& next = caller == &alice_ ? next_alice_ : next_bob_;
    for (int i = 0; i < n; ++i) q_.Push(caller, weight, next++);
  }
  // The next job taken, one at a time (0: none).
  uint64_t TakeOne() {
    uint64_t got = 0;
    q_.Take([&](uint64_t id) {
      if (stale_.contains(id)) return Verdict::kSkip;
      got = id;
      return Verdict::kTakeLast;
    });
    return got;
  }
  // Of the next `n` jobs taken, how many were bob's.
  int BobsOf(int n) {
    int bobs = 0;
    for (int i = 0; i < n; ++i) bobs += TakeOne() >= kBob;
    return bobs;
  }

  const std::string alice_ = "alice", bob_ = "bob";
  uint64_t next_alice_ = 1, next_bob_ = kBob;
  absl::flat_hash_set<uint64_t> stale_;
  FairQueue q_;
};

TEST_F(FairQueueTest, OneCallerIsFifo) {
  Queue(&alice_, 5);
  std::vector<uint64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(TakeOne());
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4, 5, 0));
  EXPECT_TRUE(q_.empty());
  EXPECT_EQ(q_.flows(), 0u);
}

TEST_F(FairQueueTest, EqualWeightsAlternate) {
  Queue(&alice_, 1000);
  Queue(&bob_, 1000);
  std::vector<uint64_t> first;
  for (int i = 0; i < 4; ++i) first.push_back(TakeOne());
  EXPECT_THAT(first, ElementsAre(1, kBob, 2, kBob + 1));
  EXPECT_EQ(BobsOf(1000), 500);
}

TEST_F(FairQueueTest, WeightsOneToThree) {
  Queue(&alice_, 1000, /*weight=*/3);
  Queue(&bob_, 1000, /*weight=*/1);
  EXPECT_EQ(BobsOf(1000), 250);
}

TEST_F(FairQueueTest, AFloodOfAHundredTimesCannotStarveATrickle) {
  Queue(&alice_, 10000);
  Queue(&bob_, 100);
  // Bob's 100 jobs all start within the first 200 picks, one in two.
  EXPECT_EQ(BobsOf(200), 100);
  // Then alice has the queue to herself.
  EXPECT_EQ(BobsOf(100), 0);
  EXPECT_EQ(q_.flows(), 1u);
}

TEST_F(FairQueueTest, ATrickleThatRefillsAtOnceGetsItsShareAndNoMore) {
  // Bob has one job queued at a time, and queues the next as soon as
  // his last is taken: his flow empties every time. He must not jump
  // ahead of alice at each return.
  Queue(&alice_, 10000);
  Queue(&bob_, 1);
  int bobs = 0;
  for (int i = 0; i < 1000; ++i) {
    if (TakeOne() >= kBob) {
      ++bobs;
      Queue(&bob_, 1);
    }
  }
  EXPECT_NEAR(bobs, 500, 1);
}

TEST_F(FairQueueTest, ALateCallerGetsNoSavedUpCredit) {
  Queue(&alice_, 10000);
  EXPECT_EQ(BobsOf(1000), 0);  // Alice alone for a long time.
  Queue(&bob_, 1000);
  // From now on, half each: no burst for bob's idle past.
  EXPECT_EQ(BobsOf(20), 10);
  EXPECT_EQ(BobsOf(200), 100);
}

TEST_F(FairQueueTest, ACallerBackFromAPauseGetsNoSavedUpCredit) {
  Queue(&alice_, 10000, 1);
  Queue(&bob_, 10);
  EXPECT_EQ(BobsOf(20), 10);  // Bob's ten, then he pauses.
  EXPECT_EQ(BobsOf(500), 0);
  Queue(&bob_, 100);
  EXPECT_EQ(BobsOf(20), 10);
}

TEST_F(FairQueueTest, StaleEntriesAreDroppedWithoutCharge) {
  Queue(&alice_, 4);
  Queue(&bob_, 4);
  stale_ = {1, 2, 3};  // Alice's first three ended while queued.
  EXPECT_EQ(TakeOne(), 4u);
  EXPECT_EQ(q_.pass(&alice_), FairQueue::kScale);  // One job's worth.
  EXPECT_EQ(TakeOne(), kBob);
  EXPECT_EQ(TakeOne(), kBob + 1);  // Alice's queue is empty.
  q_.RemoveIf([](uint64_t id) { return id == kBob + 3; });
  EXPECT_EQ(q_.size(), 1u);
  EXPECT_EQ(TakeOne(), kBob + 2);
  EXPECT_EQ(TakeOne(), 0u);
  EXPECT_EQ(q_.flows(), 0u);
}

TEST_F(FairQueueTest, AFlowLivesWhileItHasJobsOrIsAhead) {
  Queue(&alice_, 100);
  Queue(&bob_, 1);
  EXPECT_EQ(q_.flows(), 2u);
  EXPECT_EQ(TakeOne(), 1u);
  EXPECT_EQ(TakeOne(), kBob);  // Bob's queue is empty; he is ahead,
  EXPECT_EQ(q_.flows(), 2u);   // so his pass is kept,
  EXPECT_EQ(q_.active(), 1u);
  EXPECT_EQ(TakeOne(), 2u);  // until the virtual time catches up with it.
  EXPECT_EQ(q_.flows(), 1u);
}

TEST_F(FairQueueTest, AJobPutBackIsNotChargedTwice) {
  Queue(&alice_, 10);
  Queue(&bob_, 10);
  EXPECT_EQ(TakeOne(), 1u);     // Taken, then parked by its key, and
  q_.PushFront(&alice_, 1, 1);  // granted: back at the front, refunded.
  EXPECT_EQ(TakeOne(), 1u);
  EXPECT_EQ(TakeOne(), kBob);
  EXPECT_EQ(TakeOne(), 2u);
}

TEST_F(FairQueueTest, ChunksComeFromOneCallerAndAreChargedPerJob) {
  Queue(&alice_, 10);
  Queue(&bob_, 10);
  std::vector<uint64_t> chunk;
  q_.Take([&](uint64_t id) {
    chunk.push_back(id);
    return chunk.size() == 4 ? Verdict::kTakeLast : Verdict::kTake;
  });
  EXPECT_THAT(chunk, ElementsAre(1, 2, 3, 4));
  // Alice owes four jobs' worth: bob goes four times before her.
  EXPECT_EQ(BobsOf(4), 4);
  EXPECT_EQ(BobsOf(2), 1);
}

TEST_F(FairQueueTest, ReweighChangesTheSplitOfCallersQueued) {
  Queue(&alice_, 1000);
  Queue(&bob_, 1000);
  EXPECT_EQ(BobsOf(100), 50);
  q_.Reweigh(CallerWeights({{"bob", 3}}));
  EXPECT_NEAR(BobsOf(400), 300, 1);
}

TEST(CallerWeightsTest, UnnamedCallersWeighOne) {
  const CallerWeights none;
  EXPECT_EQ(none.Of("anyone"), 1u);
  const CallerWeights some({{"alice", 5}});
  EXPECT_EQ(some.Of("alice"), 5u);
  EXPECT_EQ(some.Of("bob"), 1u);
}

}  // namespace
}  // namespace jobd
