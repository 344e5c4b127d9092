// ProcessPoolExecutor: the PROCESS executor. Runs sync tasks in pre-forked
// worker processes (workers/worker_process.h) fed over socketpairs with
// length-prefixed protobuf frames (workers/ipc.h), their results coming back
// through a shared-memory ring per worker (workers/result_ring.h); the
// workers come from a fork server (workers/fork_server.h).
//
// Slots and chunks. The pool has `workers` slots, each with one worker
// process (or one being forked), and `spare_workers` spare slots whose
// workers wait idle: when a slot loses its worker (crash, kill, recycling)
// it swaps places with a ready spare at once, and the spare slot forks a
// new one, so a respawn never waits for fork() and a fresh process's first
// page faults. The scheduler hands a slot a chunk of one
// or more jobs (StartChunk; chunks come from JobSpec.chunksize); the chunk is
// sent in one frame, its jobs run in order, and the slot is free again when
// the last of them is reported (JobOutcome::frees_slot).
//
// Failure handling:
//  * A worker that dies (signal, exit, OOM, corrupt frame, closed socket)
//    fails only the job it was running, with the cause in the error; the
//    jobs queued behind it in the chunk go to its replacement, which is
//    requested at once. A task that kills its worker `quarantine_after`
//    times in a row is quarantined: its jobs fail at once (QUARANTINED)
//    until ClearQuarantine.
//  * Cancel/timeout of a running job: cooperative first (its CancelToken in
//    the worker), SIGTERM to the worker's process group after cancel_grace,
//    SIGKILL after kill_grace more; the worker is replaced.
//  * Liveness: every ping_interval each worker and spare gets a ping frame,
//    which its reading thread answers at once, even while a job runs. One
//    unanswered for ping_timeout (a worker stopped by SIGSTOP or a
//    debugger, or wedged) gets SIGKILL; once it is dead, the jobs it had
//    not taken to run (ResultRing::jobs_taken) go to its replacement, since
//    they never began, and a job it was running fails WORKER_CRASHED with
//    the reason (e.g. "was stopped (SIGSTOP ...)"). Jobs handed to a
//    stopped worker thus move on, with or without a timeout.
//  * Recycling: after max_jobs_per_worker jobs, when RSS exceeds
//    max_worker_rss (sampled while jobs run; a busy worker over the limit is
//    killed and its job fails OUT_OF_MEMORY), after an out-of-memory error,
//    or when its fork server was replaced. rlimits apply per worker.
//  * If the fork server dies it is replaced by a fresh one (its binary in
//    fork-server mode); running workers finish their chunks, then retire.
//
// Thread-safety: the JobExecutor methods are thread-safe. One monitor thread
// owns the sockets' reading side, timers and every listener callback, which
// it makes without holding mu_ (so the scheduler may call back in).
#ifndef JOBD_WORKERS_PROCESS_PROCESS_POOL_H_
#define JOBD_WORKERS_PROCESS_PROCESS_POOL_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "jobd/internal/worker.pb.h"
#include "workers/executor/executor.h"
#include "workers/process/fork_server.h"
#include "workers/process/ipc.h"
#include "workers/process/process_pool_options.h"
#include "workers/process/result_ring.h"

namespace jobd {

class ProcessPoolExecutor : public JobExecutor {
 public:
  // Takes over `fork_server` (started by main() before any thread).
  ProcessPoolExecutor(ProcessPoolOptions options, ForkServerProcess fork_server,
                      ExecutorListener& listener);
  ~ProcessPoolExecutor() override;

  v1::Executor kind() const override { return v1::EXECUTOR_PROCESS; }
  int capacity() const override { return options_.workers; }
  int max_chunk() const override { return options_.max_chunk; }
  void Start(JobRun run) override;
  void StartChunk(std::vector<JobRun> runs) override;
  void Cancel(uint64_t job_id) override;
  bool Shutdown(absl::Time deadline) override;
  void AddStats(v1::GetStatsResponse& stats) const override;
  bool IsQuarantined(const TaskDef& task) const override;
  bool ClearQuarantine(std::string_view task) override;

  // For tests and benchmarks.
  pid_t fork_server_pid() const;
  std::vector<pid_t> worker_pids() const;

 private:
  struct InFlight {
    JobRun run;
    bool cancelled = false;  // The scheduler asked to stop it.
  };
  enum class WorkerState { kLive, kGone };
  struct Worker {
    uint64_t gen = 0;  // Unique per process; epoll and timer key.
    int slot = 0;
    pid_t pid = 0;
    UniqueFd sock;
    UniqueFd pidfd;
    WorkerState state = WorkerState::kLive;
    FrameReader reader{0};
    ResultRing ring;  // Its results (workers/result_ring.h).
    // Results too big for the ring, read from the socket before the ring
    // entry announcing them was taken.
    std::deque<internal::JobDone> socket_results;
    OutBuffer out;
    bool want_out = false;  // EPOLLOUT registered.
    bool ready = false;     // Warmed up (its Ready frame came).
    uint64_t jobs_done = 0;
    absl::Time started;
    bool orphaned = false;  // Its fork server died: exit status unknowable.
    std::string retire;     // Why it is to be retired after its chunk.
    // Hard stop of a cancelled running job: 0 none, 1 waiting cooperative,
    // 2 SIGTERM sent, 3 SIGKILL sent.
    int escalation = 0;
    absl::Time escalate_at = absl::InfiniteFuture();
    absl::Time last_rss_check = absl::InfinitePast();
    // Set when it left its slot (kGone): the job it was running, and what
    // the pool already knows about why it died.
    std::optional<InFlight> blamed;
    v1::ErrorReason kill_reason = v1::ERROR_REASON_UNSPECIFIED;
    std::string kill_message;  // Overrides the exit status in the error.
    std::string retired_as;    // Counter key of ProcessPoolStats.retired.
    bool exited = false;       // pidfd said so.
    absl::Time status_deadline = absl::InfiniteFuture();
    // Liveness: the last ping sent, and when it is overdue (infinite while
    // none is outstanding).
    uint64_t ping = 0;
    absl::Time ping_deadline = absl::InfiniteFuture();
    // It did not answer a ping and was sent SIGKILL; it keeps its slot until
    // it is seen dead, or until death_deadline.
    bool unresponsive = false;
    absl::Time death_deadline = absl::InfiniteFuture();
  };
  struct Slot {
    uint64_t worker = 0;         // gen of its live worker; 0 if none.
    uint64_t spawn_request = 0;  // Outstanding fork request; 0 if none.
    absl::Time respawn_at = absl::InfinitePast();  // Backoff.
    int quick_deaths = 0;           // Deaths before any finished job, in a row.
    std::deque<InFlight> inflight;  // Sent to the worker, not reported.
    std::deque<InFlight> pending;   // Waiting for a worker.
    int chunk_left = 0;             // Jobs of its chunk not yet reported.
  };
  struct Report {  // A listener call to make without the lock.
    uint64_t job_id = 0;
    bool progress = false;
    double fraction = 0;
    std::string message;
    JobOutcome outcome;
  };

  void MonitorLoop();
  void DeliverFinished(std::vector<FinishedJob>& finished);
  void Wake();
  absl::Time NextTimer() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunTimers(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void HandleForkServer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnSpawned(const internal::ForkReply::Spawned& spawned,
                 std::vector<UniqueFd>& fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnExited(const internal::ForkReply::Exited& exited)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReplaceForkServer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RequestSpawn(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsSpare(int slot) const { return slot >= options_.workers; }
  // Gives `slot` (a job slot without a worker) the worker of a ready spare
  // slot, which takes over `slot`'s fork request or makes its own; false if
  // no spare is ready. Then requests a worker for whichever lacks one.
  bool TakeSpare(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A slot lost its worker: a spare takes its place, or it forks a new one.
  void Refill(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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
  void SendPending(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Flush(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmEscalation(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pings every live worker that has no ping outstanding.
  void PingWorkers(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A ping of `w` is overdue: unless its answer is in the socket after all,
  // kills it (it leaves its slot once seen dead; see OnWorkerDied).
  void OnPingOverdue(Worker& w, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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

  void ReportDone(int slot, const JobRun& run, JobOutcome outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportFailure(int slot, const JobRun& run, v1::ErrorReason reason,
                     absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountCrash(const TaskDef& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Worker* FindWorker(uint64_t gen) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string QuarantineMessage(const std::string& task) const;

  const ProcessPoolOptions options_;
  ExecutorListener& listener_;
  UniqueFd epoll_;
  UniqueFd wake_fd_;  // eventfd.

  mutable absl::Mutex mu_;
  ForkServerProcess fork_server_ ABSL_GUARDED_BY(mu_);
  uint64_t fork_server_gen_ ABSL_GUARDED_BY(mu_) = 1;  // epoll key.
  absl::Time fork_server_retry_at_ ABSL_GUARDED_BY(mu_) =
      absl::InfiniteFuture();
  absl::Time next_ping_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<pid_t, uint64_t> gen_by_pid_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> graves_ ABSL_GUARDED_BY(mu_);  // Buried: erase.
  uint64_t next_gen_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<Report> reports_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> crash_streak_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> quarantined_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> retired_ ABSL_GUARDED_BY(mu_);
  uint64_t spawned_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t fork_server_restarts_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;     // Shutdown() began.
  bool monitor_stop_ ABSL_GUARDED_BY(mu_) = false;  // No more spawns.
  int busy_slots_ ABSL_GUARDED_BY(mu_) = 0;         // Slots with a chunk.

  std::thread monitor_;  // Last: started after everything above exists.
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_PROCESS_POOL_H_
