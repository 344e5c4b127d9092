// Unit tests of StoredSpec (server/jobs/stored_spec.h): a spec kept without
// its task name gives it back in every accessor that hands out the whole
// spec; a spec kept whole (read back from the journal) reads the same.
#include "server/jobs/stored_spec.h"

#include <string>

#include "gtest/gtest.h"

namespace jobd {
namespace {

v1::JobSpec Spec() {
  v1::JobSpec spec;
  spec.set_task("sleep");
  spec.add_args()->set_number_value(5);
  spec.set_payload("bytes");
  spec.set_priority(3);
  return spec;
}

TEST(StoredSpecTest, KeepsTheBodyWithoutItsNameAndGivesTheWholeBack) {
  const TaskDef task{.name = "sleep"};
  const StoredSpec stored(Spec(), task);
  EXPECT_EQ(stored->task(), "");  // The string is not kept.
  EXPECT_EQ(stored->priority(), 3);
  EXPECT_EQ(stored.body()->payload(), "bytes");
  EXPECT_EQ(stored.task(), &task);
  EXPECT_EQ(stored.task_name(), "sleep");
  EXPECT_EQ(stored.Whole().SerializeAsString(), Spec().SerializeAsString());
  // Serialized whole, it parses back to the spec the client sent.
  std::string bytes;
  stored.AppendWholeTo(&bytes);
  v1::JobSpec parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_EQ(parsed.SerializeAsString(), Spec().SerializeAsString());
}

TEST(StoredSpecTest, ASpecReadBackWholeReadsTheSame) {
  const StoredSpec stored = std::make_shared<const v1::JobSpec>(Spec());
  EXPECT_EQ(stored.task(), nullptr);
  EXPECT_EQ(stored.task_name(), "sleep");
  EXPECT_EQ(stored.Whole().SerializeAsString(), Spec().SerializeAsString());
  std::string bytes;
  stored.AppendWholeTo(&bytes);
  EXPECT_EQ(bytes, Spec().SerializeAsString());  // Nothing appended twice.
  StoredSpec with_task = stored;
  const TaskDef task{.name = "sleep"};
  with_task.set_task(&task);
  EXPECT_EQ(with_task.Whole().task(), "sleep");
  EXPECT_FALSE(with_task == nullptr);
  EXPECT_TRUE(StoredSpec() == nullptr);
}

}  // namespace
}  // namespace jobd
