// Unit tests: Retention keeps ended jobs in end order and forgets the
// oldest first: over the count or byte limits at once, past the TTL at a
// sweep, over an owner's byte quota its own oldest. No journal here (the
// scheduler's retention tests cover a nearly full journal).
#include "server/scheduler/retention.h"

#include "gtest/gtest.h"
#include "tests/fakes/job_records.h"

namespace jobd {
namespace {

class RetentionTest : public ::testing::Test {
 protected:
  // Adds an ended job `id` of `owner` that ended at `finish` and retains it.
  void End(Retention& retention, uint64_t id, const std::string* owner,
           absl::Time finish = absl::UnixEpoch()) {
    JobRecord& job = table_.Add(MakeRecord(
        id, owner, {.state = v1::JOB_STATE_SUCCEEDED, .finish_time = finish}));
    retention.Retain(job);
  }
  bool Kept(uint64_t id) const { return table_.Find(id) != nullptr; }

  JobTable table_;
  const std::string* owner_ = table_.Intern("");
};

TEST_F(RetentionTest, OverTheCountTheOldestGoFirst) {
  Retention retention(table_, nullptr, {.max_count = 2});
  End(retention, 1, owner_);
  End(retention, 2, owner_);
  End(retention, 3, owner_);
  EXPECT_FALSE(Kept(1));
  EXPECT_TRUE(Kept(2));
  EXPECT_TRUE(Kept(3));
  EXPECT_EQ(retention.retained(), 2u);
}

TEST_F(RetentionTest, OverTheBytesTheOldestGoFirst) {
  // What one ended job holds: its spec and its end (job_records.h).
  const uint64_t one = SpecBytes(*MakeRecord(9, owner_)->spec) + 100;
  Retention retention(table_, nullptr, {.max_bytes = 2 * one});
  End(retention, 1, owner_);
  End(retention, 2, owner_);
  EXPECT_EQ(retention.retained_bytes(), 2 * one);
  End(retention, 3, owner_);
  EXPECT_FALSE(Kept(1));
  EXPECT_TRUE(Kept(3));
  EXPECT_EQ(retention.retained_bytes(), 2 * one);
}

TEST_F(RetentionTest, ASweepForgetsWhatIsPastTheTtl) {
  const absl::Time t0 = absl::FromUnixSeconds(1767225600);
  Retention retention(table_, nullptr, {.ttl = absl::Minutes(10)});
  End(retention, 1, owner_, t0);
  End(retention, 2, owner_, t0 + absl::Minutes(5));
  retention.Sweep(t0 + absl::Minutes(9));
  EXPECT_TRUE(Kept(1));
  retention.Sweep(t0 + absl::Minutes(10));  // Exactly the TTL: gone.
  EXPECT_FALSE(Kept(1));
  EXPECT_TRUE(Kept(2));
  // A lower limit, reloaded, applies at the next sweep.
  retention.SetLimits({.ttl = absl::Minutes(1)});
  retention.Sweep(t0 + absl::Minutes(10));
  EXPECT_FALSE(Kept(2));
  EXPECT_EQ(retention.retained(), 0u);
}

TEST_F(RetentionTest, AdoptedJobsWaitForTheSweep) {
  Retention retention(table_, nullptr, {.max_count = 1});
  for (uint64_t id : {1, 2, 3}) {
    retention.Adopt(
        table_.Add(MakeRecord(id, owner_, {.state = v1::JOB_STATE_FAILED})));
  }
  EXPECT_EQ(retention.retained(), 3u);  // As they were before the restart.
  retention.Sweep(absl::UnixEpoch());
  EXPECT_EQ(retention.retained(), 1u);
  EXPECT_TRUE(Kept(3));
}

TEST_F(RetentionTest, AnOwnerOverItsQuotaLosesItsOwnOldestOnly) {
  const std::string* alice = table_.Intern("alice");
  const std::string* bob = table_.Intern("bob");
  Retention retention(table_, nullptr, {});
  End(retention, 1, bob);
  End(retention, 2, alice);
  End(retention, 3, alice);
  OwnerUsage& usage = table_.usage(alice);
  const uint64_t one = usage.retained_bytes / 2;
  usage.max_bytes = 2 * one;
  retention.TrimOwner(usage, one);  // Room for one more of alice's.
  EXPECT_TRUE(Kept(1));             // Bob's, older, stays.
  EXPECT_FALSE(Kept(2));
  EXPECT_TRUE(Kept(3));
  EXPECT_EQ(usage.retained_bytes, one);
  // Its id stays in the end order, skipped at the next sweep.
  retention.Sweep(absl::UnixEpoch());
  EXPECT_EQ(retention.retained(), 2u);
}

}  // namespace
}  // namespace jobd
