// Unit tests: the process pool's quarantine of tasks that keep killing
// their workers (workers/process/internal/quarantine.h): kills in a row,
// a job that ends breaking the streak, release, and the refusal's wording.
#include "workers/process/internal/quarantine.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(CrashQuarantineTest, TheNthKillInARowQuarantinesOnce) {
  CrashQuarantine q(3);
  EXPECT_FALSE(q.CountKill("crash"));
  EXPECT_FALSE(q.CountKill("crash"));
  EXPECT_FALSE(q.Contains("crash"));
  EXPECT_TRUE(q.CountKill("crash"));  // Quarantined now: said once.
  EXPECT_TRUE(q.Contains("crash"));
  EXPECT_FALSE(q.CountKill("crash"));
  EXPECT_TRUE(q.Contains("crash"));
  EXPECT_FALSE(q.Contains("other"));
}

TEST(CrashQuarantineTest, AJobThatEndsBreaksTheStreak) {
  CrashQuarantine q(2);
  EXPECT_FALSE(q.CountKill("flaky"));
  q.CountEnd("flaky");
  EXPECT_FALSE(q.CountKill("flaky"));
  EXPECT_FALSE(q.Contains("flaky"));
  EXPECT_TRUE(q.CountKill("flaky"));
}

TEST(CrashQuarantineTest, TasksCountApart) {
  CrashQuarantine q(2);
  EXPECT_FALSE(q.CountKill("a"));
  EXPECT_FALSE(q.CountKill("b"));
  EXPECT_TRUE(q.CountKill("b"));
  EXPECT_FALSE(q.Contains("a"));
}

TEST(CrashQuarantineTest, ReleaseLiftsItAndStartsTheCountAgain) {
  CrashQuarantine q(2);
  q.CountKill("crash");
  EXPECT_FALSE(q.Release("crash"));    // Not quarantined (yet).
  EXPECT_FALSE(q.CountKill("crash"));  // Its streak was forgotten too.
  EXPECT_TRUE(q.CountKill("crash"));
  EXPECT_TRUE(q.Release("crash"));
  EXPECT_FALSE(q.Contains("crash"));
  EXPECT_FALSE(q.CountKill("crash"));
}

TEST(CrashQuarantineTest, ZeroNeverQuarantines) {
  CrashQuarantine q(0);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(q.CountKill("crash"));
  EXPECT_FALSE(q.Contains("crash"));
}

TEST(CrashQuarantineTest, SortedListsTheQuarantinedByName) {
  CrashQuarantine q(1);
  EXPECT_THAT(q.Sorted(), IsEmpty());
  q.CountKill("zeta");
  q.CountKill("alpha");
  q.CountKill("mid");
  EXPECT_THAT(q.Sorted(), ElementsAre("alpha", "mid", "zeta"));
}

TEST(CrashQuarantineTest, TheMessageSaysWhyAndHowToLiftIt) {
  CrashQuarantine q(3);
  EXPECT_EQ(q.Message("crash"),
            "task 'crash' is quarantined: it killed its worker process 3 "
            "times in a row; lift with `jobctl unquarantine crash` (or "
            "restart jobd)");
}

}  // namespace
}  // namespace jobd
