// Unit tests: StreamTags, a Submit stream's client tags and their jobs
// (server/frontend/stream_tags.h): found while tags ascend and after one
// comes out of order, the latest item with a tag wins, the oldest are
// forgotten past the bound.
#include "server/frontend/stream_tags.h"

#include "gtest/gtest.h"

namespace jobd {
namespace {

TEST(StreamTagsTest, AscendingTagsAreFoundAndTheOldestForgotten) {
  StreamTags tags(/*max=*/100);
  for (uint64_t i = 0; i < 250; ++i) tags.Remember(10 * i, i, 1000 + i);
  EXPECT_TRUE(tags.ascending());
  for (uint64_t i = 150; i < 250; ++i) {
    const StreamTags::TagJob* found = tags.Find(10 * i);
    ASSERT_NE(found, nullptr) << i;
    EXPECT_EQ(found->index, i);
    EXPECT_EQ(found->job_id, 1000 + i);
  }
  EXPECT_EQ(tags.Find(10 * 149), nullptr);      // Forgotten.
  EXPECT_EQ(tags.Find(10 * 200 + 5), nullptr);  // Never seen.
  EXPECT_EQ(tags.Find(10 * 250), nullptr);
}

TEST(StreamTagsTest, ATagOutOfOrderKeepsEveryKeptItemFindable) {
  StreamTags tags(/*max=*/100);
  for (uint64_t i = 0; i < 50; ++i) tags.Remember(i, i, 1000 + i);
  tags.Remember(7, 50, 2000);  // Tag 7 again: the latest wins.
  EXPECT_FALSE(tags.ascending());
  ASSERT_NE(tags.Find(7), nullptr);
  EXPECT_EQ(tags.Find(7)->job_id, 2000u);
  for (uint64_t i = 0; i < 50; ++i) {
    if (i == 7) continue;
    ASSERT_NE(tags.Find(i), nullptr) << i;
    EXPECT_EQ(tags.Find(i)->job_id, 1000 + i);
  }
  // Past the bound, the oldest go; tag 7's later item stays until it is
  // the oldest itself.
  for (uint64_t i = 51; i < 150; ++i) tags.Remember(1000 + i, i, 3000 + i);
  EXPECT_EQ(tags.Find(0), nullptr);
  EXPECT_EQ(tags.Find(49), nullptr);
  ASSERT_NE(tags.Find(7), nullptr);
  EXPECT_EQ(tags.Find(7)->index, 50u);
  tags.Remember(5000, 150, 1);  // Now index 50 is the oldest to go.
  EXPECT_EQ(tags.Find(7), nullptr);
  ASSERT_NE(tags.Find(1149), nullptr);
  EXPECT_EQ(tags.Find(1149)->job_id, 3149u);
}

TEST(StreamTagsTest, ARejectedItemIsRememberedWithNoJob) {
  StreamTags tags;
  tags.Remember(1, 0, 0);
  ASSERT_NE(tags.Find(1), nullptr);
  EXPECT_EQ(tags.Find(1)->job_id, 0u);
}

}  // namespace
}  // namespace jobd
