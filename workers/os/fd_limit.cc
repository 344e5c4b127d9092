#include "workers/os/fd_limit.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace jobd {
namespace {

// A reading of /proc/self/fd costs ~0.1 ms per thousand descriptors.
// Readings are at least kMinInterval, and 20 times what the last one cost,
// apart; while more than a quarter of the limit was free at the last one,
// a reading serves for up to kFarAge (what callers take meanwhile is added
// to it, what they close is not: the count errs on the safe side).
constexpr absl::Duration kMinInterval = absl::Milliseconds(10);
constexpr absl::Duration kFarAge = absl::Seconds(1);

size_t SoftLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) {
    return static_cast<size_t>(1) << 20;
  }
  return static_cast<size_t>(r.rlim_cur);
}

// Entries of /proc/self/fd, not counting the one used to read it; the
// limit when it cannot be opened (no descriptor left).
size_t CountOpenFds(size_t limit) {
  const int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return limit;
  size_t n = 0;
  alignas(8) char buf[16384];
  for (;;) {
    const long got = syscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf + off);
      if (d->d_name[0] != '.') ++n;
      off += d->d_reclen;
    }
  }
  close(dir);
  return n > 0 ? n - 1 : 0;
}

class Counter {
 public:
  bool Take(size_t n, size_t keep_free) {
    absl::MutexLock lock(&mu_);
    RefreshLocked(false);
    if (open_ + n + keep_free > limit_) {
      RefreshLocked(true);  // Closes since the reading may make room.
      if (open_ + n + keep_free > limit_) return false;
    }
    open_ += n;
    return true;
  }
  FdUsage Usage() {
    absl::MutexLock lock(&mu_);
    RefreshLocked(false);
    return {.open = open_, .limit = limit_};
  }

 private:
  void RefreshLocked(bool short_of_fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    const absl::Duration age = now - read_;
    if (age < std::max(kMinInterval, 20 * cost_)) return;
    const bool far = read_open_ < limit_ - limit_ / 4;
    if (!short_of_fds && far && age < kFarAge) return;
    limit_ = SoftLimit();
    open_ = read_open_ = CountOpenFds(limit_);
    read_ = now;
    cost_ = absl::Now() - now;
  }

  absl::Mutex mu_;
  absl::Time read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration cost_ ABSL_GUARDED_BY(mu_);   // Of the last reading.
  size_t read_open_ ABSL_GUARDED_BY(mu_) = 0;  // At the last reading.
  size_t open_ ABSL_GUARDED_BY(mu_) = 0;       // And taken since.
  size_t limit_ ABSL_GUARDED_BY(mu_) = 0;
};

Counter& TheCounter() {
  static Counter* counter = new Counter();  // Never destroyed.
  return *counter;
}

}  // namespace

absl::StatusOr<FdLimits> RaiseFdLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) {
    return absl::InternalError(
        absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  FdLimits limits{
      .soft = r.rlim_cur, .hard = r.rlim_max, .previous_soft = r.rlim_cur};
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
      return absl::InternalError(
          absl::StrCat("setrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
    }
    limits.soft = r.rlim_cur;
  }
  return limits;
}

bool TakeFds(size_t n, size_t keep_free) {
  return TheCounter().Take(n, keep_free);
}

FdUsage CurrentFdUsage() { return TheCounter().Usage(); }

}  // namespace jobd
