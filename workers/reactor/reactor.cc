#include "workers/reactor/reactor.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "spdlog/spdlog.h"
#include "workers/reactor/http_client.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/compact_time.h"

namespace jobd {

class ReactorExecutor::Blocking {
 public:
  explicit Blocking(int threads) : pool_(std::max(1, threads)) {}
  ~Blocking() { pool_.join(); }
  asio::thread_pool& pool() { return pool_; }

 private:
  asio::thread_pool pool_;
};

// One event loop: an io_context run by one thread, the jobs started on it
// and the ends not yet reported. Everything but the constructor, Post() and
// Stop() runs on the loop's thread.
class ReactorExecutor::Loop : public LoopServices {
 public:
  Loop(ReactorExecutor& reactor, int index)
      : reactor_(reactor), work_(asio::make_work_guard(io_)) {
    thread_ = std::thread([this, index] {
      const std::string name = absl::StrCat("jobd-reactor", index);
      pthread_setname_np(pthread_self(), name.c_str());
      Run();
    });
  }
  ~Loop() override { Stop(); }

  template <typename Fn>
  void Post(Fn&& fn) {
    asio::post(io_, std::forward<Fn>(fn));
  }

  // Ends the loop (once no job runs, or abandoning the ones that do).
  void Stop() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // ---- on the loop thread ----

  void StartJob(JobRun run) {
    const uint64_t id = run.job_id;
    auto [slot, inserted] = jobs_.try_emplace(id);
    if (!inserted) {  // Never: the scheduler runs a job once at a time.
      spdlog::error("reactor: job {} started while it runs; ignored", id);
      reactor_.Ended(1);
      return;
    }
    slot->second = std::make_unique<LiveJob>(std::move(run));
    LiveJob& job = *slot->second;
    if (!job.task->async->run) {
      StartTimerJob(id, job);
      return;
    }
    asio::awaitable<absl::StatusOr<TaskOutput>> coroutine;
    try {
      job.context = std::make_unique<AsyncTaskContext>(ContextOf(id, job));
      coroutine = job.task->async->run(*job.context);
    } catch (...) {
      Finish(id, std::current_exception(),
             absl::UnknownError("the task threw before it started"));
      return;
    }
    asio::co_spawn(
        io_, std::move(coroutine),
        asio::bind_cancellation_slot(
            job.cancel.slot(), [this, id](std::exception_ptr error,
                                          absl::StatusOr<TaskOutput> result) {
              Finish(id, error, std::move(result));
            }));
  }

  void CancelJob(uint64_t id) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second->cancel_emitted) return;
    it->second->cancel_emitted = true;
    if (it->second->wake != 0) {
      // A timer task ends now; its heap entry goes stale.
      ++stale_wakes_;
      Finish(id, nullptr, absl::CancelledError("stopped while waiting"));
      CompactWakes();
      return;
    }
    it->second->cancel.emit(asio::cancellation_type::terminal);
  }

  asio::io_context& io() override { return io_; }
  asio::thread_pool& blocking() override { return reactor_.blocking_->pool(); }
  HttpClient& http() override {
    if (http_ == nullptr) http_ = std::make_unique<HttpClient>(io_);
    return *http_;
  }

 private:
  // What a waiting job costs here (besides its coroutine): kept small.
  struct LiveJob {
    LiveJob(JobRun run)
        : args(std::move(run.args)),
          cancel_token(std::move(run.cancel)),
          task(run.task),
          deadline(run.deadline) {}
    std::shared_ptr<const TaskArgs> args;  // Holds the spec too.
    std::shared_ptr<CancelToken> cancel_token;
    const TaskDef* task;
    int64_t wake = 0;  // A timer task: when it wakes (Wake::at_ns); 0: no.
    CompactTime deadline;
    // A coroutine's context, which must outlive it (a timer task's is made
    // when its `then` runs).
    std::unique_ptr<AsyncTaskContext> context;
    asio::cancellation_signal cancel;
    bool cancel_emitted = false;
  };
  static_assert(sizeof(LiveJob) <= 80);

  AsyncTaskContext ContextOf(uint64_t id, const LiveJob& job) {
    return AsyncTaskContext(id, *job.args, *job.cancel_token, job.deadline,
                            *this);
  }

  static constexpr int kMaxWakesPerTurn = 1024;

  // A timer task's place in the deadline heap. A stale one (its job ended
  // early) has no job of that id waiting until at_ns (LiveJob::wake).
  struct Wake {
    int64_t at_ns;  // steady_clock.
    uint64_t job_id;
    bool operator>(const Wake& other) const { return at_ns > other.at_ns; }
  };
  bool IsStale(const Wake& w) const {
    auto it = jobs_.find(w.job_id);
    return it == jobs_.end() || it->second->wake != w.at_ns;
  }

  static int64_t SteadyNowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void StartTimerJob(uint64_t id, LiveJob& job) {
    absl::StatusOr<absl::Duration> delay;
    try {
      delay = job.task->async->timer.delay(*job.args);
    } catch (...) {
      Finish(id, std::current_exception(),
             absl::UnknownError("the task threw before it started"));
      return;
    }
    if (!delay.ok()) {
      Finish(id, nullptr, delay.status());
      return;
    }
    const int64_t wait_ns = absl::ToInt64Nanoseconds(
        std::clamp(*delay, absl::ZeroDuration(), absl::Hours(24 * 365 * 100)));
    job.wake = std::max<int64_t>(1, SteadyNowNs() + wait_ns);
    wakes_.push_back({.at_ns = job.wake, .job_id = id});
    std::push_heap(wakes_.begin(), wakes_.end(), std::greater<Wake>());
    if (wakes_.front().at_ns < armed_ns_) Arm(wakes_.front().at_ns);
  }

  // One timer for the whole heap, set to its earliest entry.
  void Arm(int64_t at_ns) {
    armed_ns_ = at_ns;
    wake_timer_.expires_at(
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(at_ns)));
    wake_timer_.async_wait([this](const asio::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;  // Re-armed.
      armed_ns_ = std::numeric_limits<int64_t>::max();
      WakeDue();
    });
  }

  // Ends the timer tasks whose wait is over, kMaxWakesPerTurn at a time
  // (then the loop turns: other jobs' handlers run, the ends are reported).
  void WakeDue() {
    const int64_t now = SteadyNowNs();
    for (int n = 0; !wakes_.empty() && wakes_.front().at_ns <= now; ++n) {
      if (n == kMaxWakesPerTurn) {
        Post([this] { WakeDue(); });
        return;
      }
      std::pop_heap(wakes_.begin(), wakes_.end(), std::greater<Wake>());
      const Wake w = wakes_.back();
      wakes_.pop_back();
      if (IsStale(w)) {
        if (stale_wakes_ > 0) --stale_wakes_;
        continue;
      }
      LiveJob& job = *jobs_.at(w.job_id);
      job.wake = 0;
      absl::StatusOr<TaskOutput> result;
      std::exception_ptr error;
      try {
        AsyncTaskContext context = ContextOf(w.job_id, job);
        result = job.task->async->timer.then(context);
      } catch (...) {
        error = std::current_exception();
      }
      Finish(w.job_id, error, std::move(result));
    }
    if (!wakes_.empty()) Arm(wakes_.front().at_ns);
  }

  // Drops stale entries once they are most of the heap (many long waits
  // cancelled), so that they do not hold memory until their time.
  void CompactWakes() {
    if (stale_wakes_ < 1024 || stale_wakes_ * 2 < wakes_.size()) return;
    std::erase_if(wakes_, [this](const Wake& w) { return IsStale(w); });
    std::make_heap(wakes_.begin(), wakes_.end(), std::greater<Wake>());
    stale_wakes_ = 0;
  }

  void ReportProgress(uint64_t job_id, double fraction,
                      std::string_view message) override {
    reactor_.listener_.OnJobProgress(job_id, fraction, message);
  }
  void WriteOutput(uint64_t job_id, v1::OutputStream stream,
                   std::string_view bytes) override {
    reactor_.listener_.OnJobOutput(job_id, stream, bytes);
  }

  void Run() {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        // A handler outside any job threw (jobs' exceptions are caught by
        // co_spawn): log and keep the loop alive for the others.
        spdlog::error("reactor: uncaught exception in the event loop: {}",
                      e.what());
      }
    }
  }

  void Finish(uint64_t id, std::exception_ptr error,
              absl::StatusOr<TaskOutput> result) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    std::unique_ptr<LiveJob> job = std::move(it->second);
    jobs_.erase(it);
    JobOutcome outcome;
    // CPU and wall time are not measured: the reactor's jobs share their
    // thread, and AUTO routing learns nothing from them.
    outcome.cpu_time = absl::Nanoseconds(-1);
    if (error != nullptr) {
      std::string what = "unknown exception";
      bool aborted = false;
      try {
        std::rethrow_exception(error);
      } catch (const asio::system_error& e) {
        aborted = e.code() == asio::error::operation_aborted;
        what = e.what();
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      SetOutcomeError(outcome,
                      aborted && job->cancel_token->cancelled()
                          ? absl::CancelledError("stopped at an await")
                          : absl::InternalError(absl::StrCat(
                                "task threw an exception: ", what)),
                      *job->cancel_token);
    } else if (result.ok()) {
      outcome.output = *std::move(result);
    } else {
      SetOutcomeError(outcome, result.status(), *job->cancel_token);
    }
    finished_.push_back({.job_id = id, .outcome = std::move(outcome)});
    // Every end of this turn of the loop goes to the scheduler in one call.
    if (finished_.size() == 1) Post([this] { ReportFinished(); });
  }

  void ReportFinished() {
    std::vector<FinishedJob> batch;
    batch.swap(finished_);
    reactor_.listener_.OnJobsFinished(batch);
    reactor_.Ended(static_cast<int64_t>(batch.size()));
  }

  ReactorExecutor& reactor_;
  // Destroyed after io_ (members go in reverse order): coroutine frames
  // that io_ destroys at shutdown refer to their LiveJob.
  // By job id; ids only grow, so a btree packs them densely and never
  // doubles (hundreds of thousands may wait).
  absl::btree_map<uint64_t, std::unique_ptr<LiveJob>> jobs_;
  std::vector<FinishedJob> finished_;
  asio::io_context io_;
  std::unique_ptr<HttpClient> http_;  // Made on first use; before io_ dies.
  // Timer tasks: a min-heap of their wakes (in a deque: it grows in small
  // blocks, never by doubling), and the one timer it arms.
  std::deque<Wake> wakes_;
  size_t stale_wakes_ = 0;  // Entries of timer tasks that ended early.
  int64_t armed_ns_ = std::numeric_limits<int64_t>::max();
  asio::steady_timer wake_timer_{io_};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

ReactorExecutor::ReactorExecutor(ReactorOptions options,
                                 ExecutorListener& listener)
    : options_(std::move(options)),
      max_jobs_(options_.max_jobs),
      listener_(listener),
      blocking_(std::make_unique<Blocking>(options_.blocking_threads)) {
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    loops_.push_back(std::make_unique<Loop>(*this, i));
  }
}

ReactorExecutor::~ReactorExecutor() {
  Shutdown(absl::Now());  // The loops' threads are joined.
  // Blocking work that has reported its job may still be posting back to
  // its loop: the pool's threads end before the loops (members destroyed
  // after this) do.
  blocking_.reset();
}

void ReactorExecutor::Start(JobRun run) {
  live_.fetch_add(1, std::memory_order_relaxed);
  Loop& loop = LoopOf(run.job_id);
  loop.Post([&loop, run = std::move(run)]() mutable {
    loop.StartJob(std::move(run));
  });
}

void ReactorExecutor::Cancel(uint64_t job_id) {
  Loop& loop = LoopOf(job_id);
  loop.Post([&loop, job_id] { loop.CancelJob(job_id); });
}

void ReactorExecutor::Ended(int64_t n) {
  if (live_.fetch_sub(n, std::memory_order_acq_rel) == n) {
    absl::MutexLock lock(&mu_);  // Wakes Shutdown's Await.
  }
}

bool ReactorExecutor::Shutdown(absl::Time deadline) {
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return true;
    auto none_live = [this] {
      return live_.load(std::memory_order_acquire) == 0;
    };
    idle = mu_.AwaitWithDeadline(absl::Condition(&none_live), deadline);
    stopped_ = true;
  }
  for (auto& loop : loops_) loop->Stop();
  return idle;
}

}  // namespace jobd
