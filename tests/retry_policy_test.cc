// Unit tests: jobs over time as pure functions (retry_policy.h): first due
// times, deadlines, which reasons retry, backoff sequences and their
// jitter bounds, the bounded history.
#include "server/scheduler/retry_policy.h"

#include <algorithm>

#include "absl/random/random.h"
#include "gtest/gtest.h"
#include "server/jobs/proto_time.h"

namespace jobd {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1767225600);

v1::RetryPolicy Policy(uint32_t attempts, absl::Duration initial,
                       double multiplier, absl::Duration cap) {
  v1::RetryPolicy p;
  p.set_max_attempts(attempts);
  *p.mutable_initial_backoff() = ToProtoDuration(initial);
  p.set_backoff_multiplier(multiplier);
  *p.mutable_max_backoff() = ToProtoDuration(cap);
  return p;
}

TEST(RetryPolicyTest, FirstDueIsTheLatestOfAcceptanceDelayAndNotBefore) {
  v1::JobSpec spec;
  EXPECT_EQ(FirstDue(spec, kT0), kT0);
  *spec.mutable_delay() = ToProtoDuration(absl::Minutes(10));
  EXPECT_EQ(FirstDue(spec, kT0), kT0 + absl::Minutes(10));
  spec.clear_delay();
  *spec.mutable_not_before() = ToProtoTime(kT0 - absl::Hours(1));
  EXPECT_EQ(FirstDue(spec, kT0), kT0);  // In the past: at once.
  *spec.mutable_not_before() = ToProtoTime(kT0 + absl::Hours(1));
  EXPECT_EQ(FirstDue(spec, kT0), kT0 + absl::Hours(1));
}

TEST(RetryPolicyTest, DeadlinesCountFromTheDueTime) {
  v1::JobSpec spec;
  EXPECT_EQ(StartExpiry(spec, kT0), absl::InfiniteFuture());
  EXPECT_EQ(TotalExpiry(spec, kT0), absl::InfiniteFuture());
  *spec.mutable_start_deadline() = ToProtoDuration(absl::Seconds(5));
  *spec.mutable_total_deadline() = ToProtoDuration(absl::Minutes(1));
  EXPECT_EQ(StartExpiry(spec, kT0), kT0 + absl::Seconds(5));
  EXPECT_EQ(TotalExpiry(spec, kT0), kT0 + absl::Minutes(1));
}

TEST(RetryPolicyTest, OnlyFailuresOfTheRunRetryNeverACancel) {
  v1::RetryPolicy all = Policy(3, absl::Seconds(1), 2, absl::Minutes(1));
  for (v1::ErrorReason r :
       {v1::ERROR_REASON_TASK_ERROR, v1::ERROR_REASON_TIMEOUT,
        v1::ERROR_REASON_WORKER_CRASHED, v1::ERROR_REASON_OUT_OF_MEMORY}) {
    EXPECT_TRUE(RetriesOn(all, r)) << r;
  }
  for (v1::ErrorReason r :
       {v1::ERROR_REASON_CANCELLED, v1::ERROR_REASON_INVALID_INPUT,
        v1::ERROR_REASON_LOST_ON_RESTART, v1::ERROR_REASON_SHUTDOWN,
        v1::ERROR_REASON_EXPIRED, v1::ERROR_REASON_DEADLINE_EXCEEDED,
        v1::ERROR_REASON_RESULT_TOO_LARGE, v1::ERROR_REASON_QUARANTINED}) {
    EXPECT_FALSE(RetriesOn(all, r)) << r;
  }
  v1::RetryPolicy crashes = all;
  crashes.add_retry_on(v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_TRUE(RetriesOn(crashes, v1::ERROR_REASON_WORKER_CRASHED));
  EXPECT_FALSE(RetriesOn(crashes, v1::ERROR_REASON_TASK_ERROR));
  crashes.add_retry_on(v1::ERROR_REASON_CANCELLED);  // Never, even asked.
  EXPECT_FALSE(RetriesOn(crashes, v1::ERROR_REASON_CANCELLED));
}

TEST(RetryPolicyTest, TheCeilingGrowsByTheMultiplierUpToTheCap) {
  const v1::RetryPolicy p =
      Policy(10, absl::Milliseconds(100), 3, absl::Seconds(2));
  EXPECT_EQ(BackoffCeiling(p, 1), absl::Milliseconds(100));
  EXPECT_EQ(BackoffCeiling(p, 2), absl::Milliseconds(300));
  EXPECT_EQ(BackoffCeiling(p, 3), absl::Milliseconds(900));
  EXPECT_EQ(BackoffCeiling(p, 4), absl::Seconds(2));     // 2.7 s, capped.
  EXPECT_EQ(BackoffCeiling(p, 1000), absl::Seconds(2));  // No overflow.
  EXPECT_EQ(MaxAttempts(p), 10u);
  EXPECT_EQ(MaxAttempts(v1::RetryPolicy()), 1u);
}

TEST(RetryPolicyTest, FullJitterStaysWithinZeroAndTheCeiling) {
  const v1::RetryPolicy p = Policy(10, absl::Seconds(1), 2, absl::Seconds(30));
  EXPECT_EQ(Backoff(p, 3, 0.0), absl::ZeroDuration());
  EXPECT_EQ(Backoff(p, 3, 0.5), absl::Seconds(2));
  absl::BitGen gen;
  for (uint32_t failed = 1; failed <= 8; ++failed) {
    const absl::Duration ceiling = BackoffCeiling(p, failed);
    absl::Duration low = absl::InfiniteDuration(), high;
    for (int i = 0; i < 2000; ++i) {
      const absl::Duration d = Backoff(p, failed, absl::Uniform(gen, 0.0, 1.0));
      ASSERT_GE(d, absl::ZeroDuration());
      ASSERT_LE(d, ceiling);
      low = std::min(low, d);
      high = std::max(high, d);
    }
    // Spread over the whole range, not a fixed value.
    EXPECT_LT(low, ceiling / 10) << failed;
    EXPECT_GT(high, ceiling * 9 / 10) << failed;
  }
}

TEST(RetryPolicyTest, TheHistoryKeepsTheLatestAttemptsOnly) {
  std::shared_ptr<const std::string> history;
  for (uint32_t n = 1; n <= kMaxHistoryAttempts + 5; ++n) {
    v1::JobAttempt a;
    a.set_attempt(n);
    a.mutable_error()->set_message(std::string(100, 'x'));
    history = AppendAttempt(history, a);
  }
  v1::Job job;
  ASSERT_TRUE(job.ParseFromString(*history));
  ASSERT_EQ(job.history_size(), kMaxHistoryAttempts);
  EXPECT_EQ(job.history(0).attempt(), 6u);
  EXPECT_EQ(job.history(kMaxHistoryAttempts - 1).attempt(),
            static_cast<uint32_t>(kMaxHistoryAttempts + 5));
  EXPECT_LT(history->size(), 16u * 200);
}

}  // namespace
}  // namespace jobd
