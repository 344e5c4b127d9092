#include "server/scheduler/timer_queue.h"

#include <pthread.h>

namespace jobd {

TimerQueue::TimerQueue(const Clock& clock) : clock_(clock) {
  // Once the members exist: a ManualClock may call OnClockMoved from here on.
  driven_ = clock.AddListener(this);
  if (driven_) return;
  thread_ = std::thread([this] { Loop(); });
  pthread_setname_np(thread_.native_handle(), "jobd-timer");
}

TimerQueue::~TimerQueue() { Stop(); }

TimerQueue::TimerId TimerQueue::Schedule(absl::Time when,
                                         std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  const TimerId id = next_id_++;
  timers_.emplace(std::make_pair(when, id), std::move(fn));
  deadlines_.emplace(id, when);
  return id;
}

bool TimerQueue::Cancel(TimerId id) {
  absl::MutexLock lock(&mu_);
  auto it = deadlines_.find(id);
  if (it == deadlines_.end()) return false;
  timers_.erase(std::make_pair(it->second, id));
  deadlines_.erase(it);
  return true;
}

void TimerQueue::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (driven_) clock_.RemoveListener(this);  // Waits out a running Advance.
  if (thread_.joinable()) thread_.join();
}

size_t TimerQueue::pending() const {
  absl::MutexLock lock(&mu_);
  return timers_.size();
}

void TimerQueue::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time next =
        timers_.empty() ? absl::InfiniteFuture() : timers_.begin()->first.first;
    if (next > clock_.Now()) {
      // Wake at the next deadline, or earlier when a sooner timer is added or
      // Stop() is called.
      auto changed = [this, next]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ ||
               (!timers_.empty() && timers_.begin()->first.first < next);
      };
      mu_.AwaitWithDeadline(absl::Condition(&changed), next);
      continue;
    }
    auto node = timers_.extract(timers_.begin());
    deadlines_.erase(node.key().second);
    mu_.Unlock();
    node.mapped()();
    mu_.Lock();
  }
}

void TimerQueue::OnClockMoved() {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  while (!stopping_ && !timers_.empty() &&
         timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    deadlines_.erase(node.key().second);
    mu_.Unlock();
    node.mapped()();
    mu_.Lock();
  }
}

}  // namespace jobd
