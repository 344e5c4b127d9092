// Tests of the process pool's pipelining (workers/process/process_pool.h,
// "Pipelining") at the executor's level, against real worker processes (this
// binary in fork-server mode, as jobd starts a replacement): chunks queued
// at a busy worker behind the job it runs, and what the pool guarantees
// with them there: a crash fails only the running job (the queued ones run
// on the replacement, once), a cancel of a queued job leaves the running one
// and its worker alone, a hard timeout of the running job, recycling by job
// count and by RSS, quarantine, progress, shutdown, and capacity() growing
// with short jobs only.
#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "jobd/v1/jobd.pb.h"
#include "workers/process/fork_server.h"
#include "workers/process/process_pool.h"
#include "workers/sdk/task.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

// Records what a pool reports.
class Recorder : public ExecutorListener {
 public:
  struct End {
    JobOutcome outcome;
    int count = 0;  // Reports of this job (must be 1).
  };
  void OnJobProgress(uint64_t job_id, double, std::string_view) override {
    absl::MutexLock lock(&mu_);
    progress_.push_back(job_id);
  }
  void OnJobFinished(uint64_t job_id, JobOutcome outcome) override {
    absl::MutexLock lock(&mu_);
    End& e = ends_[job_id];
    ++e.count;
    frees_ += outcome.frees_slot;
    e.outcome = std::move(outcome);
  }
  // Waits until `n` distinct jobs ended (false on timeout).
  bool WaitEnds(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ends_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  std::map<uint64_t, End> ends() {
    absl::MutexLock lock(&mu_);
    return ends_;
  }
  int frees() {
    absl::MutexLock lock(&mu_);
    return frees_;
  }
  std::vector<uint64_t> progress() {
    absl::MutexLock lock(&mu_);
    return progress_;
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, End> ends_ ABSL_GUARDED_BY(mu_);
  int frees_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> progress_ ABSL_GUARDED_BY(mu_);
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(registry_, {.testing_tasks = true}).ok());
  }
  void TearDown() override {
    if (pool_ != nullptr) pool_->Shutdown(absl::Now() + absl::Seconds(5));
  }

  // A pool of `workers` with pipeline_depth 4, after one echo job per
  // worker (so that it has measured its jobs as short).
  void StartPool(ProcessPoolOptions options) {
    options.fork_server_args = {"--testing-tasks"};
    auto server = SpawnForkServer("/proc/self/exe", options.fork_server_args);
    ASSERT_TRUE(server.ok()) << server.status();
    pool_ = std::make_unique<ProcessPoolExecutor>(options, *std::move(server),
                                                  recorder_);
    for (int i = 0; i < options.workers; ++i) pool_->Start(Run("echo", {1}));
    ASSERT_TRUE(recorder_.WaitEnds(options.workers));
    warmup_ = options.workers;
  }

  ProcessPoolOptions Options(int workers = 1) {
    ProcessPoolOptions o;
    o.workers = workers;
    o.pipeline_depth = 4;
    o.cancel_grace = absl::Milliseconds(50);
    o.kill_grace = absl::Milliseconds(50);
    return o;
  }

  JobRun Run(const std::string& task, std::vector<double> args,
             std::map<std::string, std::string> kwargs = {},
             std::map<std::string, double> numbers = {}) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task);
    for (double a : args) spec->add_args()->set_number_value(a);
    for (const auto& [k, v] : kwargs) {
      (*spec->mutable_kwargs()->mutable_fields())[k].set_string_value(v);
    }
    for (const auto& [k, v] : numbers) {
      (*spec->mutable_kwargs()->mutable_fields())[k].set_number_value(v);
    }
    const TaskDef* def = registry_.Find(task);
    JobRun run;
    run.job_id = ++next_id_;
    run.task = def;
    run.spec = spec;
    auto args_or = TaskRegistry::Bind(*def, spec);
    EXPECT_TRUE(args_or.ok()) << args_or.status();
    run.args = std::make_shared<const TaskArgs>(*std::move(args_or));
    run.cancel = std::make_shared<CancelToken>();
    return run;
  }

  // Starts `run` as a chunk of its own; returns its id.
  uint64_t Start(JobRun run) {
    const uint64_t id = run.job_id;
    pool_->Start(std::move(run));
    return id;
  }

  std::map<std::string, uint64_t> Retired() {
    v1::GetStatsResponse stats;
    pool_->AddStats(stats);
    return {stats.process_pool().retired().begin(),
            stats.process_pool().retired().end()};
  }

  TaskRegistry registry_;
  Recorder recorder_;
  std::unique_ptr<ProcessPoolExecutor> pool_;
  uint64_t next_id_ = 0;
  int warmup_ = 0;
};

TEST_F(PipelineTest, CapacityGrowsWithShortJobsOnly) {
  ProcessPoolOptions o = Options(2);
  o.fork_server_args = {"--testing-tasks"};
  auto server = SpawnForkServer("/proc/self/exe", o.fork_server_args);
  ASSERT_TRUE(server.ok()) << server.status();
  pool_ =
      std::make_unique<ProcessPoolExecutor>(o, *std::move(server), recorder_);
  EXPECT_EQ(pool_->capacity(), 2);  // Nothing measured yet.
  EXPECT_EQ(pool_->workers(), 2);
  Start(Run("echo", {1}));
  ASSERT_TRUE(recorder_.WaitEnds(1));
  EXPECT_EQ(pool_->capacity(), 8);  // Short jobs: 2 workers x depth 4.
  EXPECT_EQ(pool_->workers(), 2);
  // Long jobs (over kPipelineJobTime on average): one chunk per worker.
  for (int i = 0; i < 2; ++i) Start(Run("burn", {60}));
  ASSERT_TRUE(recorder_.WaitEnds(3));
  EXPECT_EQ(pool_->capacity(), 2);
}

TEST_F(PipelineTest, QueuedJobsRunInOrderAndEachChunkFreesOneSlot) {
  StartPool(Options());
  std::vector<uint64_t> ids;
  ids.push_back(Start(Run("burn", {30})));
  for (int i = 0; i < 3; ++i) ids.push_back(Start(Run("echo", {double(i)})));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  for (uint64_t id : ids) {
    const Recorder::End e = recorder_.ends().at(id);
    EXPECT_TRUE(e.outcome.status.ok()) << id << ": " << e.outcome.status;
    EXPECT_EQ(e.count, 1);
    EXPECT_TRUE(e.outcome.frees_slot);
  }
  EXPECT_EQ(recorder_.frees(), warmup_ + 4);
  EXPECT_EQ(pool_->worker_pids().size(), 1u);
}

TEST_F(PipelineTest, CrashFailsOnlyTheRunningJobTheQueuedOnesRunOnce) {
  ProcessPoolOptions o = Options();
  o.quarantine_after = 0;
  StartPool(o);
  const pid_t first = pool_->worker_pids().at(0);
  // While the first job burns, the crash and two echo jobs queue behind it
  // at the same worker (4 chunks: pipeline_depth).
  const uint64_t burn = Start(Run("burn", {50}));
  const uint64_t crash = Start(Run("crash", {}, {{"how", "segv"}}));
  std::vector<uint64_t> queued;
  for (int i = 0; i < 2; ++i) queued.push_back(Start(Run("echo", {1})));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  EXPECT_TRUE(recorder_.ends().at(burn).outcome.status.ok());
  const auto ends = recorder_.ends();
  EXPECT_EQ(ends.at(crash).outcome.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(ends.at(crash).count, 1);
  for (uint64_t id : queued) {
    EXPECT_TRUE(ends.at(id).outcome.status.ok())
        << id << ": " << ends.at(id).outcome.status;
    EXPECT_EQ(ends.at(id).count, 1);
  }
  EXPECT_EQ(recorder_.frees(), warmup_ + 4);
  EXPECT_NE(pool_->worker_pids().at(0), first);
}

TEST_F(PipelineTest, CancelOfAQueuedJobLeavesTheRunningOneAndItsWorker) {
  StartPool(Options());
  const pid_t pid = pool_->worker_pids().at(0);
  const uint64_t running = Start(Run("burn", {300}));
  JobRun queued_run = Run("echo", {1});
  std::shared_ptr<CancelToken> token = queued_run.cancel;
  const uint64_t queued = Start(std::move(queued_run));
  const uint64_t after = Start(Run("echo", {2}));
  token->Cancel(CancelReason::kCancelled);
  pool_->Cancel(queued);
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 3));
  const auto ends = recorder_.ends();
  EXPECT_TRUE(ends.at(running).outcome.status.ok())
      << ends.at(running).outcome.status;
  EXPECT_EQ(ends.at(queued).outcome.reason, v1::ERROR_REASON_CANCELLED);
  EXPECT_EQ(ends.at(queued).count, 1);
  EXPECT_TRUE(ends.at(after).outcome.status.ok());
  EXPECT_EQ(pool_->worker_pids().at(0), pid);  // Not killed.
  EXPECT_EQ(Retired().count("killed"), 0u);
}

TEST_F(PipelineTest, TimeoutKillsTheRunningJobTheQueuedOnesMoveOn) {
  StartPool(Options());
  JobRun hang = Run("crash", {}, {{"how", "hang_ignore_term"}});
  std::shared_ptr<CancelToken> token = hang.cancel;
  const uint64_t hung = Start(std::move(hang));
  std::vector<uint64_t> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(Start(Run("echo", {1})));
  token->Cancel(CancelReason::kTimeout);
  pool_->Cancel(hung);
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  const auto ends = recorder_.ends();
  EXPECT_EQ(ends.at(hung).outcome.reason, v1::ERROR_REASON_TIMEOUT);
  for (uint64_t id : queued) {
    EXPECT_TRUE(ends.at(id).outcome.status.ok())
        << id << ": " << ends.at(id).outcome.status;
    EXPECT_EQ(ends.at(id).count, 1);
  }
  EXPECT_EQ(recorder_.frees(), warmup_ + 4);
}

TEST_F(PipelineTest, NoChunkIsQueuedPastMaxJobsPerWorker) {
  ProcessPoolOptions o = Options();
  o.max_jobs_per_worker = 2;
  StartPool(o);  // The warm-up job is the first worker's first.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Start(Run("echo", {1})));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  for (uint64_t id : ids) {
    EXPECT_TRUE(recorder_.ends().at(id).outcome.status.ok());
  }
  // 5 jobs, 2 per worker: the third worker runs the last, so two retired.
  // (Sending the 4 queued chunks to the first worker would retire one.)
  const absl::Time end = absl::Now() + kWait;
  while (Retired()["max_jobs_per_worker"] < 2 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(Retired()["max_jobs_per_worker"], 2u);
}

TEST_F(PipelineTest, RssKillFailsTheRunningJobTheQueuedOnesMoveOn) {
  ProcessPoolOptions o = Options();
  o.max_worker_rss = 64u << 20;
  o.rss_check_interval = absl::Milliseconds(5);
  StartPool(o);
  const uint64_t big = Start(
      Run("crash", {}, {{"how", "oom"}}, {{"mb", 128}, {"hold_ms", 5000}}));
  std::vector<uint64_t> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(Start(Run("echo", {1})));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  const auto ends = recorder_.ends();
  EXPECT_EQ(ends.at(big).outcome.reason, v1::ERROR_REASON_OUT_OF_MEMORY);
  for (uint64_t id : queued) {
    EXPECT_TRUE(ends.at(id).outcome.status.ok())
        << id << ": " << ends.at(id).outcome.status;
    EXPECT_EQ(ends.at(id).count, 1);
  }
}

TEST_F(PipelineTest, QueuedJobsOfATaskQuarantinedMeanwhileFailQuarantined) {
  ProcessPoolOptions o = Options();
  o.quarantine_after = 1;
  StartPool(o);
  const uint64_t first = Start(Run("crash", {}, {{"how", "segv"}}));
  const uint64_t second = Start(Run("crash", {}, {{"how", "segv"}}));
  const uint64_t echo = Start(Run("echo", {1}));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 3));
  const auto ends = recorder_.ends();
  EXPECT_EQ(ends.at(first).outcome.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(ends.at(second).outcome.reason, v1::ERROR_REASON_QUARANTINED);
  EXPECT_TRUE(ends.at(echo).outcome.status.ok());
  EXPECT_EQ(Retired()["crashed"], 1u);  // One worker lost, not two.
}

TEST_F(PipelineTest, ProgressComesForTheRunningJobOnly) {
  StartPool(Options());
  const uint64_t primes = Start(Run("primes.count", {4e6}));
  const uint64_t echo = Start(Run("echo", {1}));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 2));
  const std::vector<uint64_t> progress = recorder_.progress();
  EXPECT_FALSE(progress.empty());
  for (uint64_t id : progress) EXPECT_EQ(id, primes);
  EXPECT_TRUE(recorder_.ends().at(echo).outcome.status.ok());
}

TEST_F(PipelineTest, ShutdownEndsRunningAndQueuedJobsOnceEach) {
  StartPool(Options());
  const uint64_t hung = Start(Run("crash", {}, {{"how", "hang"}}));
  std::vector<uint64_t> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(Start(Run("echo", {1})));
  EXPECT_FALSE(pool_->Shutdown(absl::Now() + absl::Milliseconds(100)));
  ASSERT_TRUE(recorder_.WaitEnds(warmup_ + 4));
  const auto ends = recorder_.ends();
  EXPECT_EQ(ends.at(hung).count, 1);
  EXPECT_FALSE(ends.at(hung).outcome.status.ok());
  for (uint64_t id : queued) {
    EXPECT_EQ(ends.at(id).count, 1);
    EXPECT_EQ(ends.at(id).outcome.reason, v1::ERROR_REASON_SHUTDOWN);
  }
  EXPECT_EQ(recorder_.frees(), warmup_ + 4);
}

}  // namespace
}  // namespace jobd

int main(int argc, char** argv) {
  jobd::RunForkServerIfInvoked(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
