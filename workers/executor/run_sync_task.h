// RunSyncTask: runs one job of a sync task on the calling thread, timed,
// its exceptions caught, its error mapped to a reason. Shared by every
// place that runs sync tasks: the thread pool, the process pool's workers,
// and the scheduler, which runs trivial tasks (TaskDef::trivial) on the
// thread that starts them.
//
// Thread-safety: RunSyncTask may run on any number of threads at once; a
// JobClock belongs to one thread.
#ifndef JOBD_WORKERS_EXECUTOR_RUN_SYNC_TASK_H_
#define JOBD_WORKERS_EXECUTOR_RUN_SYNC_TASK_H_

#include <span>
#include <vector>

#include "absl/time/time.h"
#include "workers/executor/executor.h"

namespace jobd {

// The running thread's CPU clock and the wall clock as last read at a job
// boundary. Reading a thread's CPU clock is a system call (~1 µs, several on
// some VMs): a thread that runs jobs back to back passes one JobClock to
// each RunSyncTask, and the reading that ends one job starts the next.
struct JobClock {
  bool fresh = false;  // The readings below are the end of the last job.
  absl::Duration cpu;  // Negative: not read at that job's end.
  absl::Time wall;
};

// Runs `run` on the calling thread: measures its wall time (and, for an
// AUTO job, the CPU it used: JobOutcome::cpu_time is negative for the
// others), catches exceptions, maps errors to reasons. `clock`, if given,
// is read from when fresh and left fresh. `output` gets the task's log
// lines (TaskContext::Log).
JobOutcome RunSyncTask(const JobRun& run, const ProgressFn& progress,
                       JobClock* clock = nullptr, OutputFn output = {});

// The same, the run's progress and output reported to `listener` (the
// executors' way; a worker process frames them instead).
JobOutcome RunSyncTask(const JobRun& run, ExecutorListener& listener,
                       JobClock* clock = nullptr);

// Runs `runs` (jobs of trivial tasks, TaskDef::trivial) one after another
// on the calling thread, one clock reading between two, their progress
// and output to `listener`: their outcomes in order, none freeing a slot
// (they took none), for one ExecutorListener::OnJobsFinished.
std::vector<FinishedJob> RunTrivialTasks(std::span<const JobRun> runs,
                                         ExecutorListener& listener);

}  // namespace jobd

#endif  // JOBD_WORKERS_EXECUTOR_RUN_SYNC_TASK_H_
