// A schedule's definition, checked (ValidateScheduleId, Timing::Parse), and
// its slots: the instants it fires at, from a cron expression in a time
// zone (cron.h) or a fixed interval (multiples of it since the Unix epoch,
// so that they do not depend on when jobd started). A pure part: no clock,
// no I/O.
//
// Errors name the field, under the prefix the caller gives ("spec" for an
// RPC, "schedule[2]" for the config file): `spec.time_zone: unknown time
// zone "Mars/Olympus"`, `spec.cron: cron expression "0 25 * * *": field
// hour at position 3: 25 is out of range 0-23`.
//
// Thread-safety: immutable values; use from any thread.
#ifndef JOBD_SERVER_SCHEDULES_SCHEDULE_H_
#define JOBD_SERVER_SCHEDULES_SCHEDULE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/schedules/cron.h"

namespace jobd::schedules {

// A schedule id: 1-64 bytes of letters, digits, '.', '_', '-'.
absl::Status ValidateScheduleId(std::string_view id, std::string_view field);

class Timing {
 public:
  // The timing part of `spec` (cron or interval, time zone). The job
  // template is checked apart (ScheduleRunner's MakeJob).
  static absl::StatusOr<Timing> Parse(const v1::ScheduleSpec& spec,
                                      std::string_view prefix);

  // The first slot strictly after `after` (InfiniteFuture() if none).
  absl::Time Next(absl::Time after) const;

  // The slots in (after, now]: how many (counted up to `cap`; more count
  // as `cap`) and the latest (InfinitePast() if none).
  struct Due {
    uint64_t count = 0;
    absl::Time latest = absl::InfinitePast();
  };
  Due DueIn(absl::Time after, absl::Time now, uint64_t cap = 10000) const;

 private:
  Timing() = default;
  std::optional<CronExpr> cron_;
  absl::TimeZone zone_;
  int64_t interval_s_ = 0;  // With no cron.
};

}  // namespace jobd::schedules

#endif  // JOBD_SERVER_SCHEDULES_SCHEDULE_H_
