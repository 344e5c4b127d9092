// Unit tests: KeyLimits holds each key's running jobs within its limit,
// parks the others in priority then FIFO order, grants them as holders
// release, paces starts by its token bucket (asking for one wake-up at the
// next token), and takes limits from the config, its default, or SetRpc.
// Time is a value the tests move by hand (as a ManualClock would).
#include "server/scheduler/key_limits.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kStart = absl::FromUnixSeconds(1'000'000);
constexpr v1::Executor kLane = v1::EXECUTOR_THREAD;

std::vector<uint64_t> Ids(const KeyLimits::Out& out) {
  std::vector<uint64_t> ids;
  for (const KeyLimits::Grant& g : out.granted) ids.push_back(g.id);
  return ids;
}

KeyLimitOptions Config(uint32_t max_running, double rate = 0) {
  KeyLimitOptions options;
  options.keys["k"] = {.max_running = max_running, .rate = rate};
  return options;
}

TEST(KeyLimitsTest, LimitOfOneParksTheRestAndGrantsOneAtATime) {
  KeyLimits keys(Config(1));
  KeyLimits::Out out;
  EXPECT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("k", 2, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("k", 3, 0, kLane, kStart, out));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(keys.parked(), 2u);
  keys.Release(1, kStart, out);
  EXPECT_THAT(Ids(out), ElementsAre(2));
  EXPECT_EQ(out.granted[0].lane, kLane);
  // Granted: job 2 holds the key already (the scheduler starts it without
  // asking again); job 1 no longer does.
  EXPECT_TRUE(keys.holds(2));
  EXPECT_FALSE(keys.holds(1));
  EXPECT_FALSE(keys.holds(3));
  out = {};
  keys.Release(1, kStart, out);  // Released already: nothing.
  EXPECT_TRUE(out.empty());
  keys.Release(2, kStart, out);
  EXPECT_THAT(Ids(out), ElementsAre(3));
  EXPECT_EQ(keys.parked(), 0u);
  const v1::KeyLimit shown = keys.Show("k");
  EXPECT_EQ(shown.running(), 1u);
  EXPECT_EQ(shown.max_running(), 1u);
  EXPECT_EQ(shown.source(), "config");
}

TEST(KeyLimitsTest, ParkedJobsKeepPriorityThenFifoOrder) {
  KeyLimits keys(Config(1));
  KeyLimits::Out out;
  ASSERT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  keys.Acquire("k", 2, 0, kLane, kStart, out);
  keys.Acquire("k", 3, 5, v1::EXECUTOR_PROCESS, kStart, out);
  keys.Acquire("k", 4, 0, kLane, kStart, out);
  keys.Acquire("k", 5, 5, kLane, kStart, out);
  std::vector<uint64_t> order;
  for (uint64_t holder = 1; order.size() < 4;) {
    out = {};
    keys.Release(holder, kStart, out);
    ASSERT_EQ(out.granted.size(), 1u);
    holder = out.granted[0].id;
    order.push_back(holder);
    if (holder == 3) {
      EXPECT_EQ(out.granted[0].priority, 5);
      EXPECT_EQ(out.granted[0].lane, v1::EXECUTOR_PROCESS);
    }
  }
  EXPECT_THAT(order, ElementsAre(3, 5, 2, 4));
}

TEST(KeyLimitsTest, OtherKeysAndUnlimitedKeysAreNotHeldBack) {
  KeyLimits keys(Config(1));
  KeyLimits::Out out;
  EXPECT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("k", 2, 0, kLane, kStart, out));
  for (uint64_t id = 10; id < 20; ++id) {
    EXPECT_TRUE(keys.Acquire("other", id, 0, kLane, kStart, out));
  }
  EXPECT_EQ(keys.Show("other").running(), 10u);
  EXPECT_EQ(keys.Show("other").source(), "");
  for (uint64_t id = 10; id < 20; ++id) keys.Release(id, kStart, out);
  EXPECT_TRUE(out.empty());
  // An idle key without a limit of its own is forgotten.
  for (const v1::KeyLimit& k : keys.List(100)) EXPECT_NE(k.key(), "other");
}

TEST(KeyLimitsTest, DefaultLimitAppliesToEveryOtherKey) {
  KeyLimitOptions options = Config(3);
  options.default_max_running = 2;
  KeyLimits keys(options);
  KeyLimits::Out out;
  EXPECT_TRUE(keys.Acquire("any", 1, 0, kLane, kStart, out));
  EXPECT_TRUE(keys.Acquire("any", 2, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("any", 3, 0, kLane, kStart, out));
  for (uint64_t id = 10; id < 13; ++id) {
    EXPECT_TRUE(keys.Acquire("k", id, 0, kLane, kStart, out));
  }
  EXPECT_FALSE(keys.Acquire("k", 13, 0, kLane, kStart, out));
}

TEST(KeyLimitsTest, UnparkForgetsACancelledJob) {
  KeyLimits keys(Config(1));
  KeyLimits::Out out;
  ASSERT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  keys.Acquire("k", 2, 0, kLane, kStart, out);
  keys.Acquire("k", 3, 0, kLane, kStart, out);
  EXPECT_TRUE(keys.Unpark("k", 2, 0));
  EXPECT_FALSE(keys.Unpark("k", 2, 0));
  EXPECT_FALSE(keys.Unpark("k", 3, 7));  // Not at that priority.
  keys.Release(1, kStart, out);
  EXPECT_THAT(Ids(out), ElementsAre(3));
}

TEST(KeyLimitsTest, RateGrantsOneTokenAtATimeWithOneWakeUp) {
  KeyLimits keys(Config(0, /*rate=*/4));  // 4/s, a burst of 1.
  KeyLimits::Out out;
  EXPECT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("k", 2, 0, kLane, kStart, out));
  ASSERT_EQ(out.wakes.size(), 1u);
  EXPECT_EQ(out.wakes[0].first, "k");
  EXPECT_EQ(out.wakes[0].second, kStart + absl::Milliseconds(250));
  out = {};
  EXPECT_FALSE(keys.Acquire("k", 3, 0, kLane, kStart, out));
  EXPECT_TRUE(out.wakes.empty());  // One wake-up is armed already.
  // Woken early (a clock that jumped): nothing yet, another wake-up.
  keys.Woken("k", kStart + absl::Milliseconds(100), out);
  EXPECT_TRUE(out.granted.empty());
  ASSERT_EQ(out.wakes.size(), 1u);
  EXPECT_EQ(out.wakes[0].second, kStart + absl::Milliseconds(250));
  out = {};
  keys.Woken("k", kStart + absl::Milliseconds(250), out);
  EXPECT_THAT(Ids(out), ElementsAre(2));
  ASSERT_EQ(out.wakes.size(), 1u);
  EXPECT_EQ(out.wakes[0].second, kStart + absl::Milliseconds(500));
}

TEST(KeyLimitsTest, RateHoldsOverTenSeconds) {
  KeyLimits keys(Config(0, /*rate=*/200));  // A burst of 20.
  KeyLimits::Out out;
  uint64_t next_id = 1;
  size_t started = 0;
  // 5000 jobs wanting to start at once, and wake-ups answered on time.
  for (; next_id <= 5000; ++next_id) {
    started += keys.Acquire("k", next_id, 0, kLane, kStart, out) ? 1 : 0;
  }
  absl::Time now = kStart;
  const absl::Time end = kStart + absl::Seconds(10);
  for (int i = 0; i < 100000 && !out.wakes.empty(); ++i) {
    now = out.wakes.front().second;
    if (now > end) break;
    started += out.granted.size();
    out = {};
    keys.Woken("k", now, out);
  }
  started += out.granted.size();
  EXPECT_GE(started, 2000u);
  EXPECT_LE(started, 2000u + 21);  // The rate, and one burst.
}

// Wake-ups that come late (a loaded machine) do not lower the rate: the
// starts they owe are made up at the next one, up to a second's worth.
TEST(KeyLimitsTest, LateWakeUpsMakeUpTheStartsTheyOwe) {
  KeyLimits keys(Config(0, /*rate=*/100));  // A burst of 10.
  KeyLimits::Out out;
  size_t started = 0;
  for (uint64_t id = 1; id <= 3000; ++id) {
    started += keys.Acquire("k", id, 0, kLane, kStart, out) ? 1 : 0;
  }
  absl::Time now = kStart;
  const absl::Time end = kStart + absl::Seconds(10);
  size_t max_at_once = 0;
  for (int i = 0; i < 100000 && !out.wakes.empty(); ++i) {
    now = out.wakes.front().second + absl::Milliseconds(300);  // Late.
    if (now > end) break;
    started += out.granted.size();
    out = {};
    keys.Woken("k", now, out);
    max_at_once = std::max(max_at_once, out.granted.size());
  }
  started += out.granted.size();
  EXPECT_GE(started, 950u);        // Within 5% of 100/s over 10 s.
  EXPECT_LE(started, 1000u + 10);  // Never above the rate and one burst.
  EXPECT_LE(max_at_once, 100u);    // At most a second's worth at once.
}

TEST(KeyLimitsTest, SetRpcOverridesTheConfigAndGrantsWhatItNowAllows) {
  KeyLimits keys(Config(1));
  KeyLimits::Out out;
  ASSERT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  keys.Acquire("k", 2, 0, kLane, kStart, out);
  keys.Acquire("k", 3, 0, kLane, kStart, out);
  ASSERT_TRUE(keys.SetRpc("k", KeyLimit{.max_running = 3}, kStart, out).ok());
  EXPECT_THAT(Ids(out), ElementsAre(2, 3));
  EXPECT_EQ(keys.Show("k").source(), "rpc");
  EXPECT_EQ(keys.Show("k").max_running(), 3u);
  out = {};
  ASSERT_TRUE(keys.SetRpc("k", std::nullopt, kStart, out).ok());
  EXPECT_EQ(keys.Show("k").source(), "config");
  EXPECT_FALSE(keys.Acquire("k", 4, 0, kLane, kStart, out));
  // A key with a limit of its own stays listed while idle.
  ASSERT_TRUE(
      keys.SetRpc("idle", KeyLimit{.max_running = 2}, kStart, out).ok());
  std::vector<std::string> names;
  for (const v1::KeyLimit& k : keys.List(100)) names.push_back(k.key());
  EXPECT_THAT(names, ElementsAre("idle", "k"));
  EXPECT_THAT(keys.List(1), ::testing::SizeIs(1));
}

TEST(KeyLimitsTest, RpcKeysAreBounded) {
  KeyLimits keys;
  KeyLimits::Out out;
  for (size_t i = 0; i < kMaxRpcKeys; ++i) {
    ASSERT_TRUE(keys.SetRpc("key" + std::to_string(i),
                            KeyLimit{.max_running = 1}, kStart, out)
                    .ok());
  }
  const absl::Status full =
      keys.SetRpc("one-more", KeyLimit{.max_running = 1}, kStart, out);
  EXPECT_TRUE(absl::IsResourceExhausted(full));
  EXPECT_THAT(full.message(), HasSubstr("key"));
  // Changing or clearing one of them is still fine.
  EXPECT_TRUE(
      keys.SetRpc("key0", KeyLimit{.max_running = 2}, kStart, out).ok());
  EXPECT_TRUE(keys.SetRpc("key0", std::nullopt, kStart, out).ok());
  EXPECT_TRUE(
      keys.SetRpc("one-more", KeyLimit{.max_running = 1}, kStart, out).ok());
}

TEST(KeyLimitsTest, LoadedLimitsApplyFromTheFirstJob) {
  KeyLimits keys;
  keys.LoadRpc("k", {.max_running = 1});
  KeyLimits::Out out;
  EXPECT_TRUE(keys.Acquire("k", 1, 0, kLane, kStart, out));
  EXPECT_FALSE(keys.Acquire("k", 2, 0, kLane, kStart, out));
  EXPECT_EQ(keys.Show("k").source(), "rpc");
}

TEST(KeyLimitsTest, ValidateKeyNamesTheField) {
  EXPECT_TRUE(ValidateKey("", "spec.concurrency_key").ok());
  EXPECT_TRUE(ValidateKey("db:orders", "spec.concurrency_key").ok());
  const absl::Status long_key =
      ValidateKey(std::string(129, 'a'), "spec.concurrency_key");
  EXPECT_THAT(long_key.message(),
              HasSubstr("spec.concurrency_key: 129 bytes, longer than the "
                        "128"));
  EXPECT_THAT(ValidateKey("a\nb", "key").message(),
              HasSubstr("key: control character 0x0a"));
  EXPECT_THAT(ValidateKey("\xff", "key").message(),
              HasSubstr("key: not valid UTF-8"));
}

}  // namespace
}  // namespace jobd
