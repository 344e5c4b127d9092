// JobExecutor: the interface between the scheduler and the places jobs run
// (thread pool, process pool; the reactor plugs in the same way).
//
// The scheduler owns the queues and decides when a job may start: it calls
// Start() (one job) or StartChunk() (several jobs sharing one slot, only when
// max_chunk() > 1) only while fewer than capacity() slots are busy, and the
// executor reports the end of every started job exactly once through its
// ExecutorListener, from any thread; the report that frees the slot says so
// (JobOutcome::frees_slot).
//
// Thread-safety: Start(), Cancel() and the getters are safe to call from any
// thread, including while the caller holds its own lock (implementations take
// only their internal lock and never call the listener from inside Start()).
// The listener must outlive the executor's last callback (Shutdown() returns
// after the last one).
#ifndef JOBD_WORKERS_EXECUTOR_EXECUTOR_H_
#define JOBD_WORKERS_EXECUTOR_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "workers/sdk/task.h"

namespace jobd {

// Everything an executor needs to run one job. Shared, immutable inputs.
struct JobRun {
  uint64_t job_id = 0;
  const TaskDef* task = nullptr;
  std::shared_ptr<const v1::JobSpec> spec;  // What `args` was bound from.
  std::shared_ptr<const TaskArgs> args;
  std::shared_ptr<CancelToken> cancel;
  absl::Time deadline = absl::InfiniteFuture();
  // Measure the run-queue wait (JobOutcome::cpu_wait_time) of this run of an
  // AUTO job (thread pool; the process pool's workers take CPU/wall as is).
  bool measure_cpu_wait = false;
};

// A task's error and progress messages are cut to these many bytes (on a
// character boundary, made valid UTF-8) where they enter the daemon, so
// that a Job or JobEvent message holds little besides its spec and result.
inline constexpr size_t kMaxErrorMessageBytes = 16 << 10;
inline constexpr size_t kMaxProgressMessageBytes = 4 << 10;
// A trivial task's job (TaskDef::trivial) runs outside the executor's
// slots, on the thread that starts it, only with a spec up to this (its
// cost grows with its spec: echo copies it).
inline constexpr size_t kTrivialSpecBytes = 64 << 10;
// A task's log line (TaskContext::Log) is cut to this.
inline constexpr size_t kMaxLogLineBytes = 4 << 10;

// What a Job or JobEvent message of a job that succeeded holds besides its
// spec and result (ids, times, owner, task name, its latest progress) stays
// under this: such a job fits one message when its result + spec + this <=
// the message limit (else it fails RESULT_TOO_LARGE; tasks that can tell
// in advance refuse the job).
inline constexpr size_t kMessageEnvelopeBytes = 8 << 10;

// How a started job ended.
struct JobOutcome {
  absl::Status status;  // OK: `output` holds the result.
  TaskOutput output;
  // For errors: why (TASK_ERROR, WORKER_CRASHED, ...).
  v1::ErrorReason reason = v1::ERROR_REASON_UNSPECIFIED;
  // CPU the task used (for AUTO routing); negative if not measured (the
  // reactor's jobs share their thread).
  absl::Duration cpu_time;
  absl::Duration wall_time;  // Wall time the task ran.
  // Of wall_time, how long the task's thread was ready to run but waited for
  // a CPU (busy machine), so that AUTO judges the task rather than the
  // load: measured if JobRun::measure_cpu_wait; -1ns for an AUTO job that
  // did not; zero for other jobs.
  absl::Duration cpu_wait_time;
  // False while other jobs of the same chunk still hold the slot.
  bool frees_slot = true;
};

// Sets `outcome`'s error: a task stopped by its cancel token failed for the
// token's reason (TIMEOUT, CANCELLED, SHUTDOWN); any other error is the
// task's own (TASK_ERROR, or OUT_OF_MEMORY when `out_of_memory`).
void SetOutcomeError(JobOutcome& outcome, absl::Status status,
                     const CancelToken& cancel, bool out_of_memory = false);

struct FinishedJob {
  uint64_t job_id = 0;
  JobOutcome outcome;
};

class ExecutorListener {
 public:
  virtual ~ExecutorListener() = default;
  virtual void OnJobProgress(uint64_t job_id, double fraction,
                             std::string_view message) = 0;
  // What a running job writes (its program's stdout/stderr, its task's
  // log lines): called as it comes, from any thread, never blocking for
  // long (the scheduler keeps it in a bounded buffer). Not counted as the
  // job's report.
  virtual void OnJobOutput(uint64_t job_id, v1::OutputStream stream,
                           std::string_view bytes) {}
  virtual void OnJobFinished(uint64_t job_id, JobOutcome outcome) = 0;
  // Several at once, in the order they ended (one lock round for the lot);
  // the outcomes may be moved from.
  virtual void OnJobsFinished(std::span<FinishedJob> jobs) {
    for (FinishedJob& j : jobs) OnJobFinished(j.job_id, std::move(j.outcome));
  }
};

class JobExecutor {
 public:
  virtual ~JobExecutor() = default;
  virtual v1::Executor kind() const = 0;
  // Slots: max jobs (or chunks) running at once.
  virtual int capacity() const = 0;
  // The threads or processes it runs jobs on (GetStats' workers); less
  // than capacity() where several jobs may be queued at one of them.
  virtual int workers() const { return capacity(); }
  // Largest chunk StartChunk() takes; 1: no chunks.
  virtual int max_chunk() const { return 1; }
  // Starts `run` in a free slot without blocking. Precondition: fewer than
  // capacity() slots busy.
  virtual void Start(JobRun run) = 0;
  // Starts `runs` (2..max_chunk() jobs) in one free slot; they run one after
  // another. Only called when max_chunk() > 1.
  virtual void StartChunk(std::vector<JobRun> runs) {}
  // Whether this lane's jobs of trivial tasks (TaskDef::trivial) may run
  // outside its slots, in the daemon: on the scheduler's thread that
  // starts them, or through StartTrivial. The thread pool's may.
  virtual bool runs_trivial() const { return false; }
  // Runs `runs` (jobs of trivial tasks) one after another on one of its
  // threads, in no slot, and reports them in one OnJobsFinished (each
  // JobOutcome::frees_slot false). Only called when runs_trivial().
  virtual void StartTrivial(std::vector<JobRun> runs) {}
  // Called after the job's cancel token was set, to stop it harder than
  // cooperatively where the executor can (the thread pool cannot).
  virtual void Cancel(uint64_t job_id) {}
  // Live reload: changes capacity() to `slots` (running jobs are not
  // interrupted; a shrink takes effect as they end). False if this executor
  // cannot change its size without a restart.
  virtual bool Resize(int slots) { return false; }
  // Stops taking jobs and returns once every started job has reported its
  // end, or `deadline` passed; returns false in the second case.
  virtual bool Shutdown(absl::Time deadline) = 0;

  // Adds what it knows to GetStats (called without scheduler locks).
  virtual void AddStats(v1::GetStatsResponse& stats) const {}
  // A task this executor refuses to run for now (see process_pool.h).
  virtual bool IsQuarantined(const TaskDef& task) const { return false; }
  // Lifts a quarantine; false if the task was not quarantined.
  virtual bool ClearQuarantine(std::string_view task) { return false; }
};

}  // namespace jobd

#endif  // JOBD_WORKERS_EXECUTOR_EXECUTOR_H_
