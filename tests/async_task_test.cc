// Unit tests of the async task SDK (workers/async_task.h) on a real
// ReactorExecutor: results, errors and exceptions, cancellation before the
// start and at an await, cleanup after a cancel, RunBlocking, progress,
// and many jobs over several loops.
#include "workers/async_task.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/reactor.h"
#include "workers/task_registry.h"

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
    Add("waits", [](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      asio::steady_timer timer(ctx.io(), std::chrono::hours(1));
      co_await timer.async_wait(asio::use_awaitable);
      co_return Number(1);
    });
    // Cleans up after a cancel with an await of its own, then reports it.
    Add("cleans_up", [this](AsyncTaskContext& ctx) -> asio::awaitable<Result> {
      co_await asio::this_coro::throw_if_cancelled(false);
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

  JobRun Run(const std::string& task,
             absl::Time deadline = absl::InfiniteFuture()) {
    const TaskDef* def = registry_.Find(task);
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task);
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
      const std::string& task) {
    JobRun run = Run(task);
    auto token = run.cancel;
    const uint64_t id = run.job_id;
    reactor_->Start(std::move(run));
    return {id, token};
  }

  void Cancel(uint64_t id, CancelToken& token, CancelReason reason) {
    token.Cancel(reason);
    reactor_->Cancel(id);
  }

  TaskRegistry registry_;
  Listener listener_;
  std::unique_ptr<ReactorExecutor> reactor_;
  uint64_t next_id_ = 0;
  std::atomic<bool> cleaned_up_{false};
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
  absl::SleepFor(absl::Milliseconds(20));  // Let it reach its await.
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
  absl::SleepFor(absl::Milliseconds(20));
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
  absl::SleepFor(absl::Milliseconds(50));
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
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(reactor_->Shutdown(absl::Now() + absl::Milliseconds(50)));
}

}  // namespace
}  // namespace jobd
