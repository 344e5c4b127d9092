// Clock: the scheduler's source of time, behind an interface so tests can
// drive retention and timeouts deterministically.
//
// Thread-safety: implementations must be thread-safe.
#ifndef JOBD_SERVER_SCHEDULER_CLOCK_H_
#define JOBD_SERVER_SCHEDULER_CLOCK_H_

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

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_CLOCK_H_
