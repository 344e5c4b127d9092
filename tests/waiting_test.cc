// Unit tests: the Waiting set (server/scheduler/waiting.h) alone.
#include "server/scheduler/waiting.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1767225600);

TEST(WaitingTest, TakesWhatIsDueEarliestFirstAndLeavesTheRest) {
  Waiting w;
  EXPECT_EQ(w.next(), absl::InfiniteFuture());
  w.Add(3, kT0 + absl::Seconds(3));
  w.Add(1, kT0 + absl::Seconds(1));
  w.Add(2, kT0 + absl::Seconds(1));  // A tie: in id order.
  w.Add(4, kT0 + absl::Seconds(10));
  EXPECT_EQ(w.next(), kT0 + absl::Seconds(1));
  EXPECT_THAT(w.TakeDue(kT0, 100), IsEmpty());
  EXPECT_THAT(w.TakeDue(kT0 + absl::Seconds(3), 100), ElementsAre(1, 2, 3));
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.next(), kT0 + absl::Seconds(10));
}

TEST(WaitingTest, TakesAtMostABatch) {
  Waiting w;
  for (uint64_t id = 1; id <= 10; ++id) w.Add(id, kT0);
  EXPECT_THAT(w.TakeDue(kT0, 4), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(w.TakeDue(kT0, 4), ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(w.TakeDue(kT0, 4), ElementsAre(9, 10));
  EXPECT_TRUE(w.empty());
}

TEST(WaitingTest, RemoveNeedsTheTimeItWasAddedWith) {
  Waiting w;
  w.Add(7, kT0 + absl::Minutes(1));
  EXPECT_FALSE(w.Remove(7, kT0));
  EXPECT_TRUE(w.Remove(7, kT0 + absl::Minutes(1)));
  EXPECT_FALSE(w.Remove(7, kT0 + absl::Minutes(1)));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.next(), absl::InfiniteFuture());
}

TEST(WaitingTest, PastTimesAreDueAtOnce) {
  Waiting w;
  w.Add(1, absl::InfinitePast());
  w.Add(2, kT0 - absl::Hours(1));
  EXPECT_THAT(w.TakeDue(kT0, 10), ElementsAre(1, 2));
}

}  // namespace
}  // namespace jobd
