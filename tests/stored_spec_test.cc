// Unit tests of StoredSpec (server/jobs/stored_spec.h): a spec kept without
// its task name gives it back in every accessor that hands out the whole
// spec; a spec kept whole (read back from the journal) reads the same.
#include "server/jobs/stored_spec.h"

#include <string>

#include "google/protobuf/util/message_differencer.h"
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

// Arguments nested in lists and maps: what the sizes cached when a
// StoredSpec is made must cover, each part's own.
v1::JobSpec Nested() {
  v1::JobSpec spec = Spec();
  auto* list = spec.add_args()->mutable_list_value();
  list->add_values()->set_string_value(std::string(300, 'x'));  // 2-byte len.
  list->add_values()->mutable_struct_value();
  auto& fields = *spec.mutable_kwargs()->mutable_fields();
  fields["name"].set_string_value("a name");
  auto& inner = *fields["inner"].mutable_struct_value()->mutable_fields();
  inner["n"].set_number_value(1.5);
  inner["deep"].mutable_list_value()->add_values()->set_bool_value(true);
  return spec;
}

TEST(StoredSpecTest, SerializesNestedArgumentsWithTheSizesCachedWhenMade) {
  using google::protobuf::util::MessageDifferencer;
  const TaskDef task{.name = "sleep"};
  const StoredSpec kept(Nested(), task);
  const StoredSpec read_back = std::make_shared<const v1::JobSpec>(Nested());
  for (const StoredSpec* stored : {&kept, &read_back}) {
    std::string bytes = "prefix";  // Appended after what is there.
    stored->AppendWholeTo(&bytes);
    ASSERT_EQ(bytes.substr(0, 6), "prefix");
    v1::JobSpec parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes.substr(6)));
    EXPECT_TRUE(MessageDifferencer::Equals(parsed, Nested()))
        << parsed.DebugString();
    EXPECT_EQ(bytes.size() - 6, Nested().ByteSizeLong());
  }
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
