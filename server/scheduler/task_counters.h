// TaskCounters: what the scheduler counts for the metrics endpoint
// (server/metrics/): jobs accepted and started per (task, executor), jobs
// ended per (task, executor, state, reason), their run times per task and
// how long jobs waited in each executor's queue, in fixed histogram
// buckets. Label values stay bounded: tasks are named only as the
// scheduler knows them (registered, admitted), and past kMaxTasks distinct
// names further ones count under "other".
//
// Thread-safety: none; the Scheduler uses it under its one lock (at most
// one hash lookup by TaskDef pointer per count, none for a job of the
// task counted last, under the lock admission, start and Finish already
// hold). Copy() copies it for a scrape.
#ifndef JOBD_SERVER_SCHEDULER_TASK_COUNTERS_H_
#define JOBD_SERVER_SCHEDULER_TASK_COUNTERS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/telemetry/histogram.h"
#include "workers/sdk/task.h"

namespace jobd {

class TaskCounters {
 public:
  // Distinct task label values before "other".
  static constexpr size_t kMaxTasks = 200;
  // Run-time histogram upper bounds, seconds (+Inf implied).
  static constexpr std::array<double, 12> kRunBuckets = {
      0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600};
  static constexpr size_t kExecutors = v1::Executor_ARRAYSIZE;

  struct Key {
    std::string task;
    v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    v1::ErrorReason reason = v1::ERROR_REASON_UNSPECIFIED;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.task, k.executor, k.state, k.reason);
    }
    bool operator==(const Key&) const = default;
  };
  struct RunTimes {
    std::array<uint64_t, kRunBuckets.size() + 1> buckets{};  // Not cumulative.
    uint64_t count = 0;
    double sum_seconds = 0;
  };
  // Jobs of a task accepted for, and started on, one executor.
  struct Flow {
    std::string task;
    v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
    uint64_t accepted = 0;
    uint64_t started = 0;
  };
  struct Snapshot {
    std::vector<std::pair<Key, uint64_t>> ended;
    std::vector<std::pair<std::string, RunTimes>> run_times;  // By task.
    std::vector<Flow> flows;  // Those with a count.
    // By v1::Executor value: accepted to started, seconds.
    std::array<HistogramSnapshot, kExecutors> queue_wait;
  };

  // A job was accepted for `executor`. A null task counts as "other".
  void CountAccepted(const TaskDef* task, v1::Executor executor);
  // A job started on `executor` after waiting `waited` since it was
  // accepted (a job run again after a restart counts from its first
  // acceptance).
  void CountStarted(const TaskDef* task, v1::Executor executor,
                    absl::Duration waited);
  // One job ended; `run` is negative if it never ran.
  void CountEnd(const TaskDef* task, v1::Executor executor, v1::JobState state,
                v1::ErrorReason reason, absl::Duration run);

  Snapshot Copy() const;
  size_t tasks() const { return entries_.size(); }

 private:
  static constexpr size_t kReasons = v1::ErrorReason_ARRAYSIZE;
  // TaskDef pointers remembered (a cache in front of the names; task
  // definitions are never freed, but reloads make new ones): cleared when
  // full.
  static constexpr size_t kMaxDefs = 4 * kMaxTasks;
  struct Entry {
    std::string task;
    // [executor][succeeded, failed, cancelled][reason]: no allocation and
    // one hash lookup per count.
    uint64_t ended[kExecutors][3][kReasons] = {};
    uint64_t accepted[kExecutors] = {};
    uint64_t started[kExecutors] = {};
    RunTimes run;
  };
  Entry& EntryOf(const TaskDef* task);
  Entry& EntryOf(std::string_view task);
  static size_t ExecutorIndex(v1::Executor executor);

  std::vector<Entry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;      // Task -> entries_.
  absl::flat_hash_map<const TaskDef*, size_t> by_def_;  // The cache.
  const TaskDef* last_def_ = nullptr;  // And the last one looked up.
  size_t last_index_ = 0;
  std::array<Histogram, kExecutors> queue_wait_ = {
      Histogram(kSecondsBounds), Histogram(kSecondsBounds),
      Histogram(kSecondsBounds), Histogram(kSecondsBounds)};
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_TASK_COUNTERS_H_
