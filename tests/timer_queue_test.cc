// Unit tests: TimerQueue runs callbacks in deadline order and honours Cancel.
#include "server/scheduler/timer_queue.h"

#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

TEST(TimerQueueTest, RunsInDeadlineOrderAndSkipsCancelled) {
  TimerQueue timers;
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
  TimerQueue timers;
  absl::Notification late, early;
  timers.Schedule(absl::Now() + absl::Hours(1), [&] { late.Notify(); });
  timers.Schedule(absl::Now() + absl::Milliseconds(5), [&] { early.Notify(); });
  EXPECT_TRUE(early.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(late.HasBeenNotified());
  EXPECT_EQ(timers.pending(), 1u);
}

}  // namespace
}  // namespace jobd
