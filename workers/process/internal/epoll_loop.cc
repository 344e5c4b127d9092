#include "workers/process/internal/epoll_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

constexpr uint64_t kWakeKey = ~0ULL;

}  // namespace

EpollLoop::EpollLoop()
    : epoll_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  Add(wake_fd_.get(), EPOLLIN, kWakeKey);
}

void EpollLoop::Add(int fd, uint32_t events, uint64_t key) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    spdlog::error("process pool: epoll_ctl add: {}", std::strerror(errno));
  }
}

void EpollLoop::Modify(int fd, uint32_t events, uint64_t key) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
}

std::span<const epoll_event> EpollLoop::Wait(absl::Time deadline) {
  int timeout_ms = -1;
  if (deadline != absl::InfiniteFuture()) {
    const absl::Duration d =
        std::max(absl::ZeroDuration(), deadline - absl::Now());
    timeout_ms = static_cast<int>(std::min<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))),
        std::numeric_limits<int>::max()));
  }
  const int n = epoll_wait(epoll_.get(), events_, kMaxEvents, timeout_ms);
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    if (events_[i].data.u64 == kWakeKey) {
      uint64_t count;
      (void)!read(wake_fd_.get(), &count, sizeof(count));
      continue;
    }
    events_[kept++] = events_[i];
  }
  return std::span<const epoll_event>(events_, kept);
}

void EpollLoop::Wake() {
  const uint64_t one = 1;
  (void)!write(wake_fd_.get(), &one, sizeof(one));
}

}  // namespace jobd
