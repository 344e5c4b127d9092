// CronExpr: a cron expression, parsed once, and its next fire time after a
// given instant in a time zone. A pure value: no clock, no I/O.
//
//   [second] minute hour day-of-month month day-of-week
//
// Five fields (the second is then 0) or six (the second first). Each field
// is a comma-separated list of `*`, a value, a range `a-b`, or a step
// `*/n`, `a/n` (from a to the field's end) or `a-b/n`; `?` is `*` in the
// day fields. Months take jan..dec, days of the week sun..sat (0 or 7 is
// Sunday), case-insensitive. `@yearly` (`@annually`), `@monthly`, `@weekly`,
// `@daily` (`@midnight`) and `@hourly` stand for their usual five fields.
// Day-of-month and day-of-week: when both are restricted (neither is `*` or
// `?`), a day matches if either does (Vixie cron's rule, as croniter).
//
// Time zones and daylight saving: the expression matches civil times of the
// zone. A matching civil time that falls in a gap (clocks jump forward)
// fires at the end of the gap, unless the hour field is `*` (an expression
// that runs every hour simply has no run in the skipped hour); one that
// occurs twice (clocks go back) fires at its first occurrence, and also at
// its second when the hour field is `*`. So a daily job runs once a day,
// and an hourly one once every real hour.
//
// Errors (Parse) name the field and the 1-based character position:
//   cron expression "0 25 * * *": field hour at position 3: 25 is out of
//   range 0-23
//
// Thread-safety: immutable after Parse; copies may be used from any thread.
#ifndef JOBD_SERVER_SCHEDULES_CRON_H_
#define JOBD_SERVER_SCHEDULES_CRON_H_

#include <bitset>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace jobd::schedules {

class CronExpr {
 public:
  static absl::StatusOr<CronExpr> Parse(std::string_view text);

  // The first fire time strictly after `after`, in `tz`; InfiniteFuture()
  // if there is none within 50 years (e.g. "0 0 30 2 *").
  absl::Time Next(absl::Time after, const absl::TimeZone& tz) const;

  // The expression as given.
  const std::string& text() const { return text_; }

 private:
  CronExpr() = default;
  // The first civil second >= `from` that matches, or a year after `limit`
  // if none does before it.
  absl::CivilSecond NextMatch(absl::CivilSecond from,
                              absl::CivilYear limit) const;
  bool DayMatches(absl::CivilDay day) const;

  std::string text_;
  std::bitset<60> seconds_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;        // 1..31.
  std::bitset<13> months_;      // 1..12.
  std::bitset<7> weekdays_;     // 0 = Sunday.
  bool days_star_ = false;      // Day-of-month is `*` or `?`.
  bool weekdays_star_ = false;  // Day-of-week is `*` or `?`.
  bool hours_star_ = false;     // Every hour (DST rules above).
};

}  // namespace jobd::schedules

#endif  // JOBD_SERVER_SCHEDULES_CRON_H_
