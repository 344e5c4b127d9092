#include "server/telemetry/histogram.h"

#include <algorithm>
#include <cmath>

namespace jobd {

size_t BucketOf(std::span<const double> bounds, double value) {
  return static_cast<size_t>(
      std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin());
}

void Histogram::Observe(double value) {
  ++data_.buckets[BucketOf(data_.bounds, value)];
  ++data_.count;
  data_.sum += value;
}

void AtomicHistogram::Observe(double value) {
  buckets_[BucketOf(bounds_, value)].fetch_add(1, std::memory_order_relaxed);
  if (value > 0) {
    sum_nanos_.fetch_add(static_cast<uint64_t>(std::llround(value * 1e9)),
                         std::memory_order_relaxed);
  }
}

HistogramSnapshot AtomicHistogram::Snapshot() const {
  HistogramSnapshot s;
  s.bounds = bounds_;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    s.count += s.buckets[i];  // Consistent with the buckets, whatever races.
  }
  s.sum = static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

}  // namespace jobd
