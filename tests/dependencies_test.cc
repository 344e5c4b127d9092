// Unit tests: the Dependencies part (server/scheduler/dependencies.h) alone.
#include "server/scheduler/dependencies.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(DependenciesTest, ADependantIsReadyWhenItsLastDependencyIsMet) {
  Dependencies d;
  const uint64_t deps[] = {1, 2};
  d.Add(10, deps);
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(d.Unmet(10), 2u);
  EXPECT_TRUE(d.HasDependants(1));
  EXPECT_THAT(d.TakeDependants(2), ElementsAre(10));
  EXPECT_FALSE(d.Met(10));
  EXPECT_EQ(d.Unmet(10), 1u);
  EXPECT_FALSE(d.HasDependants(2));
  EXPECT_THAT(d.TakeDependants(1), ElementsAre(10));
  EXPECT_TRUE(d.Met(10));
  EXPECT_EQ(d.size(), 0u);
  EXPECT_EQ(d.Unmet(10), 0u);
}

TEST(DependenciesTest, ARemovedDependantIsSkippedWhenItsDependencyEnds) {
  Dependencies d;
  const uint64_t deps[] = {1};
  d.Add(10, deps);
  d.Add(11, deps);
  EXPECT_TRUE(d.Remove(10));
  EXPECT_FALSE(d.Remove(10));
  EXPECT_THAT(d.TakeDependants(1), ElementsAre(11));
  EXPECT_THAT(d.TakeDependants(1), IsEmpty());  // Taken once.
  EXPECT_FALSE(d.Contains(10));
}

TEST(DependenciesTest, FanInOfManyReleasesOnceAfterTheLast) {
  Dependencies d;
  std::vector<uint64_t> deps;
  for (uint64_t i = 1; i <= 10000; ++i) deps.push_back(i);
  d.Add(20000, deps);
  int ready = 0;
  for (uint64_t i = 1; i <= 10000; ++i) {
    for (uint64_t dependant : d.TakeDependants(i)) {
      if (d.Met(dependant)) {
        ++ready;
        EXPECT_EQ(i, 10000u);
      }
    }
  }
  EXPECT_EQ(ready, 1);
  EXPECT_EQ(d.size(), 0u);
}

TEST(DependenciesTest, AnEmptyListAddsNothing) {
  Dependencies d;
  d.Add(1, {});
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.Contains(1));
}

}  // namespace
}  // namespace jobd
