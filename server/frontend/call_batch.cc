#include "server/frontend/call_batch.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>

#include "spdlog/fmt/fmt.h"
#include "workers/sdk/task_registry.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53.

enum class Kind { kNull, kBool, kNumber, kString, kList, kObject };

// One pass over the batch's bytes; every error names where it is.
class Scanner {
 public:
  explicit Scanner(std::string_view s)
      : begin_(s.data()), p_(s.data()), end_(s.data() + s.size()) {}

  void SkipSpace() {
    while (p_ < end_ &&
           (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) {
      ++p_;
    }
  }
  bool AtEnd() const { return p_ == end_; }
  // The next byte after spaces (0 at the end), not consumed.
  char Peek() {
    SkipSpace();
    return p_ < end_ ? *p_ : '\0';
  }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++p_;
    return true;
  }

  // "spec.calls: not JSON at byte N: <why>".
  absl::Status Error(std::string_view why) const {
    return absl::InvalidArgumentError(
        fmt::format("spec.calls: not JSON at byte {}: {}", p_ - begin_, why));
  }

  // Reads one value; `depth` levels of nesting are left for it (a list or
  // object takes one). Its kind and, for a number, its value.
  absl::Status Value(int depth, Kind* kind, double* number, bool* too_deep) {
    switch (Peek()) {
      case '{':
      case '[': {
        const bool object = *p_ == '{';
        const char close = object ? '}' : ']';
        *kind = object ? Kind::kObject : Kind::kList;
        if (depth <= 0) *too_deep = true;
        ++p_;
        if (Eat(close)) return absl::OkStatus();
        for (;;) {
          if (object) {
            if (Peek() != '"') return Error("expected a string key");
            if (absl::Status s = String(); !s.ok()) return s;
            if (!Eat(':')) return Error("expected ':'");
          }
          Kind k;
          double n;
          if (absl::Status s = Value(depth - 1, &k, &n, too_deep); !s.ok()) {
            return s;
          }
          if (Eat(',')) continue;
          if (Eat(close)) return absl::OkStatus();
          return Error(object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
      }
      case '"':
        *kind = Kind::kString;
        return String();
      case 't':
        *kind = Kind::kBool;
        return Word("true");
      case 'f':
        *kind = Kind::kBool;
        return Word("false");
      case 'n':
        *kind = Kind::kNull;
        return Word("null");
      case '\0':
        return Error("unexpected end");
      default:
        *kind = Kind::kNumber;
        return Number(number);
    }
  }

 private:
  absl::Status Word(std::string_view w) {
    if (static_cast<size_t>(end_ - p_) < w.size() ||
        std::string_view(p_, w.size()) != w) {
      return Error("not a JSON value");
    }
    p_ += w.size();
    return absl::OkStatus();
  }

  absl::Status String() {
    ++p_;  // The opening quote.
    while (p_ < end_) {
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return absl::OkStatus();
      }
      if (c < 0x20) return Error("a control character in a string");
      if (c == '\\') {
        if (++p_ == end_) break;
        switch (*p_) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't':
            ++p_;
            continue;
          case 'u':
            if (end_ - p_ < 5) return Error("a short \\u escape");
            for (int i = 1; i <= 4; ++i) {
              if (!std::isxdigit(static_cast<unsigned char>(p_[i]))) {
                return Error("a bad \\u escape");
              }
            }
            p_ += 5;
            continue;
          default:
            return Error("a bad escape in a string");
        }
      }
      ++p_;
    }
    return Error("an unterminated string");
  }

  absl::Status Number(double* out) {
    const char* start = p_;
    const char* q = p_;
    if (q < end_ && *q == '-') ++q;
    auto digits = [&] {
      const char* d = q;
      while (q < end_ && *q >= '0' && *q <= '9') ++q;
      return q - d;
    };
    const char* int_start = q;
    if (q < end_ && *q == '0') {
      ++q;
    } else if (digits() == 0) {
      return Error("not a JSON value");
    }
    const char* int_end = q;
    bool integral = true;
    if (q < end_ && *q == '.') {
      ++q;
      integral = false;
      if (digits() == 0) return Error("a number without digits after '.'");
    }
    if (q < end_ && (*q == 'e' || *q == 'E')) {
      ++q;
      integral = false;
      if (q < end_ && (*q == '+' || *q == '-')) ++q;
      if (digits() == 0) return Error("a number without exponent digits");
    }
    if (integral && int_end - int_start <= 15) {  // Exact in a double.
      int64_t n = 0;
      for (const char* c = int_start; c < int_end; ++c) n = n * 10 + (*c - '0');
      p_ = q;
      *out = static_cast<double>(*start == '-' ? -n : n);
      return absl::OkStatus();
    }
    double d = 0;
    const auto [ptr, ec] = std::from_chars(start, q, d);
    if (ec == std::errc::result_out_of_range) {
      d = (*start == '-') ? -HUGE_VAL : HUGE_VAL;  // Too large: not finite.
    } else if (ec != std::errc() || ptr != q) {
      return Error("not a JSON number");
    }
    p_ = q;
    *out = d;
    return absl::OkStatus();
  }

  const char* const begin_;
  const char* p_;
  const char* const end_;
};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return "bool";
    case Kind::kNumber:
      return "number";
    case Kind::kString:
      return "string";
    case Kind::kList:
      return "list";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

// Where argument `arg` of call `call` is: spec.calls[i][j], or in a flat
// batch (the call's only argument) spec.calls[i].
std::string Where(size_t call, size_t arg, bool flat) {
  return flat ? fmt::format("spec.calls[{}]", call)
              : fmt::format("spec.calls[{}][{}]", call, arg);
}

// The same judgement as CheckParamType (task_registry.h), on a kind.
absl::Status CheckType(Kind kind, double number, ParamType type, size_t call,
                       size_t arg, bool flat, const TaskParam& param) {
  bool ok = false;
  switch (type) {
    case ParamType::kAny:
      ok = true;
      break;
    case ParamType::kBool:
      ok = kind == Kind::kBool;
      break;
    case ParamType::kNumber:
      ok = kind == Kind::kNumber && std::isfinite(number);
      break;
    case ParamType::kInt:
      if (kind != Kind::kNumber) break;
      if (!std::isfinite(number) || std::trunc(number) != number) {
        return absl::InvalidArgumentError(
            fmt::format("{} ({}): expected int, got non-integral number {}",
                        Where(call, arg, flat), param.name, number));
      }
      if (std::fabs(number) > kMaxExactInt) {
        return absl::InvalidArgumentError(
            fmt::format("{} ({}): int out of range (|n| <= 2^53)",
                        Where(call, arg, flat), param.name));
      }
      ok = true;
      break;
    case ParamType::kString:
      ok = kind == Kind::kString;
      break;
    case ParamType::kList:
      ok = kind == Kind::kList;
      break;
    case ParamType::kObject:
      ok = kind == Kind::kObject;
      break;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "{} ({}): expected {}, got {}", Where(call, arg, flat), param.name,
      ParamTypeName(type),
      kind == Kind::kNumber && !std::isfinite(number) ? "a non-finite number"
                                                      : KindName(kind)));
}

// One call of a batch of argument arrays (JobSpec.calls): its array,
// each argument checked as a positional argument of `task`.
absl::Status Call(Scanner& in, const TaskDef& task, int max_depth,
                  size_t call) {
  const size_t params = task.params.size();
  if (in.Peek() != '[') {
    Kind k = Kind::kNull;
    double n = 0;
    bool deep = false;
    if (absl::Status s = in.Value(max_depth, &k, &n, &deep); !s.ok()) {
      return s;
    }
    return absl::InvalidArgumentError(fmt::format(
        "spec.calls[{}]: expected an array of positional arguments, got {}",
        call, KindName(k)));
  }
  in.Eat('[');
  size_t arg = 0;
  if (!in.Eat(']')) {
    for (;; ++arg) {
      Kind kind = Kind::kNull;
      double number = 0;
      bool too_deep = false;
      if (absl::Status s = in.Value(max_depth, &kind, &number, &too_deep);
          !s.ok()) {
        return s;
      }
      if (too_deep) {
        return absl::InvalidArgumentError(
            fmt::format("spec.calls[{}][{}]: nested deeper than {} levels",
                        call, arg, max_depth));
      }
      if (!task.variadic) {
        if (arg >= params) {
          return absl::InvalidArgumentError(fmt::format(
              "spec.calls[{}]: task '{}' takes at most {} positional "
              "argument(s), got more",
              call, task.name, params));
        }
        if (absl::Status s = CheckType(kind, number, task.params[arg].type,
                                       call, arg, false, task.params[arg]);
            !s.ok()) {
          return s;
        }
      }
      if (in.Eat(',')) continue;
      if (in.Eat(']')) break;
      return in.Error("expected ',' or ']'");
    }
    ++arg;
  }
  if (!task.variadic) {
    for (size_t i = arg; i < params; ++i) {
      if (task.params[i].required) {
        return absl::InvalidArgumentError(fmt::format(
            "spec.calls[{}][{}] ({}): task '{}' requires argument '{}' ({})",
            call, i, task.params[i].name, task.name, task.params[i].name,
            ParamTypeName(task.params[i].type)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBatchCalls(std::string_view calls, bool flat,
                             const TaskDef& task, int max_depth,
                             size_t* count) {
  *count = 0;
  const size_t params = task.params.size();
  if (flat && !task.variadic) {
    // One argument per call: the task must take one and need no other.
    if (params == 0) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.flat_calls: task '{}' takes no arguments; a flat batch "
          "passes one per call",
          task.name));
    }
    for (size_t i = 1; i < params; ++i) {
      if (task.params[i].required) {
        return absl::InvalidArgumentError(fmt::format(
            "spec.flat_calls: task '{}' requires argument '{}' ({}); a flat "
            "batch passes one per call (send argument arrays in spec.calls)",
            task.name, task.params[i].name,
            ParamTypeName(task.params[i].type)));
      }
    }
  }
  Scanner in(calls);
  if (!in.Eat('[')) {
    return absl::InvalidArgumentError(
        flat ? "spec.calls: expected a JSON array of arguments (a flat batch: "
               "one per call)"
             : "spec.calls: expected a JSON array of calls (each an array of "
               "positional arguments)");
  }
  if (in.Eat(']')) {
    return absl::InvalidArgumentError(
        "spec.calls: an empty batch (leave it unset for a job of one call)");
  }
  for (size_t call = 0;; ++call) {
    if (call == kMaxBatchCalls) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.calls: more than {} calls; send fewer per batch (a smaller "
          "chunksize)",
          kMaxBatchCalls));
    }
    if (flat) {
      Kind kind = Kind::kNull;
      double number = 0;
      bool too_deep = false;
      if (absl::Status s = in.Value(max_depth, &kind, &number, &too_deep);
          !s.ok()) {
        return s;
      }
      if (too_deep) {
        return absl::InvalidArgumentError(fmt::format(
            "spec.calls[{}]: nested deeper than {} levels", call, max_depth));
      }
      if (!task.variadic) {
        if (absl::Status s = CheckType(kind, number, task.params[0].type, call,
                                       0, true, task.params[0]);
            !s.ok()) {
          return s;
        }
      }
    } else if (absl::Status s = Call(in, task, max_depth, call); !s.ok()) {
      return s;
    }
    if (in.Eat(',')) continue;
    if (in.Eat(']')) {
      *count = call + 1;
      break;
    }
    return in.Error("expected ',' or ']' after a call");
  }
  in.SkipSpace();
  if (!in.AtEnd()) return in.Error("more after the batch's array");
  return absl::OkStatus();
}

}  // namespace jobd
