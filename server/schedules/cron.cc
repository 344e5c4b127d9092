#include "server/schedules/cron.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace jobd::schedules {
namespace {

// Debian's absl::StrCat takes absl::string_view only.
absl::string_view SV(std::string_view s) { return {s.data(), s.size()}; }

struct FieldDef {
  const char* name;
  int min, max;
  // Names for values from `min` on (months from 1, weekdays from 0).
  const std::array<const char*, 12>* names = nullptr;
};

constexpr std::array<const char*, 12> kMonths = {"jan", "feb", "mar", "apr",
                                                 "may", "jun", "jul", "aug",
                                                 "sep", "oct", "nov", "dec"};
constexpr std::array<const char*, 12> kWeekdays = {
    "sun", "mon", "tue", "wed", "thu", "fri", "sat", "", "", "", "", ""};

const FieldDef kFields[6] = {
    {"second", 0, 59},
    {"minute", 0, 59},
    {"hour", 0, 23},
    {"day-of-month", 1, 31},
    {"month", 1, 12, &kMonths},
    {"day-of-week", 0, 7, &kWeekdays},
};

// One field of the expression being parsed: its text and where it starts.
class FieldParser {
 public:
  FieldParser(std::string_view expr, const FieldDef& def, std::string_view text,
              size_t offset)
      : expr_(expr), def_(def), text_(text), offset_(offset) {}

  // Sets the values the field matches in `out` (indexed by value).
  absl::Status Parse(std::vector<bool>& out, bool& star) {
    out.assign(def_.max + 1, false);
    star = text_ == "*" || text_ == "?";
    if (text_ == "?" && def_.names != &kWeekdays &&
        std::string_view(def_.name) != "day-of-month") {
      return Error(0, "'?' is allowed only in the day fields");
    }
    size_t start = 0;
    while (true) {
      size_t comma = text_.find(',', start);
      size_t end = comma == std::string_view::npos ? text_.size() : comma;
      if (absl::Status s = Item(start, end, out); !s.ok()) return s;
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(size_t at, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("cron expression \"", SV(expr_), "\": field ", def_.name,
                     " at position ", offset_ + at + 1, ": ", SV(what)));
  }

  // A value (number or name) at text_[at, end): its value, or an error.
  absl::Status Value(size_t at, size_t end, int& value) const {
    std::string_view v = text_.substr(at, end - at);
    if (v.empty()) return Error(at, "a value is missing");
    if (std::isdigit(static_cast<unsigned char>(v[0]))) {
      long n = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        if (!std::isdigit(static_cast<unsigned char>(v[i]))) {
          return Error(at + i, absl::StrCat("unexpected '", SV(v.substr(i, 1)),
                                            "' in \"", SV(v), "\""));
        }
        n = n * 10 + (v[i] - '0');
        if (n > 1000) break;
      }
      if (n < def_.min || n > def_.max) {
        return Error(at, absl::StrCat(SV(v), " is out of range ", def_.min, "-",
                                      def_.max));
      }
      value = static_cast<int>(n);
      return absl::OkStatus();
    }
    if (def_.names != nullptr) {
      std::string lower = absl::AsciiStrToLower(std::string(v));
      for (size_t i = 0; i < def_.names->size(); ++i) {
        if (lower == (*def_.names)[i] && *(*def_.names)[i] != '\0') {
          value = static_cast<int>(i) + (def_.names == &kMonths ? 1 : 0);
          return absl::OkStatus();
        }
      }
      return Error(at, absl::StrCat("unknown name \"", SV(v), "\""));
    }
    return Error(at, absl::StrCat("\"", SV(v), "\" is not a number"));
  }

  // One list item at text_[start, end).
  absl::Status Item(size_t start, size_t end, std::vector<bool>& out) const {
    if (start == end) return Error(start, "an empty list item");
    size_t slash = text_.find('/', start);
    if (slash >= end) slash = std::string_view::npos;
    size_t range_end = slash == std::string_view::npos ? end : slash;
    int lo = def_.min, hi = def_.max, step = 1;
    if (text_.substr(start, range_end - start) == "*" ||
        text_.substr(start, range_end - start) == "?") {
      // The whole range.
    } else {
      size_t dash = text_.find('-', start);
      if (dash >= range_end) dash = std::string_view::npos;
      if (absl::Status s = Value(
              start, dash == std::string_view::npos ? range_end : dash, lo);
          !s.ok()) {
        return s;
      }
      if (dash != std::string_view::npos) {
        if (absl::Status s = Value(dash + 1, range_end, hi); !s.ok()) return s;
        if (hi < lo) {
          return Error(
              start,
              absl::StrCat("range ", SV(text_.substr(start, range_end - start)),
                           " goes backwards"));
        }
      } else if (slash == std::string_view::npos) {
        hi = lo;
      }
    }
    if (slash != std::string_view::npos) {
      std::string_view s = text_.substr(slash + 1, end - slash - 1);
      if (s.empty()) return Error(slash + 1, "a step is missing after '/'");
      long n = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) {
          return Error(slash + 1 + i,
                       absl::StrCat("step \"", SV(s), "\" is not a number"));
        }
        n = n * 10 + (s[i] - '0');
        if (n > 1000) break;
      }
      if (n < 1 || n > def_.max - def_.min + 1) {
        return Error(slash + 1,
                     absl::StrCat("step ", SV(s), " is out of range 1-",
                                  def_.max - def_.min + 1));
      }
      step = static_cast<int>(n);
    }
    for (int v = lo; v <= hi; v += step) out[v] = true;
    return absl::OkStatus();
  }

  std::string_view expr_;
  const FieldDef& def_;
  std::string_view text_;
  size_t offset_;
};

std::optional<std::string_view> Macro(std::string_view text) {
  static constexpr std::pair<const char*, const char*> kMacros[] = {
      {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"},
  };
  for (const auto& [name, fields] : kMacros) {
    if (text == name) return fields;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<CronExpr> CronExpr::Parse(std::string_view text) {
  CronExpr expr;
  expr.text_ = std::string(text);
  std::string_view body = text;
  if (!text.empty() && text[0] == '@') {
    std::optional<std::string_view> fields = Macro(text);
    if (!fields) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cron expression \"", SV(text),
          "\": unknown macro (expected @yearly, @annually, @monthly, @weekly, "
          "@daily, @midnight or @hourly)"));
    }
    body = *fields;
  }
  // Split on spaces and tabs, remembering where each field starts.
  std::vector<std::pair<std::string_view, size_t>> fields;
  for (size_t i = 0; i < body.size();) {
    if (body[i] == ' ' || body[i] == '\t') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < body.size() && body[j] != ' ' && body[j] != '\t') ++j;
    fields.emplace_back(body.substr(i, j - i), i);
    i = j;
  }
  if (fields.size() != 5 && fields.size() != 6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cron expression \"", SV(text), "\": has ", fields.size(),
        " fields; expected 5 (minute hour day-of-month month day-of-week) or "
        "6 (second first)"));
  }
  const bool with_seconds = fields.size() == 6;
  std::vector<bool> values[6];
  bool stars[6] = {};
  for (size_t f = 0; f < 6; ++f) {
    if (!with_seconds && f == 0) {
      values[0].assign(60, false);
      values[0][0] = true;
      continue;
    }
    const auto& [field, offset] = fields[with_seconds ? f : f - 1];
    FieldParser parser(text, kFields[f], field, offset);
    if (absl::Status s = parser.Parse(values[f], stars[f]); !s.ok()) return s;
  }
  for (int v = 0; v < 60; ++v) expr.seconds_[v] = values[0][v];
  for (int v = 0; v < 60; ++v) expr.minutes_[v] = values[1][v];
  for (int v = 0; v < 24; ++v) expr.hours_[v] = values[2][v];
  for (int v = 1; v <= 31; ++v) expr.days_[v] = values[3][v];
  for (int v = 1; v <= 12; ++v) expr.months_[v] = values[4][v];
  for (int v = 0; v <= 7; ++v) {
    if (values[5][v]) expr.weekdays_[v % 7] = true;
  }
  expr.days_star_ = stars[3];
  expr.weekdays_star_ = stars[5];
  expr.hours_star_ = expr.hours_.all();
  return expr;
}

bool CronExpr::DayMatches(absl::CivilDay day) const {
  if (!months_[day.month()]) return false;
  int weekday = 0;
  switch (absl::GetWeekday(day)) {
    case absl::Weekday::sunday:
      weekday = 0;
      break;
    case absl::Weekday::monday:
      weekday = 1;
      break;
    case absl::Weekday::tuesday:
      weekday = 2;
      break;
    case absl::Weekday::wednesday:
      weekday = 3;
      break;
    case absl::Weekday::thursday:
      weekday = 4;
      break;
    case absl::Weekday::friday:
      weekday = 5;
      break;
    case absl::Weekday::saturday:
      weekday = 6;
      break;
  }
  const bool by_day = days_[day.day()];
  const bool by_weekday = weekdays_[weekday];
  if (days_star_ || weekdays_star_) return by_day && by_weekday;
  return by_day || by_weekday;
}

absl::CivilSecond CronExpr::NextMatch(absl::CivilSecond from,
                                      absl::CivilYear limit) const {
  absl::CivilDay day(from);
  int h0 = from.hour(), m0 = from.minute(), s0 = from.second();
  while (absl::CivilYear(day) <= limit) {
    if (!months_[day.month()]) {
      day = absl::CivilDay(absl::CivilMonth(day) + 1);
      h0 = m0 = s0 = 0;
      continue;
    }
    if (DayMatches(day)) {
      for (int h = h0; h < 24; ++h) {
        if (!hours_[h]) continue;
        for (int m = h == h0 ? m0 : 0; m < 60; ++m) {
          if (!minutes_[m]) continue;
          for (int s = h == h0 && m == m0 ? s0 : 0; s < 60; ++s) {
            if (seconds_[s]) {
              return absl::CivilSecond(day.year(), day.month(), day.day(), h, m,
                                       s);
            }
          }
        }
      }
    }
    day += 1;
    h0 = m0 = s0 = 0;
  }
  return absl::CivilSecond(absl::CivilYear(limit) + 1);
}

absl::Time CronExpr::Next(absl::Time after, const absl::TimeZone& tz) const {
  if (after == absl::InfiniteFuture()) return after;
  // Whole seconds: the first candidate is the second after `after`'s.
  const absl::Time floor = absl::FromUnixSeconds(absl::ToUnixSeconds(after));
  // Civil times are walked in order; near an offset change their instants
  // are not: the walk starts early by the change (so that the second
  // occurrence of a repeated civil time is seen) and keeps the earliest
  // instant after `after` until civil times are surely past it.
  int spread = 0;
  {
    const int offsets[3] = {tz.At(floor - absl::Hours(48)).offset,
                            tz.At(floor).offset,
                            tz.At(floor + absl::Hours(48)).offset};
    spread = *std::max_element(offsets, offsets + 3) -
             *std::min_element(offsets, offsets + 3);
  }
  const absl::CivilSecond floor_civil = absl::ToCivilSecond(floor, tz);
  absl::CivilSecond civil = floor_civil - spread;
  const absl::CivilYear limit = absl::CivilYear(floor_civil) + 50;
  absl::Time best = absl::InfiniteFuture();
  absl::CivilSecond best_civil;
  while (true) {
    civil = NextMatch(civil, limit);
    if (absl::CivilYear(civil) > limit) break;
    if (best != absl::InfiniteFuture() && civil > best_civil + spread) break;
    const absl::TimeZone::TimeInfo info = tz.At(civil);
    absl::Time candidates[2] = {absl::InfiniteFuture(), absl::InfiniteFuture()};
    switch (info.kind) {
      case absl::TimeZone::TimeInfo::UNIQUE:
        candidates[0] = info.pre;
        break;
      case absl::TimeZone::TimeInfo::SKIPPED:
        if (!hours_star_) candidates[0] = info.trans;
        break;
      case absl::TimeZone::TimeInfo::REPEATED:
        candidates[0] = info.pre;
        if (hours_star_) candidates[1] = info.post;
        break;
    }
    for (absl::Time t : candidates) {
      if (t > floor && t < best) {
        best = t;
        best_civil = absl::ToCivilSecond(t, tz);
      }
    }
    civil += 1;
  }
  return best;
}

}  // namespace jobd::schedules
