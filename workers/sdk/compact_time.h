// CompactTime: an absl::Time kept in 8 bytes instead of 16, for records
// held by the hundred thousand (the scheduler's jobs and events, the
// reactor's waiting jobs).
//
// Thread-safety: a plain value.
#ifndef JOBD_WORKERS_SDK_COMPACT_TIME_H_
#define JOBD_WORKERS_SDK_COMPACT_TIME_H_

#include <cstdint>
#include <limits>

#include "absl/time/time.h"

namespace jobd {

// An absl::Time as Unix nanoseconds (1678 to 2262; the infinite past and
// future are kept as such, finite times beyond are clamped to the range),
// converting implicitly both ways.
class CompactTime {
 public:
  CompactTime() = default;
  CompactTime(absl::Time t)  // NOLINT: implicit by design.
      : ns_(t == absl::InfinitePast()     ? kPast
            : t == absl::InfiniteFuture() ? kFuture
                                          : Clamp(absl::ToUnixNanos(t))) {}
  operator absl::Time() const {  // NOLINT: implicit by design.
    return ns_ == kPast     ? absl::InfinitePast()
           : ns_ == kFuture ? absl::InfiniteFuture()
                            : absl::FromUnixNanos(ns_);
  }

 private:
  static constexpr int64_t kPast = std::numeric_limits<int64_t>::min();
  static constexpr int64_t kFuture = std::numeric_limits<int64_t>::max();
  static int64_t Clamp(int64_t ns) {
    return ns == kPast ? kPast + 1 : ns == kFuture ? kFuture - 1 : ns;
  }
  int64_t ns_ = 0;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_COMPACT_TIME_H_
