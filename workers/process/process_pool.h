// ProcessPoolExecutor: the PROCESS executor. Runs sync tasks in pre-forked
// worker processes (workers/process/worker_process.h) fed over socketpairs
// with length-prefixed protobuf frames (workers/process/ipc.h), their
// results coming back through a shared-memory ring per worker
// (workers/process/result_ring.h); the workers come from a fork server
// (workers/process/fork_server.h).
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
// Pipelining. While the recent jobs are short (under kPipelineJobTime on
// average), a worker may hold up to `pipeline_depth` chunks: the one it runs
// and frames queued behind it, so it goes from one tiny job to the next
// without waiting for the daemon; capacity() is then workers ×
// pipeline_depth. A chunk goes to the least loaded worker (a second one
// only when every worker holds one). The worker rings the doorbell at the
// end of each frame it ran while more are queued, so the daemon refills it
// meanwhile; the frames the scheduler starts from one batch of results go
// out in one write per worker. A job queued at a worker counts as started
// (its run time and timeout count from then). Cancelling a queued job
// withdraws it (the worker skips it) without touching the running one;
// when a worker dies, the jobs queued behind the one it ran go to its
// replacement; a worker is sent no chunk beyond max_jobs_per_worker nor
// after it is marked to retire.
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
// it makes without holding the pool's lock (so the scheduler may call back
// in).
// Ownership: the pool owns the fork server it is given, the workers, and
// its monitor thread; the listener must outlive it. Destroying it shuts it
// down at once (Shutdown(now)).
//
// This header is the pool's whole public face and free of the private
// worker protocol: the state machine behind it is PoolCore
// (workers/process/internal/pool_core.h, one part per file).
#ifndef JOBD_WORKERS_PROCESS_PROCESS_POOL_H_
#define JOBD_WORKERS_PROCESS_PROCESS_POOL_H_

#include <sys/types.h>

#include <memory>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "workers/executor/executor.h"
#include "workers/process/fork_server.h"
#include "workers/process/process_pool_options.h"

namespace jobd {

class PoolCore;  // workers/process/internal/pool_core.h

class ProcessPoolExecutor : public JobExecutor {
 public:
  // Takes over `fork_server` (started by main() before any thread).
  ProcessPoolExecutor(ProcessPoolOptions options, ForkServerProcess fork_server,
                      ExecutorListener& listener);
  ~ProcessPoolExecutor() override;

  v1::Executor kind() const override { return v1::EXECUTOR_PROCESS; }
  int capacity() const override;
  int workers() const override;
  int max_chunk() const override;
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
  std::unique_ptr<PoolCore> core_;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_PROCESS_POOL_H_
