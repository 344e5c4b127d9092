#include "workers/threads/thread_pool.h"

#include <pthread.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "workers/executor/run_sync_task.h"

namespace jobd {

ThreadPool::ThreadPool(int threads, std::string name) : name_(std::move(name)) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < threads; ++i) StartThread();
}

ThreadPool::~ThreadPool() { Shutdown(); }

void ThreadPool::StartThread() {
  threads_.emplace_back([this] { WorkerLoop(); });
  std::string thread_name = absl::StrCat(name_, "-", started_++).substr(0, 15);
  pthread_setname_np(threads_.back().native_handle(), thread_name.c_str());
}

bool ThreadPool::Schedule(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  queue_.push_back(std::move(fn));
  return true;
}

void ThreadPool::Resize(int threads) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  JoinEnded();
  const int now = static_cast<int>(threads_.size()) - surplus_;
  if (threads > now) {
    const int cancel = std::min(surplus_, threads - now);  // Not ended yet.
    surplus_ -= cancel;
    for (int i = now + cancel; i < threads; ++i) StartThread();
  } else {
    surplus_ += now - threads;
  }
}

void ThreadPool::JoinEnded() {
  for (std::thread::id id : ended_) {
    auto it =
        std::find_if(threads_.begin(), threads_.end(),
                     [id](const std::thread& t) { return t.get_id() == id; });
    if (it == threads_.end()) continue;
    it->join();  // It has returned from WorkerLoop: at most a moment.
    threads_.erase(it);
  }
  ended_.clear();
}

void ThreadPool::Shutdown() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_ || surplus_ > 0;
      };
      mu_.Await(absl::Condition(&ready));
      if (surplus_ > 0 && !stopping_) {  // The pool shrank: this one ends.
        --surplus_;
        ended_.push_back(std::this_thread::get_id());
        return;
      }
      if (queue_.empty()) return;  // Stopping and drained.
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

ThreadPoolExecutor::ThreadPoolExecutor(int threads, ExecutorListener& listener)
    : threads_(threads), listener_(listener), pool_(threads, "jobd-thread") {}

ThreadPoolExecutor::~ThreadPoolExecutor() { Shutdown(absl::InfiniteFuture()); }

void ThreadPoolExecutor::Start(JobRun run) {
  Run([this, run = std::move(run)] { Execute(run); });
}

void ThreadPoolExecutor::StartTrivial(std::vector<JobRun> runs) {
  Run([this, runs = std::move(runs)] { ExecuteTrivial(runs); });
}

void ThreadPoolExecutor::Run(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    ++running_;
  }
  if (!pool_.Schedule(std::move(fn))) {
    absl::MutexLock lock(&mu_);
    --running_;
    spdlog::error("thread pool is shut down; job dropped");
  }
}

bool ThreadPoolExecutor::Resize(int slots) {
  threads_ = slots;
  pool_.Resize(slots);
  return true;
}

void ThreadPoolExecutor::Execute(const JobRun& run) {
  listener_.OnJobFinished(run.job_id, RunSyncTask(run, listener_));
  absl::MutexLock lock(&mu_);
  --running_;
}

void ThreadPoolExecutor::ExecuteTrivial(const std::vector<JobRun>& runs) {
  std::vector<FinishedJob> finished = RunTrivialTasks(runs, listener_);
  listener_.OnJobsFinished(std::span<FinishedJob>(finished));
  absl::MutexLock lock(&mu_);
  --running_;
}

bool ThreadPoolExecutor::Shutdown(absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return running_ == 0;
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&idle), deadline)) {
      return false;
    }
  }
  pool_.Shutdown();
  return true;
}

}  // namespace jobd
