// ReactorExecutor: the REACTOR executor. Runs async tasks
// (workers/async_task.h) as C++20 coroutines on `threads` event loops (Asio
// io_contexts, one thread each), so that hundreds of thousands of jobs that
// mostly wait (timers, sockets, child processes) cost no thread each: a
// waiting job is its coroutine frames, a timer or socket wait, and its
// record here. A timer task (TimerTask: a wait, then a result) has no
// coroutine: it is its record and an entry in its loop's deadline heap,
// which one Asio timer serves.
//
// A job goes to loop (id % threads) and stays there. Start() and Cancel()
// post to that loop; a cancel emits the job's Asio cancellation signal,
// which aborts the operation its coroutine awaits. Ends are reported to the
// listener from the loop thread, in batches (one per turn of the loop).
// Blocking work of tasks runs on `blocking_threads` separate threads.
//
// Thread-safety: the JobExecutor methods are thread-safe and never block
// (they only post). Everything about a job lives on its loop's thread. The
// executor owns its loops and threads; Shutdown() joins them.
#ifndef JOBD_WORKERS_REACTOR_REACTOR_H_
#define JOBD_WORKERS_REACTOR_REACTOR_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "workers/executor/executor.h"

namespace jobd {

struct ReactorOptions {
  int threads = 1;           // Event loops.
  int max_jobs = 1 << 20;    // Jobs running at once (slots).
  int blocking_threads = 2;  // For AsyncTaskContext::RunBlocking.
};

class ReactorExecutor : public JobExecutor {
 public:
  ReactorExecutor(ReactorOptions options, ExecutorListener& listener);
  ~ReactorExecutor() override;

  v1::Executor kind() const override { return v1::EXECUTOR_REACTOR; }
  int capacity() const override { return max_jobs_.load(); }
  void Start(JobRun run) override;
  bool Resize(int slots) override {
    max_jobs_ = slots;
    return true;
  }
  void Cancel(uint64_t job_id) override;
  bool Shutdown(absl::Time deadline) override;

  // Jobs started and not yet reported (for tests and benchmarks).
  int64_t live() const { return live_.load(std::memory_order_relaxed); }

 private:
  class Loop;  // reactor.cc: keeps Asio out of this header.
  class Blocking;

  Loop& LoopOf(uint64_t job_id) const {
    return *loops_[job_id % loops_.size()];
  }
  // A loop reported `n` ends.
  void Ended(int64_t n);

  const ReactorOptions options_;
  std::atomic<int> max_jobs_;  // options_.max_jobs, or a reloaded value.
  ExecutorListener& listener_;
  std::atomic<int64_t> live_{0};
  absl::Mutex mu_;  // Signals Shutdown when live_ reaches 0.
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<Blocking> blocking_;
  std::vector<std::unique_ptr<Loop>>
      loops_;  // Last: their threads use the rest.
};

}  // namespace jobd

#endif  // JOBD_WORKERS_REACTOR_REACTOR_H_
