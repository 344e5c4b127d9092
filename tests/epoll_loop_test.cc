// Unit tests: the process pool monitor's readiness wait (workers/process/
// internal/epoll_loop.h) on real descriptors: a readable socket reported
// under its key, a wake-up from another thread consumed and not reported,
// the deadline, changing what a descriptor is watched for, and the keys.
#include "workers/process/internal/epoll_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a = UniqueFd(fds[0]);
    b = UniqueFd(fds[1]);
  }
  UniqueFd a, b;
};

TEST(EventKeyTest, CarriesGenerationAndTag) {
  const uint64_t key = EventKey(12345, EventTag::kForkPidfd);
  EXPECT_EQ(EventGen(key), 12345u);
  EXPECT_EQ(EventTagOf(key), EventTag::kForkPidfd);
  EXPECT_NE(EventKey(1, EventTag::kWorkerSocket),
            EventKey(1, EventTag::kWorkerPidfd));
}

TEST(EpollLoopTest, AReadableSocketIsReportedUnderItsKey) {
  EpollLoop loop;
  SocketPair p;
  const uint64_t key = EventKey(7, EventTag::kWorkerSocket);
  loop.Add(p.a.get(), EPOLLIN, key);
  ASSERT_EQ(write(p.b.get(), "x", 1), 1);
  const std::span<const epoll_event> events =
      loop.Wait(absl::Now() + absl::Seconds(10));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data.u64, key);
  EXPECT_TRUE(events[0].events & EPOLLIN);
  char c;
  ASSERT_EQ(read(p.a.get(), &c, 1), 1);
  EXPECT_TRUE(loop.Wait(absl::InfinitePast()).empty());  // Nothing left.
}

TEST(EpollLoopTest, AWakeFromAnotherThreadEndsAWaitAndIsConsumed) {
  EpollLoop loop;
  std::thread waker([&] { loop.Wake(); });
  const absl::Time start = absl::Now();
  EXPECT_TRUE(loop.Wait(absl::InfiniteFuture()).empty());  // Only the wake.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  waker.join();
  // Consumed: the next wait lasts until its deadline.
  EXPECT_TRUE(loop.Wait(absl::Now() + absl::Milliseconds(5)).empty());
  // A wake before the wait ends that wait at once.
  loop.Wake();
  EXPECT_TRUE(loop.Wait(absl::InfiniteFuture()).empty());
}

TEST(EpollLoopTest, AWaitEndsAtItsDeadlineNotBefore) {
  EpollLoop loop;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(30);
  EXPECT_TRUE(loop.Wait(deadline).empty());
  EXPECT_GE(absl::Now(), deadline);
}

TEST(EpollLoopTest, ModifyChangesWhatIsWatched) {
  EpollLoop loop;
  SocketPair p;
  const uint64_t key = EventKey(3, EventTag::kWorkerSocket);
  loop.Add(p.a.get(), EPOLLIN, key);
  // Writable all along, but only reading was asked for.
  EXPECT_TRUE(loop.Wait(absl::InfinitePast()).empty());
  loop.Modify(p.a.get(), EPOLLIN | EPOLLOUT, key);
  const std::span<const epoll_event> events = loop.Wait(absl::InfinitePast());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data.u64, key);
  EXPECT_TRUE(events[0].events & EPOLLOUT);
}

TEST(EpollLoopTest, AHangUpIsReported) {
  EpollLoop loop;
  SocketPair p;
  loop.Add(p.a.get(), EPOLLIN | EPOLLRDHUP, 1);
  p.b.reset();
  const std::span<const epoll_event> events =
      loop.Wait(absl::Now() + absl::Seconds(10));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].events & EPOLLRDHUP);
}

}  // namespace
}  // namespace jobd
