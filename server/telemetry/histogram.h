// Fixed-bucket histograms for the metrics endpoint (server/metrics/): the
// bounds are a static array chosen once (kSecondsBounds, kCountBounds), so
// an observation is a search in at most 16 doubles and an increment, never
// an allocation.
//
// Histogram: no thread-safety of its own; its owner observes under the
// lock it already holds (the scheduler's, the journal's) and copies it for
// a scrape. AtomicHistogram: Observe from any thread at once (relaxed
// atomics: a scrape may see one observation's count before its sum), for
// the paths that hold no lock (gRPC callbacks).
#ifndef JOBD_SERVER_TELEMETRY_HISTOGRAM_H_
#define JOBD_SERVER_TELEMETRY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

namespace jobd {

// Upper bounds, seconds: 100 µs .. 1 h (+Inf implied): latencies, waits,
// stream durations.
inline constexpr std::array<double, 15> kSecondsBounds = {
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
    1,      5,      10,    60,    300,  900,  3600};
// Upper bounds of a count (records per commit and the like).
inline constexpr std::array<double, 12> kCountBounds = {
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};

// A histogram's figures: per-bucket counts (not cumulative; the last is
// +Inf), their total and the sum of the observed values.
struct HistogramSnapshot {
  static constexpr size_t kMaxBounds = 15;
  std::span<const double> bounds;  // A static array: kSecondsBounds, ...
  std::array<uint64_t, kMaxBounds + 1> buckets{};
  uint64_t count = 0;
  double sum = 0;
};

class Histogram {
 public:
  // `bounds`: ascending, static, at most HistogramSnapshot::kMaxBounds.
  explicit Histogram(std::span<const double> bounds) { data_.bounds = bounds; }
  void Observe(double value);
  const HistogramSnapshot& snapshot() const { return data_; }

 private:
  HistogramSnapshot data_;
};

class AtomicHistogram {
 public:
  explicit AtomicHistogram(std::span<const double> bounds) : bounds_(bounds) {}
  void Observe(double value);
  HistogramSnapshot Snapshot() const;

 private:
  const std::span<const double> bounds_;
  std::array<std::atomic<uint64_t>, HistogramSnapshot::kMaxBounds + 1>
      buckets_{};
  // The sum in nanounits (integral, so a relaxed fetch_add suffices).
  std::atomic<uint64_t> sum_nanos_{0};
};

// The bucket `value` falls in: the first bound >= value, else the +Inf one.
size_t BucketOf(std::span<const double> bounds, double value);

}  // namespace jobd

#endif  // JOBD_SERVER_TELEMETRY_HISTOGRAM_H_
