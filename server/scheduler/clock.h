// Clock: the scheduler's source of time, behind an interface so tests can
// drive retention, timeouts and waits deterministically.
//
// A TimerQueue runs on a clock (timer_queue.h). On a clock that follows
// real time (RealClock) the queue waits on its own thread; a clock that
// moves only when told to (ManualClock) runs the queue's due timers itself,
// on the thread that moves it, so a test decides when each timer fires.
//
// Thread-safety: implementations must be thread-safe. ManualClock runs
// timer callbacks without its lock held; a callback must not destroy a
// TimerQueue on the same clock.
// Ownership: a clock outlives the timer queues and schedulers on it; it
// does not own its listeners.
#ifndef JOBD_SERVER_SCHEDULER_CLOCK_H_
#define JOBD_SERVER_SCHEDULER_CLOCK_H_

#include <algorithm>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace jobd {

// Told each time a clock that moves only when told to has moved.
class ClockListener {
 public:
  virtual ~ClockListener() = default;
  virtual void OnClockMoved() = 0;
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // A clock that moves only when told to registers `listener` and returns
  // true: it calls listener->OnClockMoved() after each move until
  // RemoveListener. A clock that follows real time returns false (the
  // listener then watches the time itself).
  virtual bool AddListener(ClockListener* listener) const { return false; }
  virtual void RemoveListener(ClockListener* listener) const {}
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

// A clock that moves only when told to (tests). Advance() runs the timers
// that fall due on the TimerQueues on this clock, on the calling thread,
// each queue's in deadline order: Advance(absl::ZeroDuration()) runs those
// due now (a timer scheduled in the past waits for it).
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start) : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock moving(&advance_mu_);  // One move at a time.
    std::vector<ClockListener*> listeners;
    {
      absl::MutexLock lock(&mu_);
      now_ += d;
      listeners = listeners_;
    }
    for (ClockListener* listener : listeners) listener->OnClockMoved();
  }

  bool AddListener(ClockListener* listener) const override {
    absl::MutexLock lock(&mu_);
    listeners_.push_back(listener);
    return true;
  }
  // Returns once no Advance() is telling `listener` any more.
  void RemoveListener(ClockListener* listener) const override {
    absl::MutexLock moving(&advance_mu_);
    absl::MutexLock lock(&mu_);
    listeners_.erase(
        std::remove(listeners_.begin(), listeners_.end(), listener),
        listeners_.end());
  }

 private:
  mutable absl::Mutex advance_mu_;  // Held while listeners are told.
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<ClockListener*> listeners_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_CLOCK_H_
