// ThroughputHistory: the dashboard's chart data, one sample of the daemon's
// counters per interval (by default each second, the last 10 minutes) in a
// ring of fixed size: its memory is fixed at construction (a sample is 64
// bytes; 600 samples, 38 KB), whatever the daemon runs. Rates are the
// differences between samples, computed by the page.
//
// Thread-safety: thread-safe (one mutex; Add from the sampler thread,
// After from HTTP threads).
// Ownership: a plain value owned by the Dashboard.
#ifndef JOBD_SERVER_DASHBOARD_THROUGHPUT_H_
#define JOBD_SERVER_DASHBOARD_THROUGHPUT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd {

struct ThroughputSample {
  int64_t unix_ms = 0;  // When it was taken.
  uint64_t accepted = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t cancelled = 0;
  uint64_t queued = 0;  // Over all executors, now.
  uint64_t busy = 0;    // Slots running a job now.
  uint64_t rejected = 0;

  static ThroughputSample From(const v1::GetStatsResponse& stats,
                               int64_t unix_ms);
};

class ThroughputHistory {
 public:
  explicit ThroughputHistory(size_t capacity);

  void Add(const ThroughputSample& sample);
  // The samples taken after `after_unix_ms`, oldest first.
  std::vector<ThroughputSample> After(int64_t after_unix_ms) const;
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;  // At least 1.
  mutable absl::Mutex mu_;
  std::vector<ThroughputSample> ring_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // Where the next sample goes.
  size_t size_ ABSL_GUARDED_BY(mu_) = 0;
};

// {"intervalMs":N,"capacity":N,"samples":[[unixMs,accepted,succeeded,
// failed,cancelled,queued,busy,rejected],...]}
std::string ThroughputJson(const std::vector<ThroughputSample>& samples,
                           int64_t interval_ms, size_t capacity);

}  // namespace jobd

#endif  // JOBD_SERVER_DASHBOARD_THROUGHPUT_H_
