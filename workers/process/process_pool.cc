// ProcessPoolExecutor, and the executor's calls into PoolCore: starting a
// chunk, cancelling a job, the quarantine, shutdown and stats
// (workers/process/internal/pool_core.h lists the other parts).
#include "workers/process/process_pool.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "spdlog/spdlog.h"
#include "workers/process/internal/job_frames.h"
#include "workers/process/internal/pool_core.h"
#include "workers/process/internal/process_info.h"

namespace jobd {

// ---- ProcessPoolExecutor ---------------------------------------------------

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolOptions options,
                                         ForkServerProcess fork_server,
                                         ExecutorListener& listener)
    : core_(std::make_unique<PoolCore>(std::move(options),
                                       std::move(fork_server), listener)) {}

ProcessPoolExecutor::~ProcessPoolExecutor() = default;

int ProcessPoolExecutor::capacity() const { return core_->capacity(); }

int ProcessPoolExecutor::workers() const { return core_->options().workers; }

int ProcessPoolExecutor::max_chunk() const {
  return core_->options().max_chunk;
}

void ProcessPoolExecutor::Start(JobRun run) {
  std::vector<JobRun> chunk;
  chunk.push_back(std::move(run));
  core_->StartChunk(std::move(chunk));
}

void ProcessPoolExecutor::StartChunk(std::vector<JobRun> runs) {
  core_->StartChunk(std::move(runs));
}

void ProcessPoolExecutor::Cancel(uint64_t job_id) { core_->Cancel(job_id); }

bool ProcessPoolExecutor::Shutdown(absl::Time deadline) {
  return core_->Shutdown(deadline);
}

void ProcessPoolExecutor::AddStats(v1::GetStatsResponse& stats) const {
  core_->AddStats(stats);
}

bool ProcessPoolExecutor::IsQuarantined(const TaskDef& task) const {
  return core_->IsQuarantined(task);
}

bool ProcessPoolExecutor::ClearQuarantine(std::string_view task) {
  return core_->ClearQuarantine(task);
}

pid_t ProcessPoolExecutor::fork_server_pid() const {
  return core_->fork_server_pid();
}

std::vector<pid_t> ProcessPoolExecutor::worker_pids() const {
  return core_->worker_pids();
}

// ---- PoolCore: construction ------------------------------------------------

PoolCore::PoolCore(ProcessPoolOptions options, ForkServerProcess fork_server,
                   ExecutorListener& listener)
    : options_(std::move(options)),
      listener_(listener),
      relay_(loop_, options_, std::move(fork_server)),
      quarantine_(options_.quarantine_after) {
  {
    absl::MutexLock lock(&mu_);
    slots_.resize(std::max(1, options_.workers) +
                  std::max(0, options_.spare_workers));
    for (size_t i = 0; i < slots_.size(); ++i) RequestSpawn(i);
    if (options_.ping_interval > absl::ZeroDuration()) {
      next_ping_ = absl::Now() + options_.ping_interval;
    }
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
}

PoolCore::~PoolCore() { Shutdown(absl::Now()); }

int PoolCore::capacity() const {
  const int depth = short_jobs_.load(std::memory_order_relaxed)
                        ? std::max(1, options_.pipeline_depth)
                        : 1;
  return std::max(1, options_.workers) * depth;
}

Worker* PoolCore::FindWorker(uint64_t gen) {
  auto it = workers_.find(gen);
  return it == workers_.end() ? nullptr : it->second.get();
}

// ---- scheduler side --------------------------------------------------------

void PoolCore::StartChunk(std::vector<JobRun> runs) {
  if (runs.empty()) return;
  absl::MutexLock lock(&mu_);
  const int chosen = ChooseFreeSlot(slots_, options_.workers,
                                    std::max(1, options_.pipeline_depth));
  if (chosen < 0) {  // The scheduler broke the capacity contract.
    spdlog::critical("process pool: StartChunk with every slot busy");
    std::abort();
  }
  Slot& s = slots_[chosen];
  const uint64_t chunk = next_chunk_++;
  chunk_left_[chunk] = static_cast<int>(runs.size());
  ++s.chunks;
  ++busy_chunks_;
  for (JobRun& run : runs) {
    InFlight f{.run = std::move(run), .chunk = chunk};
    if (quarantine_.Contains(f.run.task->name)) {
      ReportFailure(
          chosen, f, v1::ERROR_REASON_QUARANTINED,
          absl::FailedPreconditionError(quarantine_.Message(f.run.task->name)));
      continue;
    }
    s.pending.push_back(std::move(f));
  }
  if (s.worker != 0) SendPending(chosen);
  // The monitor has reports to deliver or the RSS timer to arm; not needed
  // when this runs on the monitor (a listener call starting the next chunk).
  if ((!reports_.empty() || options_.max_worker_rss > 0) &&
      !OnMonitorThread()) {
    loop_.Wake();
  }
}

void PoolCore::Cancel(uint64_t job_id) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    Slot& s = slots_[i];
    for (auto it = s.pending.begin(); it != s.pending.end(); ++it) {
      if (it->run.job_id != job_id) continue;
      InFlight f = std::move(*it);
      s.pending.erase(it);
      ReportFailure(i, f, CancelOutcomeReason(f.run),
                    absl::CancelledError("cancelled before it started"));
      loop_.Wake();
      return;
    }
    for (size_t k = 0; k < s.inflight.size(); ++k) {
      InFlight& f = s.inflight[k];
      if (f.run.job_id != job_id) continue;
      if (f.cancelled) return;
      f.cancelled = true;
      Worker& w = *workers_.at(s.worker);
      AppendCancelFrame(job_id, f.run.cancel->reason(), w.out.data());
      Flush(w);
      if (k == 0) ArmEscalation(w);
      loop_.Wake();
      return;
    }
  }
}

// ---- quarantine ------------------------------------------------------------

bool PoolCore::IsQuarantined(const TaskDef& task) const {
  absl::MutexLock lock(&mu_);
  return quarantine_.Contains(task.name);
}

bool PoolCore::ClearQuarantine(std::string_view task) {
  absl::MutexLock lock(&mu_);
  const bool was = quarantine_.Release(std::string(task));
  if (was) {
    spdlog::info("process pool: task '{}' released from quarantine",
                 std::string(task));
  }
  return was;
}

// ---- shutdown and stats ----------------------------------------------------

bool PoolCore::Shutdown(absl::Time deadline) {
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return true;
    shut_down_ = true;
    auto no_chunks = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return busy_chunks_ == 0;
    };
    idle = mu_.AwaitWithDeadline(absl::Condition(&no_chunks), deadline);
    monitor_stop_ = true;
    // Whatever is left ends now, reported once like every other job.
    for (auto& [gen, w] : workers_) {
      if (w->state == WorkerState::kLive) DrainRing(*w);  // Finished ones.
      if (!w->exited) kill(-w->pid, SIGKILL);
      if (w->state == WorkerState::kLive) DetachWorker(*w);
    }
    for (auto& [gen, w] : workers_) Bury(*w, -1);
    for (size_t i = 0; i < slots_.size(); ++i) {
      while (!slots_[i].pending.empty()) {
        InFlight f = std::move(slots_[i].pending.front());
        slots_[i].pending.pop_front();
        ReportFailure(i, f, v1::ERROR_REASON_SHUTDOWN,
                      absl::UnavailableError("jobd shut down"));
      }
    }
  }
  loop_.Wake();
  if (monitor_.joinable()) monitor_.join();
  absl::MutexLock lock(&mu_);
  workers_.clear();
  relay_.Stop();
  return idle;
}

pid_t PoolCore::fork_server_pid() const {
  absl::MutexLock lock(&mu_);
  return relay_.pid();
}

std::vector<pid_t> PoolCore::worker_pids() const {
  absl::MutexLock lock(&mu_);
  std::vector<pid_t> pids;
  for (int i = 0; i < options_.workers; ++i) {
    if (slots_[i].worker != 0) {
      pids.push_back(workers_.at(slots_[i].worker)->pid);
    }
  }
  return pids;
}

void PoolCore::AddStats(v1::GetStatsResponse& stats) const {
  v1::ProcessPoolStats& p = *stats.mutable_process_pool();
  {
    absl::MutexLock lock(&mu_);
    p.set_fork_server_pid(relay_.pid());
    p.set_fork_server_restarts(relay_.restarts());
    p.set_workers_spawned(spawned_);
    for (const auto& [reason, count] : retired_) {
      (*p.mutable_retired())[reason] = count;
    }
    for (std::string& t : quarantine_.Sorted()) {
      p.add_quarantined_tasks(std::move(t));
    }
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      v1::WorkerStats& ws = IsSpare(i) ? *p.add_spares() : *p.add_workers();
      ws.set_slot(i);
      if (s.worker == 0) {
        ws.set_state("spawning");
        continue;
      }
      const Worker& w = *workers_.at(s.worker);
      ws.set_pid(w.pid);
      ws.set_state(!s.inflight.empty() ? "busy"
                   : !w.retire.empty() ? "retiring"
                   : !IsSpare(i)       ? "idle"
                   : w.ready           ? "spare"
                                       : "warming");
      ws.set_jobs_done(w.jobs_done);
      if (!s.inflight.empty()) {
        ws.set_current_job_id(s.inflight.front().run.job_id);
      }
      ws.mutable_started()->set_seconds(absl::ToUnixSeconds(w.started));
    }
  }
  for (auto* list : {p.mutable_workers(), p.mutable_spares()}) {
    for (v1::WorkerStats& ws : *list) {  // /proc, unlocked.
      if (ws.pid() > 0) ws.set_rss_bytes(ReadRssBytes(ws.pid()));
    }
  }
}

}  // namespace jobd
