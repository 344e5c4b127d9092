// PoolCore's watch over live workers: liveness pings and what happens to a
// worker that stops answering them, the resident-memory limit, and the hard
// stop of a cancelled job that does not end by itself (SIGTERM after
// cancel_grace, SIGKILL after kill_grace more)
// (workers/process/internal/pool_core.h).
#include <signal.h>

#include <string>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "workers/process/internal/job_frames.h"
#include "workers/process/internal/pool_core.h"
#include "workers/process/internal/process_info.h"

namespace jobd {

// ---- liveness pings --------------------------------------------------------

void PoolCore::PingWorkers(absl::Time now) {
  for (auto& [gen, wp] : workers_) {
    Worker& w = *wp;
    if (w.state != WorkerState::kLive || w.unresponsive ||
        w.ping_deadline != absl::InfiniteFuture()) {
      continue;
    }
    AppendPingFrame(++w.ping, w.out.data());
    Flush(w);
    w.ping_deadline = now + options_.ping_timeout;
  }
}

void PoolCore::OnPingOverdue(Worker& w, absl::Time now) {
  // This thread may have been late itself: the answer may be waiting.
  HandleWorkerSocket(w, EPOLLIN);
  if (w.state != WorkerState::kLive ||
      w.ping_deadline == absl::InfiniteFuture()) {
    return;  // Answered after all, or found dead.
  }
  std::string what = ProcessStateText(w.pid);
  if (what.empty()) what = "did not answer";
  // Kill first, so that it cannot take another job if it resumes; it keeps
  // its slot until it is seen dead (OnWorkerDied), when what it began is
  // known for sure.
  kill(-w.pid, SIGKILL);
  const Slot& s = slots_[w.slot];
  spdlog::error(
      "process pool: {} pid {} (slot {}, {}) {} and did not answer a liveness "
      "check within {} (worker-ping-timeout); killing it",
      IsSpare(w.slot) ? "spare worker" : "worker", w.pid, w.slot,
      s.inflight.empty()
          ? std::string("idle")
          : fmt::format("job {} of {} sent", s.inflight.front().run.job_id,
                        s.inflight.size()),
      what, absl::FormatDuration(options_.ping_timeout));
  w.unresponsive = true;
  w.ping_deadline = absl::InfiniteFuture();
  w.death_deadline = now + kExitStatusWait;
  w.escalation = 3;  // No cancel escalation on top: SIGKILL is sent.
  w.escalate_at = absl::InfiniteFuture();
  w.kill_reason = v1::ERROR_REASON_WORKER_CRASHED;
  w.kill_message = fmt::format(
      "the worker process (pid {}) {} while running the job, and did not "
      "answer a liveness check within {} (worker-ping-timeout): it was "
      "killed and replaced; the other jobs were not affected",
      w.pid, what, absl::FormatDuration(options_.ping_timeout));
  w.retired_as = "unresponsive";
}

void PoolCore::OnDeathOverdue(Worker& w) {
  // SIGKILL did not end it yet: free its slot all the same. Its running
  // job is blamed, as whether it began cannot be known for sure.
  spdlog::error(
      "process pool: worker pid {} is still there {} after SIGKILL; "
      "giving its slot to another",
      w.pid, absl::FormatDuration(kExitStatusWait));
  w.death_deadline = absl::InfiniteFuture();
  if (DrainRing(w)) DetachWorker(w);
}

// ---- resident memory -------------------------------------------------------

bool PoolCore::RssCheckDue(const Worker& w, absl::Time now) const {
  return options_.max_worker_rss > 0 && w.state == WorkerState::kLive &&
         !w.unresponsive && !slots_[w.slot].inflight.empty() &&
         now >= w.last_rss_check + options_.rss_check_interval;
}

void PoolCore::CheckRss(Worker& w, absl::Time now) {
  w.last_rss_check = now;
  const uint64_t rss = ReadRssBytes(w.pid);
  if (rss <= options_.max_worker_rss) return;
  if (slots_[w.slot].inflight.empty()) {
    w.retire = "max_worker_rss";
    MaybeRetire(w);
    return;
  }
  KillWorker(w, v1::ERROR_REASON_OUT_OF_MEMORY,
             fmt::format("out of memory: the worker's resident memory ({}) "
                         "exceeded max_worker_rss ({}); the worker was killed",
                         MiB(rss), MiB(options_.max_worker_rss)),
             "max_worker_rss", SIGKILL);
}

// ---- cancel escalation -----------------------------------------------------

void PoolCore::ArmEscalation(Worker& w) {
  if (w.escalation != 0) return;
  w.escalation = 1;
  w.escalate_at = absl::Now() + options_.cancel_grace;
}

void PoolCore::Escalate(Worker& w) {
  if (w.escalation == 1 && w.state == WorkerState::kLive) {
    const JobRun& run = slots_[w.slot].inflight.front().run;
    KillWorker(w, CancelOutcomeReason(run),
               fmt::format("stopped with SIGTERM: it did not react to "
                           "cancellation within {}",
                           absl::FormatDuration(options_.cancel_grace)),
               "killed", SIGTERM);
  } else if (w.escalation == 2) {  // Also what the task left behind.
    kill(-w.pid, SIGKILL);
    w.escalation = 3;
    w.escalate_at = absl::InfiniteFuture();
  } else {
    w.escalate_at = absl::InfiniteFuture();
  }
}

}  // namespace jobd
