// server/telemetry: fixed-bucket histograms (plain and atomic) and the
// per-RPC counters: bounded methods and codes, in-flight gauges, and
// counts that add up when many threads write at once.
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/telemetry/histogram.h"
#include "server/telemetry/rpc_stats.h"

namespace jobd {
namespace {

TEST(HistogramTest, BucketsAreUpperBoundsInclusive) {
  Histogram h(kCountBounds);
  h.Observe(1);     // le 1
  h.Observe(3);     // le 5
  h.Observe(5);     // le 5
  h.Observe(9000);  // +Inf
  const HistogramSnapshot& s = h.snapshot();
  EXPECT_EQ(s.bounds.size(), kCountBounds.size());
  EXPECT_EQ(s.buckets[0], 1u);
  EXPECT_EQ(s.buckets[2], 2u);
  EXPECT_EQ(s.buckets[kCountBounds.size()], 1u);
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.sum, 9009);
}

TEST(HistogramTest, AtomicOneAddsUpAcrossThreads) {
  AtomicHistogram h(kSecondsBounds);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 10000; ++i) h.Observe(0.002);  // le 0.005
    });
  }
  for (std::thread& t : threads) t.join();
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_EQ(s.buckets[3], 40000u);
  EXPECT_NEAR(s.sum, 80, 1e-6);
}

TEST(RpcStatsTest, CountsCodesLatencyAndInFlightPerMethod) {
  RpcStats stats({{"/svc/Get", "Get", false}, {"/svc/Watch", "Watch", true}});
  const int get = stats.IndexOf("/svc/Get");
  const int watch = stats.IndexOf("/svc/Watch");
  const int other = stats.IndexOf("/grpc.reflection.v1alpha.X/Y");
  stats.Started(get);
  stats.Ended(get, 0, absl::Milliseconds(2));
  stats.Started(get);
  stats.Ended(get, 5, absl::Milliseconds(20));  // NOT_FOUND
  stats.Started(watch);                         // Still open.
  stats.Started(other);
  stats.Ended(other, 99, absl::Seconds(1));  // Not a code: UNKNOWN.
  const std::vector<RpcStats::MethodSnapshot> s = stats.Snapshot();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[get].label, "Get");
  EXPECT_EQ(s[get].codes[0], 1u);
  EXPECT_EQ(s[get].codes[5], 1u);
  EXPECT_EQ(s[get].seconds.count, 2u);
  EXPECT_EQ(s[get].in_flight, 0);
  EXPECT_EQ(s[watch].in_flight, 1);
  EXPECT_TRUE(s[watch].stream);
  EXPECT_EQ(s[other].label, "other");
  EXPECT_EQ(s[other].codes[2], 1u);
  EXPECT_EQ(RpcStats::CodeName(5), "NOT_FOUND");
  EXPECT_EQ(RpcStats::CodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(RpcStats::CodeName(-1), "UNKNOWN");
}

TEST(RpcStatsTest, ManyThreadsAddUp) {
  RpcStats stats({{"/svc/Get", "Get", false}});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&stats] {
      for (int i = 0; i < 5000; ++i) {
        stats.Started(0);
        stats.Ended(0, i % 2, absl::Microseconds(50));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const auto s = stats.Snapshot();
  EXPECT_EQ(s[0].codes[0] + s[0].codes[1], 20000u);
  EXPECT_EQ(s[0].seconds.count, 20000u);
  EXPECT_EQ(s[0].in_flight, 0);
}

}  // namespace
}  // namespace jobd
