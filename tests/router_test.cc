// Unit tests: Router decisions by kind, explicit executor and measurements.
#include "server/scheduler/router.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/sdk/async_task.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<TaskOutput> NoOp(TaskContext&) { return TaskOutput{}; }

// A sync task (routing never runs it).
TaskDef Task(v1::JobKind default_kind) {
  return {.name = "t", .default_kind = default_kind, .run = NoOp};
}

// An async-only task, or one with both implementations. The router only
// looks at whether they exist (it never runs the empty coroutine).
TaskDef AsyncTask(bool with_sync) {
  TaskDef t = Task(v1::JOB_KIND_IO_BOUND);
  if (!with_sync) t.run = nullptr;
  t.async = std::make_shared<const jobd::AsyncTask>();
  return t;
}

TEST(RouterTest, RoutesByKindAndFallsBackToThreads) {
  Router r;
  const TaskDef t = Task(v1::JOB_KIND_IO_BOUND);
  // Only the thread pool is enabled: CPU work falls back to it.
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_CPU_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_CPU_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_PROCESS);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
}

TEST(RouterTest, ExplicitExecutor) {
  Router r;
  const TaskDef t = Task(v1::JOB_KIND_IO_BOUND);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_CPU_BOUND, v1::EXECUTOR_THREAD),
            v1::EXECUTOR_THREAD);
  auto s = r.Route(t, v1::JOB_KIND_CPU_BOUND, v1::EXECUTOR_PROCESS).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("EXECUTOR_PROCESS is not enabled"));
  s = r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_REACTOR).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("no async implementation"));
}

TEST(RouterTest, IsolatedTasksNeverRunOnThreads) {
  Router r;
  TaskDef t = Task(v1::JOB_KIND_IO_BOUND);
  t.needs_isolation = true;
  auto s = r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("runs only in the process pool"));
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_PROCESS);
  EXPECT_FALSE(r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_THREAD).ok());
}

TEST(RouterTest, AutoUsesDefaultKindUntilMeasured) {
  Router r;
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  const TaskDef t = Task(v1::JOB_KIND_IO_BOUND);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
  EXPECT_LT(r.CpuRatio(t), 0);
  // A task that keeps the CPU busy for 50 ms per run.
  for (int i = 0; i < Router::kMinSamples; ++i) {
    r.Record(t, absl::Milliseconds(49), absl::Milliseconds(50));
  }
  EXPECT_GT(r.CpuRatio(t), 0.9);
  EXPECT_EQ(*r.Route(t, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_PROCESS);
}

TEST(RouterTest, AutoDoesNotHoldABusyMachineAgainstATask) {
  Router r;
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  // 20 ms of CPU in 50 ms, 30 of which it waited for a CPU others held: a
  // CPU hog on a loaded machine.
  const TaskDef hog = Task(v1::JOB_KIND_IO_BOUND);
  for (int i = 0; i < Router::kMinSamples; ++i) {
    r.Record(hog, absl::Milliseconds(20), absl::Milliseconds(50),
             absl::Milliseconds(30));
  }
  EXPECT_GT(r.CpuRatio(hog), 0.9);
  EXPECT_EQ(*r.Route(hog, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_PROCESS);
  // Without the wait it would have looked 40% busy: threads.
  const TaskDef same = Task(v1::JOB_KIND_IO_BOUND);
  for (int i = 0; i < Router::kMinSamples; ++i) {
    r.Record(same, absl::Milliseconds(20), absl::Milliseconds(50));
  }
  EXPECT_EQ(*r.Route(same, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
}

TEST(RouterTest, AutoKeepsWaitingAndTinyTasksOnThreads) {
  Router r;
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  const TaskDef waiting = Task(v1::JOB_KIND_CPU_BOUND);
  for (int i = 0; i < Router::kMinSamples; ++i) {
    r.Record(waiting, absl::Milliseconds(1), absl::Milliseconds(100));
  }
  EXPECT_EQ(*r.Route(waiting, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
  const TaskDef tiny = Task(v1::JOB_KIND_CPU_BOUND);
  for (int i = 0; i < Router::kMinSamples; ++i) {
    r.Record(tiny, absl::Microseconds(5), absl::Microseconds(5));
  }
  EXPECT_EQ(*r.Route(tiny, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
}

}  // namespace
}  // namespace jobd

namespace jobd {
namespace {

TEST(RouterTest, IoBoundAsyncTasksGoToTheReactorWhenEnabled) {
  Router r;
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  const TaskDef both = AsyncTask(/*with_sync=*/true);
  // No reactor: the sync implementation on threads.
  EXPECT_EQ(*r.Route(both, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
  r.SetEnabled(v1::EXECUTOR_REACTOR, true);
  EXPECT_EQ(*r.Route(both, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_REACTOR);
  EXPECT_EQ(*r.Route(both, v1::JOB_KIND_AUTO, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_REACTOR);
  EXPECT_EQ(*r.Route(both, v1::JOB_KIND_CPU_BOUND, v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_PROCESS);
  EXPECT_EQ(*r.Route(both, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_THREAD),
            v1::EXECUTOR_THREAD);
  // A sync-only IO task stays on threads.
  EXPECT_EQ(*r.Route(Task(v1::JOB_KIND_IO_BOUND), v1::JOB_KIND_IO_BOUND,
                     v1::EXECUTOR_UNSPECIFIED),
            v1::EXECUTOR_THREAD);
}

TEST(RouterTest, AsyncOnlyTasksRunOnlyOnTheReactor) {
  Router r;
  r.SetEnabled(v1::EXECUTOR_PROCESS, true);
  const TaskDef t = AsyncTask(/*with_sync=*/false);
  auto s = r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_UNSPECIFIED).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("--reactor-threads 0"));
  r.SetEnabled(v1::EXECUTOR_REACTOR, true);
  // Whatever the kind: even CPU_BOUND cannot go to a process.
  for (v1::JobKind kind :
       {v1::JOB_KIND_IO_BOUND, v1::JOB_KIND_CPU_BOUND, v1::JOB_KIND_AUTO}) {
    EXPECT_EQ(*r.Route(t, kind, v1::EXECUTOR_UNSPECIFIED),
              v1::EXECUTOR_REACTOR);
  }
  s = r.Route(t, v1::JOB_KIND_IO_BOUND, v1::EXECUTOR_THREAD).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("async only"));
}

TEST(RouterTest, UnmeasuredCpuTimeTeachesNothing) {
  Router r;
  const TaskDef t = AsyncTask(/*with_sync=*/true);
  for (int i = 0; i < 10; ++i) {
    r.Record(t, absl::Nanoseconds(-1), absl::Milliseconds(50));
  }
  EXPECT_LT(r.CpuRatio(t), 0);
  // Nor does an AUTO run that did not measure its run-queue wait.
  for (int i = 0; i < 10; ++i) {
    r.Record(t, absl::Milliseconds(1), absl::Milliseconds(50),
             absl::Nanoseconds(-1));
  }
  EXPECT_LT(r.CpuRatio(t), 0);
}

TEST(RouterTest, SamplesTheRunQueueWaitOfEachTask) {
  Router r;
  const TaskDef a = Task(v1::JOB_KIND_IO_BOUND);
  const TaskDef b = Task(v1::JOB_KIND_IO_BOUND);
  // The first runs of a task all measure, so that AUTO learns it quickly.
  for (int i = 0; i < 4 * Router::kMinSamples; ++i) {
    EXPECT_TRUE(r.SampleCpuWait(a)) << i;
  }
  // Then one in kCpuWaitSampling, counted per task.
  int measured = 0;
  for (int i = 0; i < 10 * Router::kCpuWaitSampling; ++i) {
    measured += r.SampleCpuWait(a);
  }
  EXPECT_EQ(measured, 10);
  EXPECT_TRUE(r.SampleCpuWait(b));
}

}  // namespace
}  // namespace jobd
