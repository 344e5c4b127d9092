// ThreadPool: a fixed set of threads running closures FIFO; and
// ThreadPoolExecutor: runs sync tasks on one (the THREAD executor).
//
// Thread-safety: all methods are thread-safe. The pool owns its threads;
// Shutdown() (or the destructor) joins them after the queue drains.
#ifndef JOBD_WORKERS_THREADS_THREAD_POOL_H_
#define JOBD_WORKERS_THREADS_THREAD_POOL_H_

#include <atomic>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "workers/executor/executor.h"

namespace jobd {

class ThreadPool {
 public:
  ThreadPool(int threads, std::string name);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`. Returns false (and drops it) after Shutdown() began.
  bool Schedule(std::function<void()> fn);
  // Grows or shrinks the pool: new threads start at once; surplus ones end
  // when they are next idle.
  void Resize(int threads);
  // Runs what is queued, then joins the threads. Idempotent.
  void Shutdown();

 private:
  void StartThread() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Joins the threads that ended after a shrink.
  void JoinEnded() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();

  const std::string name_;
  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> ended_ ABSL_GUARDED_BY(mu_);
  int surplus_ ABSL_GUARDED_BY(mu_) = 0;  // Threads to end when idle.
  int started_ ABSL_GUARDED_BY(mu_) = 0;  // For thread names.
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

class ThreadPoolExecutor : public JobExecutor {
 public:
  ThreadPoolExecutor(int threads, ExecutorListener& listener);
  ~ThreadPoolExecutor() override;

  v1::Executor kind() const override { return v1::EXECUTOR_THREAD; }
  int capacity() const override { return threads_.load(); }
  void Start(JobRun run) override;
  bool runs_trivial() const override { return true; }
  void StartTrivial(std::vector<JobRun> runs) override;
  bool Resize(int slots) override;
  bool Shutdown(absl::Time deadline) override;

 private:
  void Execute(const JobRun& run);
  void ExecuteTrivial(const std::vector<JobRun>& runs);
  // Queues `fn` as a run (Shutdown waits for it) or drops it (shut down).
  void Run(std::function<void()> fn);

  std::atomic<int> threads_;
  ExecutorListener& listener_;
  absl::Mutex mu_;
  // Runs (a job, or a batch of trivial ones) started, not yet reported.
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  ThreadPool pool_;  // Last: its threads stop before the members above die.
};

}  // namespace jobd

#endif  // JOBD_WORKERS_THREADS_THREAD_POOL_H_
