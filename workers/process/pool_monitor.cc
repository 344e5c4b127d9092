// PoolCore's monitor thread: waits on the EpollLoop until a descriptor is
// ready, a timer is due or another thread wakes it; hands each event to its
// worker or to the fork server; runs the timers; then, without the lock,
// makes the listener calls collected meanwhile
// (workers/process/internal/pool_core.h).
#include <pthread.h>

#include <algorithm>

#include "spdlog/spdlog.h"
#include "workers/process/internal/pool_core.h"

namespace jobd {
namespace {

// Results handed to the scheduler in one call at most (bounds how long its
// lock is held).
constexpr size_t kMaxReportBatch = 256;

// The pool whose monitor thread this is, if any.
thread_local const PoolCore* tl_monitor_of = nullptr;

}  // namespace

bool PoolCore::OnMonitorThread() const { return tl_monitor_of == this; }

void PoolCore::MonitorLoop() {
  tl_monitor_of = this;
  pthread_setname_np(pthread_self(), "jobd-procpool");
  std::vector<Report> reports;
  std::vector<FinishedJob> finished;
  for (;;) {
    absl::Time next;
    {
      absl::MutexLock lock(&mu_);
      next = NextTimer();
    }
    const std::span<const epoll_event> events = loop_.Wait(next);
    bool stop;
    {
      absl::MutexLock lock(&mu_);
      for (const epoll_event& e : events) Dispatch(e.data.u64, e.events);
      RunTimers(absl::Now());
      for (uint64_t gen : graves_) workers_.erase(gen);
      graves_.clear();
      reports.swap(reports_);
      stop = monitor_stop_;
    }
    Deliver(reports, finished);
    {
      // The chunks the scheduler started from those reports, one write per
      // worker.
      absl::MutexLock lock(&mu_);
      FlushLater();
    }
    if (stop) return;
  }
}

void PoolCore::Dispatch(uint64_t key, uint32_t events) {
  const uint64_t gen = EventGen(key);
  switch (EventTagOf(key)) {
    case EventTag::kForkControl:
    case EventTag::kForkPidfd:
      if (gen == relay_.gen()) HandleForkServer();
      break;
    case EventTag::kWorkerSocket:
      if (Worker* w = FindWorker(gen);
          w != nullptr && w->state == WorkerState::kLive) {
        HandleWorkerSocket(*w, events);
      }
      break;
    case EventTag::kWorkerPidfd:
      if (Worker* w = FindWorker(gen); w != nullptr) {
        w->exited = true;
        w->pidfd.reset();
        if (w->state == WorkerState::kLive) OnWorkerDied(*w);
        if (w->orphaned) Bury(*w, -1);
      }
      break;
  }
}

void PoolCore::Deliver(std::vector<Report>& reports,
                       std::vector<FinishedJob>& finished) {
  auto deliver_finished = [&] {
    if (finished.empty()) return;
    listener_.OnJobsFinished(finished);
    finished.clear();
  };
  // In order; consecutive results go together (one scheduler lock round).
  for (Report& r : reports) {
    if (r.output != v1::OUTPUT_STREAM_UNSPECIFIED) {
      deliver_finished();
      listener_.OnJobOutput(r.job_id, r.output, r.message);
      continue;
    }
    if (r.progress) {
      deliver_finished();
      listener_.OnJobProgress(r.job_id, r.fraction, r.message);
      continue;
    }
    finished.push_back({.job_id = r.job_id, .outcome = std::move(r.outcome)});
    if (finished.size() >= kMaxReportBatch) deliver_finished();
  }
  deliver_finished();
  reports.clear();
}

absl::Time PoolCore::NextTimer() const {
  absl::Time next = std::min(fork_server_retry_at_, next_ping_);
  for (const Slot& s : slots_) {
    if (s.worker == 0 && s.spawn_request == 0 && !monitor_stop_ &&
        relay_.running()) {
      next = std::min(next, s.respawn_at);
    }
  }
  for (const auto& [gen, w] : workers_) {
    next = std::min(next, w->escalate_at);
    if (w->state == WorkerState::kGone) {
      next = std::min(next, w->status_deadline);
      continue;
    }
    next = std::min({next, w->ping_deadline, w->death_deadline});
    if (options_.max_worker_rss > 0 && !slots_[w->slot].inflight.empty()) {
      next = std::min(next, w->last_rss_check + options_.rss_check_interval);
    }
  }
  return next;
}

void PoolCore::RunTimers(absl::Time now) {
  if (now >= fork_server_retry_at_) ReplaceForkServer();
  if (now >= next_ping_ && !monitor_stop_) {
    PingWorkers(now);
    next_ping_ = now + options_.ping_interval;
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.worker == 0 && s.spawn_request == 0 && now >= s.respawn_at) {
      Refill(i);
    }
  }
  for (auto& [gen, wp] : workers_) {
    Worker& w = *wp;
    const bool rss_due = RssCheckDue(w, now);
    if ((now >= w.escalate_at || rss_due) && w.state == WorkerState::kLive) {
      DrainRing(w);  // Blame the job that runs now, not one that finished.
    }
    if (now >= w.escalate_at) Escalate(w);
    if (w.state == WorkerState::kGone) {
      if (now >= w.status_deadline) Bury(w, -1);
      continue;
    }
    if (now >= w.ping_deadline) OnPingOverdue(w, now);
    if (w.state == WorkerState::kLive && now >= w.death_deadline) {
      OnDeathOverdue(w);
    }
    if (w.state == WorkerState::kGone) continue;
    if (rss_due) CheckRss(w, now);
  }
}

}  // namespace jobd
