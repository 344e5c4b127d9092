#include "workers/worker_process.h"

#include <unistd.h>

#include <deque>
#include <memory>
#include <new>
#include <string>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "jobd/internal/worker.pb.h"
#include "workers/ipc.h"
#include "workers/thread_pool.h"

namespace jobd {
namespace {

constexpr absl::Duration kProgressInterval = absl::Milliseconds(100);

// The worker's two threads take turns (leader/follower): one reads the
// socket while the other runs jobs. The reader that finds a job while no job
// runs hands the socket to the other thread and runs the job itself, so a
// job never waits for a wake-up between threads; while a job runs, the other
// thread reads on and applies cancels at once.
class Worker {
 public:
  explicit Worker(const TaskRegistry& registry) : registry_(registry) {}

  [[noreturn]] void ThreadMain() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !reading_;
        };
        mu_.Await(absl::Condition(&free));
        reading_ = true;
      }
      ReadUntilThereIsWork();
      RunQueue();
    }
  }

 private:
  // As the reader: returns once this thread took the job of running the
  // queue (and gave up reading).
  void ReadUntilThereIsWork() {
    internal::ToWorker message;
    for (;;) {
      absl::StatusOr<bool> got = reader_.Next(message);
      if (!got.ok()) _exit(2);  // Only a broken daemon sends that.
      if (!*got) {
        // Daemon gone (or closed us to retire): nothing left to do.
        if (reader_.ReadFrom(kWorkerSocketFd) != ReadResult::kData) _exit(0);
        continue;
      }
      absl::MutexLock lock(&mu_);
      for (internal::CancelJob& c : *message.mutable_cancel()) {
        if (current_ != nullptr && current_id_ == c.job_id()) {
          current_->Cancel(static_cast<CancelReason>(c.reason()));
        } else {
          cancelled_.insert(c.job_id());
        }
      }
      for (internal::RunJob& run : *message.mutable_run()) {
        queue_.push_back(std::move(run));
      }
      if (!running_ && !queue_.empty()) {
        running_ = true;
        reading_ = false;  // The other thread reads from now on.
        return;
      }
    }
  }

  void RunQueue() {
    for (;;) {
      internal::RunJob job;
      auto token = std::make_shared<CancelToken>();
      bool cancelled;
      {
        absl::MutexLock lock(&mu_);
        if (queue_.empty()) {
          running_ = false;
          current_ = nullptr;
          cancelled_.clear();  // Nothing left they could name.
          return;
        }
        job = std::move(queue_.front());
        queue_.pop_front();
        cancelled = cancelled_.erase(job.job_id()) > 0;
        current_ = token;
        current_id_ = job.job_id();
      }
      out_.Clear();
      *out_.mutable_done() = Run(job, cancelled, token);
      Send(out_);
    }
  }

  internal::JobDone Run(internal::RunJob& job, bool cancelled,
                        const std::shared_ptr<CancelToken>& token) {
    const TaskDef* task = registry_.Find(job.spec().task());
    if (cancelled) {
      return Done(job.job_id(), absl::CancelledError("cancelled before start"),
                  v1::ERROR_REASON_CANCELLED);
    }
    if (task == nullptr) {
      return Done(job.job_id(),
                  absl::InternalError("task '" + job.spec().task() +
                                      "' is not registered in the worker"),
                  v1::ERROR_REASON_TASK_ERROR);
    }
    auto spec = std::make_shared<v1::JobSpec>(std::move(*job.mutable_spec()));
    absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(*task, spec);
    if (!args.ok()) {
      return Done(job.job_id(), args.status(), v1::ERROR_REASON_INVALID_INPUT);
    }
    JobRun run;
    run.job_id = job.job_id();
    run.task = task;
    run.args = std::make_shared<const TaskArgs>(*std::move(args));
    run.cancel = token;
    if (job.deadline_unix_ns() != 0) {
      run.deadline = absl::FromUnixNanos(job.deadline_unix_ns());
    }
    absl::Time last_progress = absl::InfinitePast();
    internal::FromWorker progress;
    JobOutcome outcome =
        RunSyncTask(run, [&](double fraction, std::string_view message) {
          const absl::Time now = absl::Now();
          if (now - last_progress < kProgressInterval) return;
          last_progress = now;
          internal::JobProgress& p = *progress.mutable_progress();
          p.set_job_id(run.job_id);
          p.set_fraction(fraction);
          p.set_message(std::string(message));
          Send(progress);
        });
    internal::JobDone done;
    if (outcome.status.ok()) {
      done.set_job_id(job.job_id());
      done.set_ok(true);
      *done.mutable_value() = std::move(outcome.output.value);
      *done.mutable_payload() = std::move(outcome.output.payload);
    } else {
      done = Done(job.job_id(), outcome.status, outcome.reason);
    }
    done.set_cpu_ns(absl::ToInt64Nanoseconds(outcome.cpu_time));
    done.set_wall_ns(absl::ToInt64Nanoseconds(outcome.wall_time));
    return done;
  }

  // Only the running thread sends.
  void Send(const internal::FromWorker& message) {
    scratch_.clear();
    AppendFrame(message, scratch_);
    if (!WriteAll(kWorkerSocketFd, scratch_).ok()) _exit(0);  // Daemon gone.
  }

  static internal::JobDone Done(uint64_t job_id, const absl::Status& status,
                                v1::ErrorReason reason) {
    internal::JobDone done;
    done.set_job_id(job_id);
    done.set_code(static_cast<int>(status.code()));
    done.set_message(std::string(status.message()));
    done.set_reason(reason);
    return done;
  }

  const TaskRegistry& registry_;
  FrameReader reader_{kMaxWorkerFrameBytes};  // The reading thread's.
  internal::FromWorker out_;                  // The running thread's.
  std::string scratch_;                       // The running thread's.

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // A thread owns the socket.
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // A thread runs the queue.
  std::deque<internal::RunJob> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<CancelToken> current_ ABSL_GUARDED_BY(mu_);
  uint64_t current_id_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

void RunWorkerProcess(const TaskRegistry& registry) {
  static Worker* worker = new Worker(registry);  // Lives until _exit.
  std::thread([] { worker->ThreadMain(); }).detach();
  worker->ThreadMain();
}

}  // namespace jobd
