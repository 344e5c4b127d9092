// Unit tests: JobTable stores records by id, idempotency key (per owner)
// and owner, and counts what live jobs hold.
#include "server/scheduler/job_table.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/job_records.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

TEST(JobTableTest, FindsJobsByIdOwnerAndKey) {
  JobTable table;
  const std::string* alice = table.Intern("alice");
  const std::string* bob = table.Intern("bob");
  EXPECT_EQ(table.Intern("alice"), alice);  // Interned: one pointer.
  table.Add(MakeRecord(table.NextId(), alice, {.idempotency_key = "k"}));
  table.Add(MakeRecord(table.NextId(), bob, {.idempotency_key = "k"}));
  ASSERT_NE(table.Find(1), nullptr);
  EXPECT_EQ(table.Find(3), nullptr);
  EXPECT_NE(table.FindOwned(1, "alice"), nullptr);
  EXPECT_NE(table.FindOwned(1, ""), nullptr);  // Any owner.
  EXPECT_EQ(table.FindOwned(1, "bob"), nullptr);
  // Keys are per owner: the same key names each owner's own job.
  ASSERT_NE(table.FindByKey("alice", "k"), nullptr);
  EXPECT_EQ(table.FindByKey("alice", "k")->id, 1u);
  EXPECT_EQ(table.FindByKey("bob", "k")->id, 2u);
  EXPECT_EQ(table.FindByKey("carol", "k"), nullptr);
}

TEST(JobTableTest, ErasingAJobFreesOnlyItsOwnKey) {
  JobTable table;
  const std::string* owner = table.Intern("");
  table.Add(MakeRecord(1, owner, {.idempotency_key = "k"}));
  // Restored rows come by id: the newest job of a key keeps it.
  table.Add(MakeRecord(2, owner, {.idempotency_key = "k"}));
  EXPECT_EQ(table.FindByKey("", "k")->id, 2u);
  table.Erase(1);  // The older one: the key stays with job 2.
  ASSERT_NE(table.FindByKey("", "k"), nullptr);
  EXPECT_EQ(table.FindByKey("", "k")->id, 2u);
  table.Erase(2);
  EXPECT_EQ(table.FindByKey("", "k"), nullptr);
  EXPECT_TRUE(table.jobs().empty());
  table.Erase(2);  // Unknown: nothing happens.
}

TEST(JobTableTest, IdsCarryOnAfterRestoredOnes) {
  JobTable table;
  const std::string* owner = table.Intern("");
  table.Add(MakeRecord(41, owner));
  EXPECT_EQ(table.NextId(), 42u);
}

TEST(JobTableTest, CountsLiveJobsAndTheirSpecsPerOwner) {
  JobTable table;
  const std::string* alice = table.Intern("alice");
  JobRecord& a = table.Add(MakeRecord(1, alice, {.payload = "0123456789"}));
  JobRecord& b = table.Add(MakeRecord(2, alice));
  table.Add(MakeRecord(3, alice, {.state = v1::JOB_STATE_SUCCEEDED}));
  table.CountLive(a);
  table.CountLive(b);
  const uint64_t bytes = SpecBytes(*a.spec) + SpecBytes(*b.spec);
  EXPECT_EQ(table.live(), 2u);
  EXPECT_EQ(table.live_bytes(), bytes);
  EXPECT_EQ(table.usage(alice).live, 2u);
  EXPECT_EQ(table.usage(alice).live_bytes, bytes);
  EXPECT_THAT(table.LiveIds(), ElementsAre(1, 2));
  table.CountEnded(a);
  EXPECT_EQ(table.live(), 1u);
  EXPECT_EQ(table.live_bytes(), SpecBytes(*b.spec));
  EXPECT_EQ(table.usage(alice).live, 1u);
}

}  // namespace
}  // namespace jobd
