#include "workers/threads/thread_pool.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

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

namespace {

absl::Duration ThreadCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

// How long the calling thread has waited, runnable, for a CPU (the second
// field of /proc/thread-self/schedstat); zero if the kernel does not say.
// One pread of a file each thread keeps open.
absl::Duration ThreadCpuWaitTime() {
  struct Schedstat {
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    ~Schedstat() {
      if (fd >= 0) close(fd);
    }
  };
  thread_local Schedstat stat;
  char buf[96];
  const ssize_t n = stat.fd < 0 ? -1 : pread(stat.fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return absl::ZeroDuration();
  buf[n] = '\0';
  unsigned long long run_ns = 0, wait_ns = 0;
  if (std::sscanf(buf, "%llu %llu", &run_ns, &wait_ns) != 2) {
    return absl::ZeroDuration();
  }
  return absl::Nanoseconds(static_cast<int64_t>(wait_ns));
}

}  // namespace

JobOutcome RunSyncTask(const JobRun& run, const ProgressFn& progress,
                       JobClock* clock, OutputFn output) {
  JobOutcome outcome;
  const bool chained = clock != nullptr && clock->fresh;
  const absl::Duration cpu0 = chained ? clock->cpu : ThreadCpuTime();
  const absl::Time wall0 = chained ? clock->wall : absl::Now();
  const bool auto_kind =
      run.spec != nullptr && run.spec->kind() == v1::JOB_KIND_AUTO;
  const bool measure_wait = auto_kind && run.measure_cpu_wait;
  const absl::Duration wait0 =
      measure_wait ? ThreadCpuWaitTime() : absl::ZeroDuration();
  TaskContext ctx(*run.args, *run.cancel, run.deadline, progress,
                  std::move(output));
  absl::StatusOr<TaskOutput> result;
  bool out_of_memory = false;
  try {
    result = run.task->run(ctx);
  } catch (const std::bad_alloc& e) {
    out_of_memory = true;
    result = absl::ResourceExhaustedError(absl::StrCat(
        "out of memory: the task's allocation failed (", e.what(), ")"));
  } catch (const std::exception& e) {
    result = absl::InternalError(
        absl::StrCat("task threw an exception: ", e.what()));
  } catch (...) {
    result = absl::InternalError("task threw a non-standard exception");
  }
  const absl::Duration cpu1 = ThreadCpuTime();
  const absl::Time wall1 = absl::Now();
  outcome.cpu_time = cpu1 - cpu0;
  outcome.wall_time = wall1 - wall0;
  if (measure_wait) {
    outcome.cpu_wait_time = ThreadCpuWaitTime() - wait0;
  } else if (auto_kind) {
    outcome.cpu_wait_time = -absl::Nanoseconds(1);  // Not measured.
  }
  if (clock != nullptr) *clock = {.fresh = true, .cpu = cpu1, .wall = wall1};
  if (result.ok()) {
    outcome.output = *std::move(result);
    return outcome;
  }
  SetOutcomeError(outcome, result.status(), *run.cancel, out_of_memory);
  return outcome;
}

ThreadPoolExecutor::ThreadPoolExecutor(int threads, ExecutorListener& listener)
    : threads_(threads), listener_(listener), pool_(threads, "jobd-thread") {}

ThreadPoolExecutor::~ThreadPoolExecutor() { Shutdown(absl::InfiniteFuture()); }

void ThreadPoolExecutor::Start(JobRun run) {
  {
    absl::MutexLock lock(&mu_);
    ++running_;
  }
  if (!pool_.Schedule([this, run = std::move(run)] { Execute(run); })) {
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
  const uint64_t id = run.job_id;
  JobOutcome outcome = RunSyncTask(
      run,
      [this, id](double fraction, std::string_view message) {
        listener_.OnJobProgress(id, fraction, message);
      },
      nullptr,
      [this, id](v1::OutputStream stream, std::string_view bytes) {
        listener_.OnJobOutput(id, stream, bytes);
      });
  listener_.OnJobFinished(id, std::move(outcome));
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
