// ThroughputHistory (server/dashboard/throughput.h): a ring of fixed size
// that keeps the latest samples, answers those after a time in order, and
// their JSON.
#include "server/dashboard/throughput.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

ThroughputSample At(int64_t ms, uint64_t accepted) {
  ThroughputSample s;
  s.unix_ms = ms;
  s.accepted = accepted;
  return s;
}

TEST(ThroughputHistoryTest, KeepsTheLatestInOrderWithinItsCapacity) {
  ThroughputHistory h(3);
  EXPECT_TRUE(h.After(0).empty());
  for (int i = 1; i <= 5; ++i) h.Add(At(i * 1000, i));
  const std::vector<ThroughputSample> all = h.After(0);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].accepted, 3u);
  EXPECT_EQ(all[2].accepted, 5u);
  const std::vector<ThroughputSample> later = h.After(4000);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].unix_ms, 5000);
  EXPECT_TRUE(h.After(5000).empty());
}

TEST(ThroughputHistoryTest, SampleSumsTheExecutorsAndJsonListsThem) {
  v1::GetStatsResponse stats;
  stats.set_accepted(10);
  stats.set_succeeded(7);
  stats.set_failed(2);
  stats.set_cancelled(1);
  stats.set_rejected(4);
  for (int i = 0; i < 2; ++i) {
    v1::ExecutorStats* e = stats.add_executors();
    e->set_queued(3);
    e->set_busy(2);
  }
  const ThroughputSample s = ThroughputSample::From(stats, 1234);
  EXPECT_EQ(s.queued, 6u);
  EXPECT_EQ(s.busy, 4u);
  EXPECT_EQ(ThroughputJson({s}, 1000, 600),
            "{\"intervalMs\":1000,\"capacity\":600,"
            "\"samples\":[[1234,10,7,2,1,6,4,4]]}");
  EXPECT_EQ(ThroughputJson({}, 1000, 600),
            "{\"intervalMs\":1000,\"capacity\":600,\"samples\":[]}");
}

}  // namespace
}  // namespace jobd
