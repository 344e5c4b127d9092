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

static_assert(TaskCounters::kExecutors == 4,
              "queue_wait_ is initialized for 4 executors");

size_t TaskCounters::ExecutorIndex(v1::Executor executor) {
  return std::min<size_t>(static_cast<size_t>(executor), kExecutors - 1);
}

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

TaskCounters::Entry& TaskCounters::EntryOf(const TaskDef* task) {
  if (task == nullptr) return EntryOf(std::string_view("other"));
  // Most jobs in a row are of one task: no hash lookup for those.
  if (task == last_def_) return entries_[last_index_];
  size_t index;
  if (auto it = by_def_.find(task); it != by_def_.end()) {
    index = it->second;
  } else {
    index = static_cast<size_t>(&EntryOf(std::string_view(task->name)) -
                                entries_.data());
    if (by_def_.size() >= kMaxDefs) by_def_.clear();
    by_def_.emplace(task, index);
  }
  last_def_ = task;
  last_index_ = index;
  return entries_[index];
}

void TaskCounters::CountAccepted(const TaskDef* task, v1::Executor executor) {
  ++EntryOf(task).accepted[ExecutorIndex(executor)];
}

void TaskCounters::CountStarted(const TaskDef* task, v1::Executor executor,
                                absl::Duration waited) {
  const size_t ex = ExecutorIndex(executor);
  ++EntryOf(task).started[ex];
  queue_wait_[ex].Observe(
      absl::ToDoubleSeconds(std::max(waited, absl::ZeroDuration())));
}

void TaskCounters::CountEnd(const TaskDef* task, v1::Executor executor,
                            v1::JobState state, v1::ErrorReason reason,
                            absl::Duration run) {
  Entry& e = EntryOf(task);
  const size_t re = std::min<size_t>(static_cast<size_t>(reason), kReasons - 1);
  ++e.ended[ExecutorIndex(executor)][StateIndex(state)][re];
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
      if (e.accepted[ex] > 0 || e.started[ex] > 0) {
        s.flows.push_back({e.task, static_cast<v1::Executor>(ex),
                           e.accepted[ex], e.started[ex]});
      }
    }
    if (e.run.count > 0) s.run_times.emplace_back(e.task, e.run);
  }
  for (size_t ex = 0; ex < kExecutors; ++ex) {
    s.queue_wait[ex] = queue_wait_[ex].snapshot();
  }
  return s;
}

}  // namespace jobd
