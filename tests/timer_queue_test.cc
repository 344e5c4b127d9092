// Unit tests: TimerQueue runs callbacks in deadline order and honours Cancel,
// on the real clock (its own thread) and on a ManualClock (no thread: the
// test's Advance() runs what falls due, exactly then).
#include "server/scheduler/timer_queue.h"

#include <functional>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/scheduler/clock.h"

namespace jobd {
namespace {

TEST(TimerQueueTest, RunsInDeadlineOrderAndSkipsCancelled) {
  RealClock clock;
  TimerQueue timers(clock);
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification done;
  const absl::Time now = absl::Now();
  auto record = [&](int i) {
    return [&, i] {
      absl::MutexLock lock(&mu);
      order.push_back(i);
    };
  };
  timers.Schedule(now + absl::Milliseconds(30), record(3));
  timers.Schedule(now + absl::Milliseconds(10), record(1));
  const auto cancelled =
      timers.Schedule(now + absl::Milliseconds(20), record(2));
  timers.Schedule(now + absl::Milliseconds(40), [&] { done.Notify(); });
  EXPECT_TRUE(timers.Cancel(cancelled));
  EXPECT_FALSE(timers.Cancel(cancelled));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{1, 3}));
}

TEST(TimerQueueTest, SoonerTimerAddedLaterWakesTheThread) {
  RealClock clock;
  TimerQueue timers(clock);
  absl::Notification late, early;
  timers.Schedule(absl::Now() + absl::Hours(1), [&] { late.Notify(); });
  timers.Schedule(absl::Now() + absl::Milliseconds(5), [&] { early.Notify(); });
  EXPECT_TRUE(early.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(late.HasBeenNotified());
  EXPECT_EQ(timers.pending(), 1u);
}

class ManualTimerQueueTest : public ::testing::Test {
 protected:
  ManualClock clock_{absl::FromUnixSeconds(1767225600)};
  std::vector<int> order_;
  std::function<void()> Record(int i) {
    return [this, i] { order_.push_back(i); };
  }
};

TEST_F(ManualTimerQueueTest, TimersFireOnlyWhenTheClockReachesThem) {
  TimerQueue timers(clock_);
  const absl::Time t0 = clock_.Now();
  timers.Schedule(t0 + absl::Seconds(3), Record(3));
  timers.Schedule(t0 + absl::Seconds(1), Record(1));
  const auto cancelled = timers.Schedule(t0 + absl::Seconds(2), Record(2));
  EXPECT_TRUE(timers.Cancel(cancelled));
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_TRUE(order_.empty());
  clock_.Advance(absl::Milliseconds(1));  // Exactly at the first deadline.
  EXPECT_EQ(order_, (std::vector<int>{1}));
  clock_.Advance(absl::Hours(1));  // Everything due, in deadline order.
  EXPECT_EQ(order_, (std::vector<int>{1, 3}));
  EXPECT_EQ(timers.pending(), 0u);
}

TEST_F(ManualTimerQueueTest, APastDeadlineWaitsForTheNextAdvance) {
  TimerQueue timers(clock_);
  timers.Schedule(clock_.Now() - absl::Seconds(1), Record(1));
  EXPECT_TRUE(order_.empty());  // Never on the scheduling thread.
  clock_.Advance(absl::ZeroDuration());
  EXPECT_EQ(order_, (std::vector<int>{1}));
}

TEST_F(ManualTimerQueueTest, ACallbackMayScheduleAndCancelTimers) {
  TimerQueue timers(clock_);
  const absl::Time t0 = clock_.Now();
  TimerQueue::TimerId doomed =
      timers.Schedule(t0 + absl::Seconds(5), Record(5));
  timers.Schedule(t0 + absl::Seconds(1), [&] {
    order_.push_back(1);
    EXPECT_TRUE(timers.Cancel(doomed));
    // Due already: runs in the same Advance, after this one.
    timers.Schedule(t0 + absl::Seconds(1), Record(2));
    timers.Schedule(t0 + absl::Seconds(9), Record(9));
  });
  clock_.Advance(absl::Seconds(6));
  EXPECT_EQ(order_, (std::vector<int>{1, 2}));
  EXPECT_EQ(timers.pending(), 1u);
}

TEST_F(ManualTimerQueueTest, AStoppedQueueRunsNothingMore) {
  {
    TimerQueue timers(clock_);
    timers.Schedule(clock_.Now() + absl::Seconds(1), Record(1));
    timers.Stop();
    clock_.Advance(absl::Seconds(2));
    EXPECT_TRUE(order_.empty());
  }
  // A destroyed queue is no longer told of moves.
  clock_.Advance(absl::Seconds(2));
  EXPECT_TRUE(order_.empty());
}

TEST_F(ManualTimerQueueTest, QueuesOnOneClockEachRunTheirOwnTimers) {
  TimerQueue a(clock_), b(clock_);
  a.Schedule(clock_.Now() + absl::Seconds(2), Record(2));
  b.Schedule(clock_.Now() + absl::Seconds(1), Record(1));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(order_, (std::vector<int>{1}));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(order_, (std::vector<int>{1, 2}));
}

}  // namespace
}  // namespace jobd
