// PoolCore and workers leaving: recycling a worker after its chunk, killing
// one, taking a dead one out of its slot, and, once its exit is known,
// blaming it for the job it was running (counted towards the task's
// quarantine); and the reports every job ends with
// (workers/process/internal/pool_core.h).
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "workers/process/internal/pool_core.h"
#include "workers/process/internal/process_info.h"

namespace jobd {

void PoolCore::MaybeRetire(Worker& w) {
  if (w.state != WorkerState::kLive || w.retire.empty() ||
      !slots_[w.slot].inflight.empty()) {
    return;
  }
  w.retired_as = w.retire;
  spdlog::info("process pool: retiring worker pid {} after {} job(s): {}",
               w.pid, w.jobs_done, w.retire);
  DetachWorker(w);  // Closing its socket makes it exit.
}

void PoolCore::KillWorker(Worker& w, v1::ErrorReason reason,
                          std::string message, std::string retired_as,
                          int signal) {
  kill(-w.pid, signal);
  w.escalation = signal == SIGKILL ? 3 : 2;
  w.escalate_at = signal == SIGKILL ? absl::InfiniteFuture()
                                    : absl::Now() + options_.kill_grace;
  w.kill_reason = reason;
  w.kill_message = std::move(message);
  w.retired_as = std::move(retired_as);
  DetachWorker(w);
}

void PoolCore::OnWorkerDied(Worker& w) {
  // Everything it wrote before it died is in the socket: take it first.
  for (int i = 0; i < 1024 && w.state == WorkerState::kLive; ++i) {
    const ReadResult r = w.reader.ReadFrom(w.sock.get());
    if (r != ReadResult::kData) break;
    if (!ProcessFrames(w)) return;
  }
  if (w.state != WorkerState::kLive || !DrainRing(w)) return;
  kill(-w.pid, SIGKILL);  // In case only the socket broke.
  Slot& s = slots_[w.slot];
  if (w.unresponsive && !s.inflight.empty() &&
      w.ring.jobs_taken() == w.jobs_done) {
    // Killed for not answering, before it took its next job: none of the
    // jobs it was sent began, and it cannot run them any more. They all go
    // to its replacement, even at-most-once ones.
    spdlog::warn(
        "process pool: {} job(s) sent to unresponsive worker pid {} never "
        "began; they go to another worker",
        s.inflight.size(), w.pid);
    RequeueInFlight(s);
  }
  if (w.retired_as.empty()) w.retired_as = "crashed";
  DetachWorker(w);
}

void PoolCore::OnCrashNotice(Worker& w, int sig) {
  if (!DrainRing(w)) return;  // What it finished before is not its fault.
  // Its slot is refilled once the crash is counted, so that the jobs queued
  // behind the one it ran do not go to the next worker if that quarantined
  // their task.
  hold_refill_ = true;
  KillWorker(w, v1::ERROR_REASON_UNSPECIFIED, "", "crashed", SIGKILL);
  hold_refill_ = false;
  Bury(w, sig);  // The status it is about to have: killed by `sig`.
  if (slots_[w.slot].worker == 0) Refill(w.slot);
}

void PoolCore::DetachWorker(Worker& w) {
  Slot& s = slots_[w.slot];
  w.state = WorkerState::kGone;
  w.sock.reset();
  if (!s.inflight.empty()) {
    w.blamed = std::move(s.inflight.front());
    s.inflight.pop_front();
  }
  RequeueInFlight(s);  // Not started: they go to the replacement.
  s.worker = 0;
  w.status_deadline = absl::Now() + kExitStatusWait;
  const bool crashed = w.retired_as != "max_jobs_per_worker" &&
                       w.retired_as != "out_of_memory" &&
                       w.retired_as != "fork_server_restart" &&
                       w.retired_as != "unresponsive";
  if (crashed && w.jobs_done == 0 && !w.blamed.has_value()) {
    // Died before doing anything: back off so a broken setup (say, an
    // address-space limit too small to start) does not fork in a loop.
    ++s.quick_deaths;
    s.respawn_at = absl::Now() + QuickDeathBackoff(s.quick_deaths);
  }
  if (!hold_refill_) Refill(w.slot);
  if (w.orphaned && w.exited) Bury(w, -1);
}

void PoolCore::Bury(Worker& w, int status) {
  if (w.state != WorkerState::kGone ||
      w.status_deadline == absl::InfinitePast()) {
    return;
  }
  w.status_deadline = absl::InfinitePast();  // Buried: once only.
  if (w.escalation == 2) {
    kill(-w.pid, SIGKILL);  // Its group, before forgetting it.
  }
  w.escalate_at = absl::InfiniteFuture();
  const WorkerExit exit = DescribeWorkerExit(
      status, /*jobd_killed=*/w.kill_reason != v1::ERROR_REASON_UNSPECIFIED);
  if (w.blamed.has_value()) {
    const JobRun& run = w.blamed->run;
    if (w.blamed->cancelled) {
      ReportFailure(w.slot, *w.blamed, CancelOutcomeReason(run),
                    absl::CancelledError(w.kill_message.empty()
                                             ? "stopped after cancellation"
                                             : w.kill_message));
    } else {
      const v1::ErrorReason reason =
          w.kill_reason != v1::ERROR_REASON_UNSPECIFIED ? w.kill_reason
                                                        : exit.reason;
      std::string message =
          !w.kill_message.empty()
              ? w.kill_message
              : fmt::format(
                    "the worker process (pid {}) {} while running "
                    "the job; the other jobs were not affected",
                    w.pid, exit.how);
      spdlog::warn("process pool: job {} ({}) in worker pid {}: {}", run.job_id,
                   run.task->name, w.pid, message);
      if (quarantine_.CountKill(run.task->name)) {
        spdlog::error("process pool: {}", quarantine_.Message(run.task->name));
      }
      ReportFailure(w.slot, *w.blamed, reason,
                    reason == v1::ERROR_REASON_OUT_OF_MEMORY
                        ? absl::ResourceExhaustedError(message)
                        : absl::InternalError(message));
    }
  } else if (w.retired_as == "crashed") {
    spdlog::warn("process pool: idle worker pid {} {}", w.pid, exit.how);
  }
  ++retired_[w.retired_as.empty() ? "crashed" : w.retired_as];
  gen_by_pid_.erase(w.pid);
  graves_.push_back(w.gen);
}

void PoolCore::ReportDone(int slot, const InFlight& f, JobOutcome outcome) {
  auto left = chunk_left_.find(f.chunk);
  if (left == chunk_left_.end()) {  // Reported twice: a broken invariant.
    spdlog::critical("process pool: job {} of chunk {} reported twice",
                     f.run.job_id, f.chunk);
    std::abort();
  }
  outcome.frees_slot = --left->second == 0;
  if (outcome.frees_slot) {
    chunk_left_.erase(left);
    --slots_[slot].chunks;
    --busy_chunks_;
  }
  reports_.push_back({.job_id = f.run.job_id, .outcome = std::move(outcome)});
}

void PoolCore::ReportFailure(int slot, const InFlight& f,
                             v1::ErrorReason reason, absl::Status status) {
  JobOutcome outcome;
  outcome.status = std::move(status);
  outcome.reason = reason;
  ReportDone(slot, f, std::move(outcome));
}

}  // namespace jobd
