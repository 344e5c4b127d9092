// TaskCounters: how many jobs ended per (task, executor, state, reason),
// and their run times in fixed histogram buckets, for the metrics
// endpoint (server/metrics/). Label values stay bounded: tasks are named
// only as the scheduler knows them (registered, admitted), and past
// kMaxTasks distinct names further ones count under "other".
//
// Thread-safety: none; the Scheduler uses it under its one lock (one hash
// lookup per ended job, under the lock Finish already holds). Snapshot()
// copies it for a scrape.
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

namespace jobd {

class TaskCounters {
 public:
  // Distinct task label values before "other".
  static constexpr size_t kMaxTasks = 200;
  // Run-time histogram upper bounds, seconds (+Inf implied).
  static constexpr std::array<double, 12> kRunBuckets = {
      0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600};

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
  struct Snapshot {
    std::vector<std::pair<Key, uint64_t>> ended;
    std::vector<std::pair<std::string, RunTimes>> run_times;  // By task.
  };

  // One job ended; `run` is negative if it never ran.
  void CountEnd(std::string_view task, v1::Executor executor,
                v1::JobState state, v1::ErrorReason reason, absl::Duration run);

  Snapshot Copy() const;
  size_t tasks() const { return entries_.size(); }

 private:
  static constexpr size_t kExecutors = 4;  // v1::Executor values.
  static constexpr size_t kReasons = 16;   // v1::ErrorReason values.
  struct Entry {
    std::string task;
    // [executor][succeeded, failed, cancelled][reason]: no allocation and
    // one hash lookup (by name) per ended job.
    uint64_t ended[kExecutors][3][kReasons] = {};
    RunTimes run;
  };
  Entry& EntryOf(std::string_view task);

  std::vector<Entry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;  // Task -> entries_.
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_TASK_COUNTERS_H_
