#include "server/scheduler/task_counters.h"

#include <algorithm>

namespace jobd {

std::string TaskCounters::Label(std::string_view task) const {
  std::string label(task);
  if (tasks_.size() < kMaxTasks || tasks_.contains(label)) return label;
  return "other";
}

void TaskCounters::CountEnd(std::string_view task, v1::Executor executor,
                            v1::JobState state, v1::ErrorReason reason,
                            absl::Duration run) {
  std::string label = Label(task);
  auto it = tasks_.try_emplace(label).first;
  ++ended_[Key{std::move(label), executor, state, reason}];
  if (run < absl::ZeroDuration()) return;
  RunTimes& r = it->second;
  const double s = absl::ToDoubleSeconds(run);
  const size_t i = static_cast<size_t>(
      std::lower_bound(kRunBuckets.begin(), kRunBuckets.end(), s) -
      kRunBuckets.begin());
  ++r.buckets[i];
  ++r.count;
  r.sum_seconds += s;
}

TaskCounters::Snapshot TaskCounters::Copy() const {
  Snapshot s;
  s.ended.assign(ended_.begin(), ended_.end());
  s.run_times.assign(tasks_.begin(), tasks_.end());
  return s;
}

}  // namespace jobd
