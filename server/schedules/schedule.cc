#include "server/schedules/schedule.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace jobd::schedules {
namespace {

absl::string_view SV(std::string_view s) { return {s.data(), s.size()}; }

int64_t FloorDiv(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

}  // namespace

absl::Status ValidateScheduleId(std::string_view id, std::string_view field) {
  if (id.empty() || id.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(SV(field), ": must be 1 to 64 bytes, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
          c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat(
          SV(field), ": byte ", i + 1,
          " is not a letter, digit, '.', '_' or '-' (ids are plain names)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Timing> Timing::Parse(const v1::ScheduleSpec& spec,
                                     std::string_view prefix) {
  Timing timing;
  const bool has_interval = spec.has_interval();
  if (spec.cron().empty() == !has_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        SV(prefix), ": give exactly one of cron and interval, got ",
        spec.cron().empty() ? "neither" : "both"));
  }
  if (has_interval) {
    const google::protobuf::Duration& d = spec.interval();
    if (d.nanos() != 0 || d.seconds() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          SV(prefix), ".interval: must be whole seconds, at least 1 s, got ",
          d.seconds(), "s ", d.nanos(), "ns"));
    }
    if (d.seconds() > 366LL * 24 * 3600 * 100) {
      return absl::InvalidArgumentError(absl::StrCat(
          SV(prefix), ".interval: at most 100 years, got ", d.seconds(), "s"));
    }
    if (!spec.time_zone().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          SV(prefix), ".time_zone: only a cron schedule has a time zone"));
    }
    timing.interval_s_ = d.seconds();
    return timing;
  }
  absl::StatusOr<CronExpr> cron = CronExpr::Parse(spec.cron());
  if (!cron.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(SV(prefix), ".cron: ", cron.status().message()));
  }
  timing.cron_ = *std::move(cron);
  timing.zone_ = absl::UTCTimeZone();
  if (!spec.time_zone().empty()) {
    // Names only: LoadTimeZone also takes file paths, which is not ours to
    // offer.
    const std::string& name = spec.time_zone();
    const bool plain = name.size() <= 64 && name[0] != '/' &&
                       name.find("..") == name.npos &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) ||
                                c == '/' || c == '_' || c == '-' || c == '+';
                       });
    if (!plain || !absl::LoadTimeZone(name, &timing.zone_)) {
      return absl::InvalidArgumentError(absl::StrCat(
          SV(prefix), ".time_zone: unknown time zone \"",
          plain ? name : name.substr(0, 64),
          "\" (an IANA name such as Europe/Berlin; is tzdata installed?)"));
    }
  }
  return timing;
}

absl::Time Timing::Next(absl::Time after) const {
  if (cron_) return cron_->Next(after, zone_);
  if (after == absl::InfiniteFuture()) return after;
  if (after == absl::InfinitePast()) return after;
  const int64_t k = FloorDiv(absl::ToUnixSeconds(after), interval_s_);
  return absl::FromUnixSeconds((k + 1) * interval_s_);
}

Timing::Due Timing::DueIn(absl::Time after, absl::Time now,
                          uint64_t cap) const {
  Due due;
  if (now <= after) return due;
  if (!cron_) {
    const int64_t last = FloorDiv(absl::ToUnixSeconds(now), interval_s_);
    const int64_t first = FloorDiv(absl::ToUnixSeconds(after), interval_s_);
    if (last <= first) return due;
    due.count = std::min<uint64_t>(last - first, cap);
    due.latest = absl::FromUnixSeconds(last * interval_s_);
    return due;
  }
  // Counted one by one up to the cap.
  for (absl::Time t = Next(after); t <= now; t = Next(t)) {
    due.latest = t;
    if (++due.count >= cap) break;
  }
  if (due.count < cap) return due;
  // Past the cap: the latest slot, looked for in growing windows back from
  // now.
  for (absl::Duration window :
       {absl::Minutes(1), absl::Hours(1), absl::Hours(24), absl::Hours(24 * 32),
        absl::Hours(24 * 400), absl::InfiniteDuration()}) {
    absl::Time from = window == absl::InfiniteDuration()
                          ? due.latest
                          : std::max(due.latest, now - window);
    absl::Time t = Next(from);
    if (t > now) continue;
    for (int i = 0; i < 100000; ++i) {
      const absl::Time next = Next(t);
      if (next > now) break;
      t = next;
    }
    due.latest = t;
    break;
  }
  return due;
}

}  // namespace jobd::schedules
