#include "server/scheduler/task_counters.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace jobd {
namespace {

int StateIndex(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      return 0;
    case v1::JOB_STATE_CANCELLED:
      return 2;
    default:
      return 1;
  }
}
constexpr v1::JobState kStates[] = {
    v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED};

}  // namespace

TaskCounters::Entry& TaskCounters::EntryOf(std::string_view task) {
  const absl::string_view name(task.data(), task.size());
  if (auto it = index_.find(name); it != index_.end()) {
    return entries_[it->second];
  }
  if (entries_.size() >= kMaxTasks) {
    if (auto it = index_.find("other"); it != index_.end()) {
      return entries_[it->second];
    }
    task = "other";
  }
  index_.emplace(std::string(task), entries_.size());
  entries_.emplace_back();
  entries_.back().task = std::string(task);
  return entries_.back();
}

void TaskCounters::CountEnd(std::string_view task, v1::Executor executor,
                            v1::JobState state, v1::ErrorReason reason,
                            absl::Duration run) {
  Entry& e = EntryOf(task);
  const size_t ex =
      std::min<size_t>(static_cast<size_t>(executor), kExecutors - 1);
  const size_t re = std::min<size_t>(static_cast<size_t>(reason), kReasons - 1);
  ++e.ended[ex][StateIndex(state)][re];
  if (run < absl::ZeroDuration()) return;
  RunTimes& r = e.run;
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
  for (const Entry& e : entries_) {
    for (size_t ex = 0; ex < kExecutors; ++ex) {
      for (size_t st = 0; st < 3; ++st) {
        for (size_t re = 0; re < kReasons; ++re) {
          if (const uint64_t n = e.ended[ex][st][re]; n > 0) {
            s.ended.push_back(
                {Key{e.task, static_cast<v1::Executor>(ex), kStates[st],
                     static_cast<v1::ErrorReason>(re)},
                 n});
          }
        }
      }
    }
    if (e.run.count > 0) s.run_times.emplace_back(e.task, e.run);
  }
  return s;
}

}  // namespace jobd
