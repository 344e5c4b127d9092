#include "server/dashboard/throughput.h"

#include <iterator>

#include "fmt/format.h"

namespace jobd {

ThroughputSample ThroughputSample::From(const v1::GetStatsResponse& stats,
                                        int64_t unix_ms) {
  ThroughputSample s;
  s.unix_ms = unix_ms;
  s.accepted = stats.accepted();
  s.succeeded = stats.succeeded();
  s.failed = stats.failed();
  s.cancelled = stats.cancelled();
  s.rejected = stats.rejected();
  for (const v1::ExecutorStats& e : stats.executors()) {
    s.queued += e.queued();
    s.busy += e.busy();
  }
  return s;
}

ThroughputHistory::ThroughputHistory(size_t capacity)
    : capacity_(capacity == 0 ? 1 : capacity), ring_(capacity_) {}

void ThroughputHistory::Add(const ThroughputSample& sample) {
  absl::MutexLock lock(&mu_);
  ring_[next_] = sample;
  next_ = (next_ + 1) % ring_.size();
  if (size_ < ring_.size()) ++size_;
}

std::vector<ThroughputSample> ThroughputHistory::After(
    int64_t after_unix_ms) const {
  std::vector<ThroughputSample> out;
  absl::MutexLock lock(&mu_);
  const size_t first = (next_ + ring_.size() - size_) % ring_.size();
  for (size_t i = 0; i < size_; ++i) {
    const ThroughputSample& s = ring_[(first + i) % ring_.size()];
    if (s.unix_ms > after_unix_ms) out.push_back(s);
  }
  return out;
}

std::string ThroughputJson(const std::vector<ThroughputSample>& samples,
                           int64_t interval_ms, size_t capacity) {
  std::string out =
      fmt::format("{{\"intervalMs\":{},\"capacity\":{},\"samples\":[",
                  interval_ms, capacity);
  for (size_t i = 0; i < samples.size(); ++i) {
    const ThroughputSample& s = samples[i];
    fmt::format_to(std::back_inserter(out), "{}[{},{},{},{},{},{},{},{}]",
                   i > 0 ? "," : "", s.unix_ms, s.accepted, s.succeeded,
                   s.failed, s.cancelled, s.queued, s.busy, s.rejected);
  }
  out += "]}";
  return out;
}

}  // namespace jobd
