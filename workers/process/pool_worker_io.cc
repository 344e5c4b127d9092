// PoolCore and a worker's channels: the frames it reads from a worker's
// socket (ready, pong, progress, log lines, crash notice, big results),
// the results it takes from the worker's ring, and the chunks of jobs it
// writes (workers/process/internal/pool_core.h).
#include <signal.h>

#include <algorithm>
#include <string>
#include <utility>

#include "fmt/format.h"
#include "workers/process/internal/job_frames.h"
#include "workers/process/internal/pool_core.h"

namespace jobd {

void PoolCore::HandleWorkerSocket(Worker& w, uint32_t events) {
  if (events & EPOLLOUT) FlushNow(w);
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) return;
  for (int i = 0; i < 16 && w.state == WorkerState::kLive; ++i) {
    const ReadResult r = w.reader.ReadFrom(w.sock.get());
    if (r == ReadResult::kData) {
      if (!ProcessFrames(w)) return;
      if (w.reader.drained()) break;  // epoll reports anything newer.
      continue;
    }
    if (r == ReadResult::kWouldBlock) break;
    OnWorkerDied(w);  // EOF or error: it is gone, or as good as.
    return;
  }
  if (w.state == WorkerState::kLive) DrainRing(w);
}

bool PoolCore::ProcessFrames(Worker& w) {
  internal::FromWorker message;
  for (;;) {
    absl::StatusOr<bool> got = w.reader.Next(message);
    std::string error;
    if (!got.ok()) {
      error = std::string(got.status().message());
    } else if (!*got) {
      return true;
    } else if (message.has_doorbell()) {
      continue;  // The caller drains the ring next.
    } else if (message.has_ready()) {
      w.ready = true;
      continue;
    } else if (message.has_pong()) {
      if (message.pong().ping() == w.ping) {
        w.ping_deadline = absl::InfiniteFuture();
      }
      continue;
    } else if (message.has_crashing()) {
      OnCrashNotice(w, message.crashing().signal());
      return false;
    } else if (message.has_progress()) {
      if (!DrainRing(w)) return false;  // Results of the jobs before it.
      const Slot& s = slots_[w.slot];
      if (!s.inflight.empty() &&
          s.inflight.front().run.job_id == message.progress().job_id()) {
        reports_.push_back({.job_id = message.progress().job_id(),
                            .progress = true,
                            .fraction = message.progress().fraction(),
                            .message = message.progress().message()});
      }
      continue;
    } else if (message.has_output()) {
      // Not after draining the ring: the job it belongs to is still in
      // flight while its results wait there.
      const Slot& s = slots_[w.slot];
      const uint64_t id = message.output().job_id();
      if (std::any_of(s.inflight.begin(), s.inflight.end(),
                      [id](const auto& f) { return f.run.job_id == id; })) {
        reports_.push_back(
            {.job_id = id,
             .message = std::move(*message.mutable_output()->mutable_data()),
             .output = message.output().stream()});
      }
      continue;
    } else if (message.has_done()) {
      if (w.socket_results.size() < slots_[w.slot].inflight.size()) {
        w.socket_results.push_back(std::move(*message.mutable_done()));
        continue;
      }
      error = "more results than jobs";
    } else {
      error = "empty message";
    }
    // The results it committed before are not the bad frame's: with jobs
    // queued behind the one it runs, they are in the ring still.
    if (DrainRing(w)) ProtocolError(w, error);
    return false;
  }
}

bool PoolCore::DrainRing(Worker& w) {
  internal::JobDone done;
  while (w.state == WorkerState::kLive) {
    absl::StatusOr<std::optional<ResultRing::Entry>> entry = w.ring.Peek();
    if (!entry.ok()) {
      ProtocolError(w, std::string(entry.status().message()));
      return false;
    }
    if (!entry->has_value()) break;
    if ((*entry)->kind == ResultRing::kResultOnSocket) {
      if (w.socket_results.empty()) break;  // Its frame is on the way.
      done = std::move(w.socket_results.front());
      w.socket_results.pop_front();
    } else if (!done.ParseFromArray((*entry)->bytes.data(),
                                    static_cast<int>((*entry)->bytes.size()))) {
      ProtocolError(w, "a result in the ring does not parse");
      return false;
    }
    w.ring.Consume();
    const Slot& s = slots_[w.slot];
    if (s.inflight.empty() || s.inflight.front().run.job_id != done.job_id()) {
      ProtocolError(w,
                    fmt::format("result for job {}, which it was not running",
                                done.job_id()));
      return false;
    }
    OnDone(w, done);
  }
  w.ring.Release();
  return w.state == WorkerState::kLive;
}

void PoolCore::ProtocolError(Worker& w, std::string_view error) {
  KillWorker(w, v1::ERROR_REASON_WORKER_CRASHED,
             fmt::format("the worker broke the IPC protocol ({}); it was "
                         "killed and replaced",
                         std::string(error)),
             "protocol_error", SIGKILL);
}

void PoolCore::OnDone(Worker& w, internal::JobDone& done) {
  Slot& s = slots_[w.slot];
  InFlight f = std::move(s.inflight.front());
  s.inflight.pop_front();
  ++w.jobs_done;
  s.quick_deaths = 0;
  JobOutcome outcome = OutcomeFromDone(done);
  job_time_ = job_time_ == absl::InfiniteDuration()
                  ? outcome.wall_time
                  : (job_time_ * 7 + outcome.wall_time) / 8;
  short_jobs_.store(job_time_ < kPipelineJobTime, std::memory_order_relaxed);
  quarantine_.CountEnd(f.run.task->name);
  if (outcome.reason == v1::ERROR_REASON_OUT_OF_MEMORY) {
    w.retire = "out_of_memory";  // Its heap may be in any state now.
  } else if (options_.max_jobs_per_worker > 0 &&
             w.jobs_done >= options_.max_jobs_per_worker) {
    w.retire = "max_jobs_per_worker";
  }
  ReportDone(w.slot, f, std::move(outcome));
  w.escalation = 0;
  w.escalate_at = absl::InfiniteFuture();
  if (!s.inflight.empty() && s.inflight.front().cancelled) ArmEscalation(w);
  MaybeRetire(w);
  // Chunks held back by max_jobs_per_worker wait for the next worker.
}

void PoolCore::SendPending(int slot) {
  Slot& s = slots_[slot];
  Worker& w = *workers_.at(s.worker);
  if (!w.retire.empty()) return;  // Its replacement takes them.
  const uint64_t max_jobs = options_.max_jobs_per_worker;
  uint64_t sent = w.jobs_done + s.inflight.size();
  uint64_t last_chunk = s.inflight.empty() ? 0 : s.inflight.back().chunk;
  RunFrameWriter frames(w.out.data());
  while (!s.pending.empty()) {
    InFlight& f = s.pending.front();
    // A chunk is not split, but none begins past the recycle point.
    if (max_jobs > 0 && sent >= max_jobs && f.chunk != last_chunk) break;
    InFlight next = std::move(f);
    s.pending.pop_front();
    if (next.cancelled) {  // Cancelled in a worker that died: ended already.
      ReportFailure(slot, next, CancelOutcomeReason(next.run),
                    absl::CancelledError("cancelled before it started"));
      continue;
    }
    if (quarantine_.Contains(next.run.task->name)) {  // Since it came.
      ReportFailure(slot, next, v1::ERROR_REASON_QUARANTINED,
                    absl::FailedPreconditionError(
                        quarantine_.Message(next.run.task->name)));
      continue;
    }
    if (absl::Status added = frames.Add(next.run); !added.ok()) {
      ReportFailure(slot, next, v1::ERROR_REASON_INVALID_INPUT,
                    std::move(added));
      continue;
    }
    last_chunk = next.chunk;
    ++sent;
    s.inflight.push_back(std::move(next));
  }
  frames.Finish();
  Flush(w);
}

void PoolCore::Flush(Worker& w) {
  if (OnMonitorThread()) {  // The monitor writes once its reports are out.
    if (!w.out.empty()) to_flush_.push_back(w.gen);
    return;
  }
  FlushNow(w);
}

void PoolCore::FlushLater() {
  for (uint64_t gen : to_flush_) {
    if (Worker* w = FindWorker(gen);
        w != nullptr && w->state == WorkerState::kLive) {
      FlushNow(*w);
    }
  }
  to_flush_.clear();
}

void PoolCore::FlushNow(Worker& w) {
  if (!w.sock.valid()) return;
  if (!w.out.FlushTo(w.sock.get()).ok()) {
    return;  // It is gone: epoll reports the hang-up to the monitor.
  }
  const bool want_out = !w.out.empty();
  if (want_out == w.want_out) return;
  w.want_out = want_out;
  loop_.Modify(w.sock.get(),
               EPOLLIN | EPOLLRDHUP | (want_out ? uint32_t{EPOLLOUT} : 0u),
               EventKey(w.gen, EventTag::kWorkerSocket));
}

}  // namespace jobd
