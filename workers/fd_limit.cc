#include "workers/fd_limit.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace jobd {
namespace {

// How old a reading of /proc/self/fd may be (one costs ~0.1 ms per
// thousand descriptors).
constexpr absl::Duration kMaxAge = absl::Milliseconds(10);

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
    RefreshLocked();
    if (open_ + n + keep_free > limit_) return false;
    open_ += n;
    return true;
  }
  FdUsage Usage() {
    absl::MutexLock lock(&mu_);
    RefreshLocked();
    return {.open = open_, .limit = limit_};
  }

 private:
  void RefreshLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    if (now - read_ < kMaxAge) return;
    limit_ = SoftLimit();
    open_ = CountOpenFds(limit_);
    read_ = now;
  }

  absl::Mutex mu_;
  absl::Time read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  size_t open_ ABSL_GUARDED_BY(mu_) = 0;
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
