// TimerQueue: one thread that runs callbacks at deadlines (job timeouts,
// GetJob waits, retention sweeps).
//
// Thread-safety: Schedule() and Cancel() are thread-safe and may be called
// with other locks held (the timer lock is a leaf: callbacks run without it).
// Callbacks run on the timer thread, one at a time, and must not block long.
// Stop() (or the destructor) joins the thread; pending callbacks are dropped.
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

namespace jobd {

class TimerQueue {
 public:
  using TimerId = uint64_t;
  TimerQueue();
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` at `when` (at once if in the past). Returns an id for Cancel.
  TimerId Schedule(absl::Time when, std::function<void()> fn);
  // Returns true if the timer was pending and will not run.
  bool Cancel(TimerId id);
  void Stop();
  size_t pending() const;

 private:
  void Loop();

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
