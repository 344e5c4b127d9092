// Internal to the process pool (not part of its public API): PoolCore, the
// state machine behind ProcessPoolExecutor (workers/process/process_pool.h,
// which describes what the pool does and guarantees). It holds the slots and
// workers (internal/pool_slots.h), the fork server (internal/fork_relay.h),
// the quarantine (internal/quarantine.h) and the monitor thread, which
// waits on an EpollLoop (internal/epoll_loop.h).
//
// One class, one mutex; its parts are in one file each:
//   process_pool.cc     the executor's calls: start a chunk, cancel a job,
//                       quarantine, shutdown, stats
//   pool_monitor.cc     the monitor thread: its loop, the dispatch of
//                       events, the timers, delivery of reports
//   pool_spawn.cc       forking workers through the fork server, spares
//                       taking over slots, replacing a dead fork server
//   pool_worker_io.cc   a worker's socket and result ring: frames in and
//                       out, results, protocol errors
//   pool_retire.cc      workers leaving: recycling, kills, death, blame,
//                       quarantine counting, reports
//   pool_liveness.cc    pings, unresponsive workers, the RSS limit, the
//                       cancel escalation (SIGTERM, then SIGKILL)
//
// Thread-safety: the public methods are thread-safe. Everything mutable is
// guarded by mu_. The monitor thread owns the reading side of every
// descriptor and makes every listener call, without holding mu_ (so the
// scheduler may call back in, e.g. StartChunk from a completion).
// Ownership: owns the fork server, every worker process (through the fork
// server, which kills their groups when its socket closes), their
// descriptors and the monitor thread; the listener must outlive it.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_POOL_CORE_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_POOL_CORE_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "jobd/internal/worker.pb.h"
#include "workers/executor/executor.h"
#include "workers/process/fork_server.h"
#include "workers/process/internal/epoll_loop.h"
#include "workers/process/internal/fork_relay.h"
#include "workers/process/internal/pool_slots.h"
#include "workers/process/internal/quarantine.h"
#include "workers/process/process_pool_options.h"

namespace jobd {

// How long a worker that left its slot may take to be seen dead (its exit
// status), and an unresponsive one killed with SIGKILL to die, before the
// pool stops waiting.
inline constexpr absl::Duration kExitStatusWait = absl::Seconds(2);

class PoolCore : private ForkServerRelay::Events {
 public:
  // Takes over `fork_server`; starts the monitor thread and asks for every
  // slot's worker.
  PoolCore(ProcessPoolOptions options, ForkServerProcess fork_server,
           ExecutorListener& listener);
  ~PoolCore() override;  // Shutdown(now) if not done.
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  const ProcessPoolOptions& options() const { return options_; }
  // Chunks the scheduler may hand it at once: a chunk per worker, times
  // pipeline_depth while its recent jobs are short (kPipelineJobTime).
  int capacity() const;

  // ---- the executor's calls (process_pool.cc) ----
  void StartChunk(std::vector<JobRun> runs) ABSL_LOCKS_EXCLUDED(mu_);
  void Cancel(uint64_t job_id) ABSL_LOCKS_EXCLUDED(mu_);
  bool Shutdown(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  void AddStats(v1::GetStatsResponse& stats) const ABSL_LOCKS_EXCLUDED(mu_);
  bool IsQuarantined(const TaskDef& task) const ABSL_LOCKS_EXCLUDED(mu_);
  bool ClearQuarantine(std::string_view task) ABSL_LOCKS_EXCLUDED(mu_);
  pid_t fork_server_pid() const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<pid_t> worker_pids() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Report {  // A listener call to make without the lock.
    uint64_t job_id = 0;
    bool progress = false;
    double fraction = 0;
    std::string message;  // Or the output's bytes.
    // Set: output of the job (OnJobOutput), not a progress or an end.
    v1::OutputStream output = v1::OUTPUT_STREAM_UNSPECIFIED;
    JobOutcome outcome;
  };

  bool IsSpare(int slot) const { return slot >= options_.workers; }
  Worker* FindWorker(uint64_t gen) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- monitor thread (pool_monitor.cc) ----
  void MonitorLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the caller is this pool's monitor thread.
  bool OnMonitorThread() const;
  // Handles one ready descriptor.
  void Dispatch(uint64_t key, uint32_t events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the listener calls of `reports`, in order, and clears it;
  // consecutive results go together (one scheduler lock round per batch),
  // through `finished` (empty; kept to reuse its memory).
  void Deliver(std::vector<Report>& reports, std::vector<FinishedJob>& finished)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Time NextTimer() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunTimers(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- fork server and respawns (pool_spawn.cc) ----
  void RequestSpawn(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleForkServer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ForkServerRelay::Events (called from relay_, under mu_).
  void OnSpawned(uint64_t request_id, pid_t pid,
                 std::vector<UniqueFd>& fds) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnSpawnFailed(uint64_t request_id, std::string_view error) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnExited(pid_t pid, int wait_status) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReplaceForkServer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives `slot` (a job slot without a worker) the worker of a ready spare
  // slot, which takes over `slot`'s fork request or makes its own; false if
  // no spare is ready. Then requests a worker for whichever lacks one.
  bool TakeSpare(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A slot lost its worker: a spare takes its place, or it forks a new one.
  void Refill(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- a worker's socket and ring (pool_worker_io.cc) ----
  void HandleWorkerSocket(Worker& w, uint32_t events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Parses buffered frames; false after a protocol error (worker killed).
  bool ProcessFrames(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports the results committed to its ring; false after a protocol
  // error (worker killed). Done before anything that blames its running job.
  bool DrainRing(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ProtocolError(Worker& w, std::string_view error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDone(Worker& w, internal::JobDone& done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends the slot's pending jobs to its worker: none to one that is to
  // retire, and no chunk beyond max_jobs_per_worker (they wait for the
  // next worker); quarantined tasks' jobs fail instead.
  void SendPending(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes what `w`'s buffer holds; on the monitor thread, once its
  // listener calls are made (FlushLater), so that the chunks the scheduler
  // starts from one batch of reports share a write.
  void Flush(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FlushNow(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FlushLater() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- workers leaving (pool_retire.cc) ----
  void MaybeRetire(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Kills the worker's process group; it leaves its slot at once, blamed
  // for its running job with `reason`/`message`.
  void KillWorker(Worker& w, v1::ErrorReason reason, std::string message,
                  std::string retired_as, int signal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The worker process ended or must be treated as such: reads what it
  // wrote, then takes it out of its slot. (An unresponsive one is dead by
  // now: the jobs it never took to run go to its replacement.)
  void OnWorkerDied(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The worker announced a fatal signal (Crashing frame): it is as good as
  // dead, killed by `sig`; blamed and replaced now, not when it is reaped.
  void OnCrashNotice(Worker& w, int sig) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a worker out of its slot: its running job is blamed, the rest of
  // its chunk waits for the replacement, which is requested now.
  void DetachWorker(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A gone worker's exit is known (status < 0: unknown): reports its
  // blamed job and forgets it.
  void Bury(Worker& w, int status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job `f` of `slot` ended; the last of its chunk frees a slot of the
  // scheduler's (JobOutcome::frees_slot).
  void ReportDone(int slot, const InFlight& f, JobOutcome outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportFailure(int slot, const InFlight& f, v1::ErrorReason reason,
                     absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- liveness, memory, escalation (pool_liveness.cc) ----
  // Pings every live worker that has no ping outstanding.
  void PingWorkers(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A ping of `w` is overdue: unless its answer is in the socket after all,
  // kills it (it leaves its slot once seen dead; see OnWorkerDied).
  void OnPingOverdue(Worker& w, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An unresponsive `w` killed with SIGKILL is not seen dead in time: it
  // leaves its slot all the same.
  void OnDeathOverdue(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `w`'s resident memory is due to be checked at `now` (while it
  // runs a job, every rss_check_interval, with max_worker_rss set).
  bool RssCheckDue(const Worker& w, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads `w`'s RSS: over max_worker_rss, an idle worker retires and a
  // busy one is killed, its job failing OUT_OF_MEMORY.
  void CheckRss(Worker& w, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A cancel of `w`'s running job: SIGTERM after cancel_grace unless it
  // ends by itself.
  void ArmEscalation(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `w`'s escalation timer is due: the next step.
  void Escalate(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Const after construction.
  const ProcessPoolOptions options_;
  ExecutorListener& listener_;
  EpollLoop loop_;  // Thread-safe.

  mutable absl::Mutex mu_;
  ForkServerRelay relay_ ABSL_GUARDED_BY(mu_);
  absl::Time fork_server_retry_at_ ABSL_GUARDED_BY(mu_) =
      absl::InfiniteFuture();
  absl::Time next_ping_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<pid_t, uint64_t> gen_by_pid_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> graves_ ABSL_GUARDED_BY(mu_);  // Buried: erase.
  uint64_t next_gen_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<Report> reports_ ABSL_GUARDED_BY(mu_);
  CrashQuarantine quarantine_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> retired_ ABSL_GUARDED_BY(mu_);
  uint64_t spawned_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;     // Shutdown() began.
  bool monitor_stop_ ABSL_GUARDED_BY(mu_) = false;  // No more spawns.
  bool hold_refill_ ABSL_GUARDED_BY(mu_) = false;   // See OnCrashNotice.
  int busy_chunks_ ABSL_GUARDED_BY(mu_) = 0;        // Chunks held.
  // Jobs not yet reported per chunk held, by chunk number.
  absl::flat_hash_map<uint64_t, int> chunk_left_ ABSL_GUARDED_BY(mu_);
  uint64_t next_chunk_ ABSL_GUARDED_BY(mu_) = 1;
  // Average wall time of the recent jobs (weight 1/8 each), and whether it
  // is under kPipelineJobTime (read by capacity() without the lock).
  absl::Duration job_time_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  std::atomic<bool> short_jobs_{false};
  // Workers whose frames wait for the monitor's FlushLater, by gen.
  std::vector<uint64_t> to_flush_ ABSL_GUARDED_BY(mu_);

  std::thread monitor_;  // Last: started after everything above exists.
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_POOL_CORE_H_
