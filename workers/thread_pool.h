// ThreadPool: a fixed set of threads running closures FIFO; and
// ThreadPoolExecutor: runs sync tasks on one (the THREAD executor).
//
// Thread-safety: all methods are thread-safe. The pool owns its threads;
// Shutdown() (or the destructor) joins them after the queue drains.
#ifndef JOBD_WORKERS_THREAD_POOL_H_
#define JOBD_WORKERS_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "workers/executor.h"

namespace jobd {

class ThreadPool {
 public:
  ThreadPool(int threads, std::string name);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`. Returns false (and drops it) after Shutdown() began.
  bool Schedule(std::function<void()> fn);
  // Runs what is queued, then joins the threads. Idempotent.
  void Shutdown();
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop();

  const std::string name_;
  std::vector<std::thread> threads_;  // Written only in ctor and Shutdown.
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

class ThreadPoolExecutor : public JobExecutor {
 public:
  ThreadPoolExecutor(int threads, ExecutorListener& listener);
  ~ThreadPoolExecutor() override;

  v1::Executor kind() const override { return v1::EXECUTOR_THREAD; }
  int capacity() const override { return threads_; }
  void Start(JobRun run) override;
  bool Shutdown(absl::Time deadline) override;

 private:
  void Execute(const JobRun& run);

  const int threads_;
  ExecutorListener& listener_;
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // Started, not yet reported.
  ThreadPool pool_;  // Last: its threads stop before the members above die.
};

// The running thread's CPU clock and the wall clock as last read at a job
// boundary. Reading a thread's CPU clock is a system call (~1 µs, several on
// some VMs): a thread that runs jobs back to back passes one JobClock to
// each RunSyncTask, and the reading that ends one job starts the next.
struct JobClock {
  bool fresh = false;  // The readings below are the end of the last job.
  absl::Duration cpu;
  absl::Time wall;
};

// Runs `run` on the calling thread: measures CPU and wall time, catches
// exceptions, maps errors to reasons. Shared by every executor that runs
// sync tasks. `clock`, if given, is read from when fresh and left fresh.
JobOutcome RunSyncTask(const JobRun& run, const ProgressFn& progress,
                       JobClock* clock = nullptr);

}  // namespace jobd

#endif  // JOBD_WORKERS_THREAD_POOL_H_
