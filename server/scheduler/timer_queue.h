// TimerQueue: runs callbacks at deadlines of its clock (job timeouts,
// GetJob waits, retention sweeps).
//
// On a clock that follows real time (RealClock) one thread waits for the
// next deadline and runs the callbacks. On a ManualClock (tests) there is
// no thread: the clock's Advance() runs the callbacks that fall due, on
// the test's thread, so that timeouts and waits fire exactly when the test
// moves the time (clock.h).
//
// Thread-safety: Schedule() and Cancel() are thread-safe and may be called
// with other locks held (the timer lock is a leaf: callbacks run without
// it). Callbacks run one at a time (on the timer thread, or the thread
// that advances a ManualClock) and must not block long.
// Stop() (or the destructor) joins the thread; pending callbacks are dropped.
// Ownership: the clock is not owned and must outlive the queue.
#ifndef JOBD_SERVER_SCHEDULER_TIMER_QUEUE_H_
#define JOBD_SERVER_SCHEDULER_TIMER_QUEUE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/scheduler/clock.h"

namespace jobd {

class TimerQueue : private ClockListener {
 public:
  using TimerId = uint64_t;
  explicit TimerQueue(const Clock& clock);
  ~TimerQueue() override;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` at `when` of the clock (as soon as possible if in the past;
  // on a ManualClock, at its next Advance). Returns an id for Cancel.
  TimerId Schedule(absl::Time when, std::function<void()> fn);
  // Returns true if the timer was pending and will not run.
  bool Cancel(TimerId id);
  void Stop();
  size_t pending() const;

 private:
  void Loop();                   // The thread (real time).
  void OnClockMoved() override;  // ManualClock::Advance: runs what is due.

  const Clock& clock_;
  bool driven_ = false;  // By a ManualClock: no thread. Set by the ctor.
  mutable absl::Mutex mu_;
  std::map<std::pair<absl::Time, TimerId>, std::function<void()>> timers_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TimerId, absl::Time> deadlines_ ABSL_GUARDED_BY(mu_);
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Last: started after the members above exist.
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_TIMER_QUEUE_H_
