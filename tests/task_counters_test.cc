// TaskCounters (server/scheduler/task_counters.h): ends counted per label
// set, run times in buckets, accepted and started per task and executor,
// queue waits per executor, and the task label values capped.
#include "server/scheduler/task_counters.h"

#include <deque>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

TaskDef Def(std::string name) {
  TaskDef d;
  d.name = std::move(name);
  return d;
}

TEST(TaskCountersTest, CountsEndsAndRunTimes) {
  TaskCounters c;
  const TaskDef echo = Def("echo");
  c.CountEnd(&echo, v1::EXECUTOR_THREAD, v1::JOB_STATE_SUCCEEDED,
             v1::ERROR_REASON_UNSPECIFIED, absl::Milliseconds(2));
  c.CountEnd(&echo, v1::EXECUTOR_THREAD, v1::JOB_STATE_SUCCEEDED,
             v1::ERROR_REASON_UNSPECIFIED, absl::Seconds(2));
  c.CountEnd(&echo, v1::EXECUTOR_THREAD, v1::JOB_STATE_CANCELLED,
             v1::ERROR_REASON_CANCELLED, absl::Seconds(-1));  // Never ran.
  const TaskCounters::Snapshot s = c.Copy();
  ASSERT_EQ(s.ended.size(), 2u);
  uint64_t succeeded = 0;
  for (const auto& [k, n] : s.ended) {
    if (k.state == v1::JOB_STATE_SUCCEEDED) succeeded = n;
  }
  EXPECT_EQ(succeeded, 2u);
  ASSERT_EQ(s.run_times.size(), 1u);
  const TaskCounters::RunTimes& r = s.run_times[0].second;
  EXPECT_EQ(r.count, 2u);
  EXPECT_EQ(r.buckets[1], 1u);  // 2 ms: le 0.005.
  EXPECT_EQ(r.buckets[7], 1u);  // 2 s: le 5.
  EXPECT_DOUBLE_EQ(r.sum_seconds, 2.002);
}

TEST(TaskCountersTest, CountsAcceptedStartedAndQueueWaits) {
  TaskCounters c;
  const TaskDef echo = Def("echo");
  const TaskDef sleep = Def("sleep");
  c.CountAccepted(&echo, v1::EXECUTOR_THREAD);
  c.CountAccepted(&echo, v1::EXECUTOR_THREAD);
  c.CountAccepted(&sleep, v1::EXECUTOR_REACTOR);
  c.CountAccepted(nullptr, v1::EXECUTOR_THREAD);  // No task: "other".
  c.CountStarted(&echo, v1::EXECUTOR_THREAD, absl::Milliseconds(3));
  c.CountStarted(&sleep, v1::EXECUTOR_REACTOR, absl::Seconds(2));
  const TaskCounters::Snapshot s = c.Copy();
  ASSERT_EQ(s.flows.size(), 3u);
  for (const TaskCounters::Flow& f : s.flows) {
    if (f.task == "echo") {
      EXPECT_EQ(f.executor, v1::EXECUTOR_THREAD);
      EXPECT_EQ(f.accepted, 2u);
      EXPECT_EQ(f.started, 1u);
    } else if (f.task == "sleep") {
      EXPECT_EQ(f.executor, v1::EXECUTOR_REACTOR);
      EXPECT_EQ(f.accepted, 1u);
      EXPECT_EQ(f.started, 1u);
    } else {
      EXPECT_EQ(f.task, "other");
      EXPECT_EQ(f.accepted, 1u);
    }
  }
  const HistogramSnapshot& thread = s.queue_wait[v1::EXECUTOR_THREAD];
  EXPECT_EQ(thread.count, 1u);
  EXPECT_EQ(thread.buckets[3], 1u);  // 3 ms: le 0.005.
  const HistogramSnapshot& reactor = s.queue_wait[v1::EXECUTOR_REACTOR];
  EXPECT_EQ(reactor.count, 1u);
  EXPECT_DOUBLE_EQ(reactor.sum, 2);
  EXPECT_EQ(s.queue_wait[v1::EXECUTOR_PROCESS].count, 0u);
}

TEST(TaskCountersTest, TaskLabelValuesAreCapped) {
  TaskCounters c;
  // 10,000 distinct tasks (their definitions outlive the counters' cache).
  std::deque<TaskDef> defs;
  for (size_t i = 0; i < 10000; ++i) {
    defs.push_back(Def(absl::StrCat("task", i)));
    c.CountAccepted(&defs.back(), v1::EXECUTOR_PROCESS);
    c.CountStarted(&defs.back(), v1::EXECUTOR_PROCESS, absl::Milliseconds(1));
    c.CountEnd(&defs.back(), v1::EXECUTOR_PROCESS, v1::JOB_STATE_SUCCEEDED,
               v1::ERROR_REASON_UNSPECIFIED, absl::Milliseconds(1));
  }
  // The first kMaxTasks names, then "other" for the rest.
  EXPECT_EQ(c.tasks(), TaskCounters::kMaxTasks + 1);
  const TaskCounters::Snapshot s = c.Copy();
  EXPECT_EQ(s.ended.size(), TaskCounters::kMaxTasks + 1);
  EXPECT_EQ(s.flows.size(), TaskCounters::kMaxTasks + 1);
  EXPECT_EQ(s.run_times.size(), TaskCounters::kMaxTasks + 1);
  const uint64_t rest = 10000 - TaskCounters::kMaxTasks;
  for (const auto& [k, n] : s.ended) {
    if (k.task == "other") {
      EXPECT_EQ(n, rest);
    }
  }
  for (const TaskCounters::Flow& f : s.flows) {
    if (f.task == "other") {
      EXPECT_EQ(f.accepted, rest);
      EXPECT_EQ(f.started, rest);
    }
  }
  // A name seen before the cap keeps its own label, through the same
  // definition or a new one of that name (a reload).
  const TaskDef again = Def("task3");
  for (const TaskDef* d : std::vector<const TaskDef*>{&defs[3], &again}) {
    c.CountEnd(d, v1::EXECUTOR_PROCESS, v1::JOB_STATE_SUCCEEDED,
               v1::ERROR_REASON_UNSPECIFIED, absl::Milliseconds(1));
  }
  EXPECT_EQ(c.tasks(), TaskCounters::kMaxTasks + 1);
  for (const auto& [k, n] : c.Copy().ended) {
    if (k.task == "task3") {
      EXPECT_EQ(n, 3u);
    }
  }
}

TEST(TaskCountersTest, EveryErrorReasonHasItsOwnLabel) {
  TaskCounters c;
  const TaskDef echo = Def("echo");
  const v1::ErrorReason last = v1::ErrorReason_MAX;
  c.CountEnd(&echo, v1::EXECUTOR_THREAD, v1::JOB_STATE_FAILED, last,
             absl::Milliseconds(1));
  const TaskCounters::Snapshot s = c.Copy();
  ASSERT_EQ(s.ended.size(), 1u);
  EXPECT_EQ(s.ended[0].first.reason, last);
}

}  // namespace
}  // namespace jobd
