// Unit tests of the async task SDK (workers/async_task.h) on a real
// ReactorExecutor: results, errors and exceptions, cancellation before the
// start and at an await, cleanup after a cancel, RunBlocking, progress,
// many jobs over several loops, and timer tasks (no coroutine).
#include "workers/sdk/async_task.h"

#include <atomic>
#include <optional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/reactor/reactor.h"
#include "workers/sdk/task_registry.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;
using Result = absl::StatusOr<TaskOutput>;

// Collects what the reactor reports.
class Listener : public ExecutorListener {
 public:
  void OnJobProgress(uint64_t id, double fraction,
                     std::string_view message) override {
    absl::MutexLock lock(&mu_);
    progress_.emplace_back(id, std::string(message));
  }
  void OnJobFinished(uint64_t id, JobOutcome outcome) override {
    absl::MutexLock lock(&mu_);
    ends_.emplace(id, std::move(outcome));
    order_.push_back(id);
  }
  // Ids in the order their jobs ended.
  std::vector<uint64_t> order() {
    absl::MutexLock lock(&mu_);
    return order_;
  }
  // Waits up to 10 s for job `id` to end.
  JobOutcome Await(uint64_t id) {
    absl::MutexLock lock(&mu_);
    auto ended = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ends_.contains(id);
    };
    EXPECT_TRUE(
        mu_.AwaitWithTimeout(absl::Condition(&ended), absl::Seconds(10)))
        << "job " << id;
    auto it = ends_.find(id);
    return it == ends_.end() ? JobOutcome{} : it->second;
  }
  std::vector<std::pair<uint64_t, std::string>> progress() {
    absl::MutexLock lock(&mu_);
    return progress_;
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, JobOutcome> ends_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, std::string>> progress_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> order_ ABSL_GUARDED_BY(mu_);
};

TaskOutput Number(double n) {
  TaskOutput out;
  out.value.set_number_value(n);
  return out;
}

class AsyncTaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Add("answer", [](AsyncTaskContext&) -> asio::awaitable<Result> {
      co_return Number(42);
    });
    Add("fails", [](AsyncTaskContext&) -> asio::awaitable<Result> {
      co_return absl::NotFoundError("no such thing");
    });
    Add("throws", [](AsyncTaskContext&) -> asio::awaitable<Result> {
      throw std::runtime_error("boom");
      co_return Number(0);
    });
    // Waits an hour on a timer, ignoring nothing: ends at its await.
    Add("waits", [this](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      asio::steady_timer timer(ctx.io(), std::chrono::hours(1));
      ReachedWait();
      co_await timer.async_wait(asio::use_awaitable);
      co_return Number(1);
    });
    // Cleans up after a cancel with an await of its own, then reports it.
    Add("cleans_up", [this](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      co_await asio::this_coro::throw_if_cancelled(false);
      ReachedWait();
      const bool slept = co_await ctx.SleepFor(absl::Hours(1));
      co_await asio::this_coro::reset_cancellation_state();
      co_await ctx.SleepFor(absl::Milliseconds(5));  // Cleanup wait.
      cleaned_up_ = !slept;
      co_return absl::CancelledError("cleaned up");
    });
    Add("blocking", [](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      const std::thread::id loop = std::this_thread::get_id();
      const bool elsewhere = co_await ctx.RunBlocking([loop] {
        absl::SleepFor(absl::Milliseconds(20));  // Blocks: not on the loop.
        return std::this_thread::get_id() != loop;
      });
      co_return Number(elsewhere && std::this_thread::get_id() == loop);
    });
    Add("progress", [](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      ctx.ReportProgress(0.5, "half");
      co_return Number(1);
    });
    // Timer tasks: wait `x` ms (or fail or throw when x says so), then
    // answer x; `then` counts its runs.
    AddTimer("timer",
             {.delay = [](const TaskArgs& a) -> absl::StatusOr<absl::Duration> {
                const double x = a.Number("x");
                if (x == -1) return absl::InvalidArgumentError("bad delay");
                return absl::Milliseconds(x);
              },
              .then = [this](AsyncTaskContext& ctx) -> Result {
                ++timer_thens_;
                if (ctx.args().Number("x") == 7) {
                  throw std::runtime_error("then threw");
                }
                return Number(ctx.args().Number("x"));
              }});
    reactor_ = std::make_unique<ReactorExecutor>(
        ReactorOptions{.threads = 2, .max_jobs = 100000}, listener_);
  }

  void Add(const std::string& name, AsyncTaskFn fn) {
    ASSERT_TRUE(registry_
                    .Add({.name = name,
                          .params = {OptionalParam("x", ParamType::kAny,
                                                   NumberValue(0), "")},
                          .async = MakeAsyncTask(std::move(fn))})
                    .ok());
  }

  void AddTimer(const std::string& name, TimerTask timer) {
    ASSERT_TRUE(registry_
                    .Add({.name = name,
                          .params = {OptionalParam("x", ParamType::kNumber,
                                                   NumberValue(0), "")},
                          .async = MakeTimerTask(std::move(timer))})
                    .ok());
  }

  JobRun Run(const std::string& task,
             absl::Time deadline = absl::InfiniteFuture(),
             std::optional<double> x = std::nullopt) {
    const TaskDef* def = registry_.Find(task);
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task);
    if (x.has_value()) spec->add_args()->set_number_value(*x);
    JobRun run;
    run.job_id = ++next_id_;
    run.task = def;
    run.spec = spec;
    run.args =
        std::make_shared<const TaskArgs>(*TaskRegistry::Bind(*def, spec));
    run.cancel = std::make_shared<CancelToken>();
    run.deadline = deadline;
    return run;
  }

  // Starts `task`; returns its id and cancel token.
  std::pair<uint64_t, std::shared_ptr<CancelToken>> Start(
      const std::string& task, std::optional<double> x = std::nullopt) {
    JobRun run = Run(task, absl::InfiniteFuture(), x);
    auto token = run.cancel;
    const uint64_t id = run.job_id;
    reactor_->Start(std::move(run));
    return {id, token};
  }

  void Cancel(uint64_t id, CancelToken& token, CancelReason reason) {
    token.Cancel(reason);
    reactor_->Cancel(id);
  }

  // Called by a task on its loop right before its long wait: a cancel
  // posted to that loop after this finds the task suspended in the wait.
  void ReachedWait() {
    absl::MutexLock lock(&waiting_mu_);
    ++waiting_;
  }
  // Waits up to 10 s until `n` tasks reached their long wait.
  bool AwaitWaiting(int n) {
    absl::MutexLock lock(&waiting_mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(waiting_mu_) {
      return waiting_ >= n;
    };
    return waiting_mu_.AwaitWithTimeout(absl::Condition(&reached),
                                        absl::Seconds(10));
  }

  TaskRegistry registry_;
  Listener listener_;
  std::unique_ptr<ReactorExecutor> reactor_;
  uint64_t next_id_ = 0;
  std::atomic<bool> cleaned_up_{false};
  std::atomic<int> timer_thens_{0};
  absl::Mutex waiting_mu_;
  int waiting_ ABSL_GUARDED_BY(waiting_mu_) = 0;
};

TEST_F(AsyncTaskTest, ResultsAndErrors) {
  const auto [ok, t1] = Start("answer");
  const auto [fails, t2] = Start("fails");
  const auto [throws, t3] = Start("throws");
  const JobOutcome a = listener_.Await(ok);
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(a.output.value.number_value(), 42);
  EXPECT_LT(a.cpu_time, absl::ZeroDuration());  // Not measured here.
  const JobOutcome f = listener_.Await(fails);
  EXPECT_EQ(f.status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(f.reason, v1::ERROR_REASON_TASK_ERROR);
  const JobOutcome t = listener_.Await(throws);
  EXPECT_EQ(t.status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(t.status.message(), HasSubstr("boom"));
  EXPECT_EQ(t.reason, v1::ERROR_REASON_TASK_ERROR);
}

TEST_F(AsyncTaskTest, CancelEndsAnAwaitWithTheTokensReason) {
  auto [id, token] = Start("waits");
  ASSERT_TRUE(AwaitWaiting(1));  // It reached its await.
  Cancel(id, *token, CancelReason::kTimeout);
  const JobOutcome o = listener_.Await(id);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(o.reason, v1::ERROR_REASON_TIMEOUT);
  EXPECT_TRUE(o.frees_slot);
}

TEST_F(AsyncTaskTest, CancelBeforeTheFirstAwaitStillStopsIt) {
  // Cancel right after Start: the post that starts it and the one that
  // cancels it are both queued; the first await must see the cancel.
  for (int i = 0; i < 50; ++i) {
    auto [id, token] = Start("waits");
    Cancel(id, *token, CancelReason::kCancelled);
    const JobOutcome o = listener_.Await(id);
    ASSERT_EQ(o.reason, v1::ERROR_REASON_CANCELLED) << i;
  }
}

TEST_F(AsyncTaskTest, ATaskCanCleanUpAfterACancel) {
  auto [id, token] = Start("cleans_up");
  ASSERT_TRUE(AwaitWaiting(1));
  Cancel(id, *token, CancelReason::kShutdown);
  const JobOutcome o = listener_.Await(id);
  EXPECT_EQ(o.reason, v1::ERROR_REASON_SHUTDOWN);
  EXPECT_TRUE(cleaned_up_);
}

TEST_F(AsyncTaskTest, RunBlockingRunsOffTheLoopAndResumesOnIt) {
  auto [id, token] = Start("blocking");
  const JobOutcome o = listener_.Await(id);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.output.value.number_value(), 1);
}

TEST_F(AsyncTaskTest, ProgressReachesTheListener) {
  auto [id, token] = Start("progress");
  listener_.Await(id);
  EXPECT_THAT(listener_.progress(),
              ::testing::ElementsAre(std::make_pair(id, std::string("half"))));
}

TEST_F(AsyncTaskTest, ManyWaitingJobsOnTwoLoopsAllCancel) {
  std::vector<std::pair<uint64_t, std::shared_ptr<CancelToken>>> jobs;
  for (int i = 0; i < 5000; ++i) jobs.push_back(Start("waits"));
  ASSERT_TRUE(AwaitWaiting(5000));  // All waiting at once, none ended.
  EXPECT_EQ(reactor_->live(), 5000);
  for (auto& [id, token] : jobs) Cancel(id, *token, CancelReason::kCancelled);
  for (auto& [id, token] : jobs) {
    ASSERT_EQ(listener_.Await(id).reason, v1::ERROR_REASON_CANCELLED);
  }
  EXPECT_TRUE(reactor_->Shutdown(absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(reactor_->live(), 0);
}

TEST_F(AsyncTaskTest, ShutdownReportsWhetherJobsStillRan) {
  auto [id, token] = Start("waits");
  ASSERT_TRUE(AwaitWaiting(1));
  EXPECT_FALSE(reactor_->Shutdown(absl::Now() + absl::Milliseconds(50)));
}

TEST_F(AsyncTaskTest, TimerTasksAnswerAfterTheirWaitInDeadlineOrder) {
  // Started longest first: each shorter one re-arms the loop's timer.
  const absl::Time start = absl::Now();
  const auto [slow, t1] = Start("timer", 90);
  const auto [mid, t2] = Start("timer", 60);
  const auto [fast, t3] = Start("timer", 30);
  const auto [now, t4] = Start("timer", 0);
  const JobOutcome o = listener_.Await(slow);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.output.value.number_value(), 90);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
  EXPECT_THAT(listener_.order(), ::testing::ElementsAre(now, fast, mid, slow));
  EXPECT_EQ(timer_thens_, 4);
}

TEST_F(AsyncTaskTest, ATimerTasksErrorsFailItsJob) {
  const auto [bad_delay, t1] = Start("timer", -1);
  const auto [throws, t2] = Start("timer", 7);
  const JobOutcome d = listener_.Await(bad_delay);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.reason, v1::ERROR_REASON_TASK_ERROR);
  const JobOutcome t = listener_.Await(throws);
  EXPECT_EQ(t.status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(t.status.message(), HasSubstr("then threw"));
  EXPECT_EQ(t.reason, v1::ERROR_REASON_TASK_ERROR);
}

TEST_F(AsyncTaskTest, CancelEndsAWaitingTimerTaskAtOnceWithoutItsThen) {
  auto [id, token] = Start("timer", 3600 * 1000.0);
  Cancel(id, *token, CancelReason::kTimeout);
  const JobOutcome o = listener_.Await(id);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(o.reason, v1::ERROR_REASON_TIMEOUT);
  EXPECT_EQ(timer_thens_, 0);
  EXPECT_TRUE(reactor_->Shutdown(absl::Now() + absl::Seconds(5)));
}

TEST_F(AsyncTaskTest, ManyCancelledTimerTasksLeaveTheRestOnTime) {
  // 5,000 hour-long waits cancelled (their heap entries compacted away),
  // interleaved with short ones that must still end, and answer.
  std::vector<std::pair<uint64_t, std::shared_ptr<CancelToken>>> long_waits;
  std::vector<uint64_t> short_waits;
  for (int i = 0; i < 5000; ++i) {
    long_waits.push_back(Start("timer", 3600 * 1000.0));
    if (i % 500 == 0) short_waits.push_back(Start("timer", 20).first);
  }
  for (auto& [id, token] : long_waits) {
    Cancel(id, *token, CancelReason::kCancelled);
  }
  for (auto& [id, token] : long_waits) {
    ASSERT_EQ(listener_.Await(id).reason, v1::ERROR_REASON_CANCELLED);
  }
  for (uint64_t id : short_waits) {
    const JobOutcome o = listener_.Await(id);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.output.value.number_value(), 20);
  }
  const auto [late, t] = Start("timer", 10);
  EXPECT_TRUE(listener_.Await(late).status.ok());
  EXPECT_EQ(timer_thens_, static_cast<int>(short_waits.size()) + 1);
  EXPECT_TRUE(reactor_->Shutdown(absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(reactor_->live(), 0);
}

TEST_F(AsyncTaskTest, ThousandsOfTimerTasksDueAtOnceAllAnswer) {
  // More than one turn of the loop's wake-ups (1,024) on each loop.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5000; ++i) ids.push_back(Start("timer", 10).first);
  for (uint64_t id : ids) {
    const JobOutcome o = listener_.Await(id);
    ASSERT_TRUE(o.status.ok()) << id << ": " << o.status;
  }
  EXPECT_EQ(timer_thens_, 5000);
}

TEST(AsyncTaskRegistryTest, RefusesAnAsyncTaskWithNeitherForm) {
  TaskRegistry registry;
  const absl::Status s = registry.Add(
      {.name = "hollow",
       .async = MakeTimerTask(
           {.delay = [](const TaskArgs&) -> absl::StatusOr<absl::Duration> {
             return absl::ZeroDuration();
           }})});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("hollow"));
}

}  // namespace
}  // namespace jobd
