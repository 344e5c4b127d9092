// TaskCounters (server/scheduler/task_counters.h): ends counted per label
// set, run times in buckets, and the task label values capped.
#include "server/scheduler/task_counters.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

TEST(TaskCountersTest, CountsEndsAndRunTimes) {
  TaskCounters c;
  c.CountEnd("echo", v1::EXECUTOR_THREAD, v1::JOB_STATE_SUCCEEDED,
             v1::ERROR_REASON_UNSPECIFIED, absl::Milliseconds(2));
  c.CountEnd("echo", v1::EXECUTOR_THREAD, v1::JOB_STATE_SUCCEEDED,
             v1::ERROR_REASON_UNSPECIFIED, absl::Seconds(2));
  c.CountEnd("echo", v1::EXECUTOR_THREAD, v1::JOB_STATE_CANCELLED,
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

TEST(TaskCountersTest, TaskLabelValuesAreCapped) {
  TaskCounters c;
  for (size_t i = 0; i < TaskCounters::kMaxTasks + 500; ++i) {
    c.CountEnd(absl::StrCat("task", i), v1::EXECUTOR_PROCESS,
               v1::JOB_STATE_SUCCEEDED, v1::ERROR_REASON_UNSPECIFIED,
               absl::Milliseconds(1));
  }
  // The first kMaxTasks names, then "other" for the rest.
  EXPECT_EQ(c.tasks(), TaskCounters::kMaxTasks + 1);
  const TaskCounters::Snapshot s = c.Copy();
  EXPECT_EQ(s.ended.size(), TaskCounters::kMaxTasks + 1);
  for (const auto& [k, n] : s.ended) {
    if (k.task == "other") {
      EXPECT_EQ(n, 500u);
    }
  }
  // A name seen before the cap keeps its own label.
  c.CountEnd("task3", v1::EXECUTOR_PROCESS, v1::JOB_STATE_SUCCEEDED,
             v1::ERROR_REASON_UNSPECIFIED, absl::Milliseconds(1));
  EXPECT_EQ(c.tasks(), TaskCounters::kMaxTasks + 1);
}

}  // namespace
}  // namespace jobd
