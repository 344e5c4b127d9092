// Clock: the scheduler's source of time, behind an interface so tests can
// drive retention and timeouts deterministically. CompactTime: a time kept
// in 8 bytes instead of absl::Time's 16, for records held by the million.
//
// Thread-safety: implementations must be thread-safe.
#ifndef JOBD_SERVER_CLOCK_H_
#define JOBD_SERVER_CLOCK_H_

#include <cstdint>
#include <limits>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace jobd {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

// A clock that moves only when told to (tests).
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start) : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

// An absl::Time as Unix nanoseconds (1678 to 2262; the infinite past and
// future are kept as such, finite times beyond are clamped to the range),
// converting implicitly both ways.
class CompactTime {
 public:
  CompactTime() = default;
  CompactTime(absl::Time t)  // NOLINT: implicit by design.
      : ns_(t == absl::InfinitePast()     ? kPast
            : t == absl::InfiniteFuture() ? kFuture
                                          : Clamp(absl::ToUnixNanos(t))) {}
  operator absl::Time() const {  // NOLINT: implicit by design.
    return ns_ == kPast     ? absl::InfinitePast()
           : ns_ == kFuture ? absl::InfiniteFuture()
                            : absl::FromUnixNanos(ns_);
  }

 private:
  static constexpr int64_t kPast = std::numeric_limits<int64_t>::min();
  static constexpr int64_t kFuture = std::numeric_limits<int64_t>::max();
  static int64_t Clamp(int64_t ns) {
    return ns == kPast ? kPast + 1 : ns == kFuture ? kFuture - 1 : ns;
  }
  int64_t ns_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_CLOCK_H_
