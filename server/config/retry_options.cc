#include "server/config/retry_options.h"

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "server/config/duration_flag.h"
#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

absl::Status ApplyRetryOptions(const std::string& max_delay, uint32_t attempts,
                               const std::string& initial,
                               const std::string& max_backoff,
                               double multiplier,
                               const std::vector<std::string>& task_retries,
                               SpecLimits& limits) {
  absl::Status s =
      ParseDurationFlag(max_delay, "max-delay", &limits.max_delay, false);
  if (!s.ok()) return s;
  absl::Duration first, cap;
  s = ParseDurationFlag(initial, "retry-initial-backoff", &first, true);
  if (!s.ok()) return s;
  s = ParseDurationFlag(max_backoff, "retry-max-backoff", &cap, true);
  if (!s.ok()) return s;
  if (cap < first) {
    return absl::InvalidArgumentError(
        "--retry-max-backoff: less than --retry-initial-backoff");
  }
  if (cap > limits.max_delay) {
    return absl::InvalidArgumentError(
        "--retry-max-backoff: more than --max-delay");
  }
  auto over_limit = [&](uint32_t n, const std::string& flag) {
    return absl::InvalidArgumentError(
        fmt::format("--{}: {} runs is more than --retry-max-attempts-limit "
                    "({})",
                    flag, n, limits.max_attempts_limit));
  };
  if (attempts > limits.max_attempts_limit) {
    return over_limit(attempts, "retry-attempts");
  }
  v1::RetryPolicy& policy = limits.default_retry;
  policy.set_max_attempts(attempts);
  *policy.mutable_initial_backoff() = ToProtoDuration(first);
  *policy.mutable_max_backoff() = ToProtoDuration(cap);
  policy.set_backoff_multiplier(multiplier);
  limits.task_retries.clear();
  for (const std::string& entry : task_retries) {
    const size_t eq = entry.rfind('=');
    uint32_t n = 0;  // Retries after the first run.
    if (eq == std::string::npos || eq == 0 ||
        !absl::SimpleAtoi(entry.substr(eq + 1), &n) ||
        n >= limits.max_attempts_limit) {
      return absl::InvalidArgumentError(fmt::format(
          "--task-retries: '{}' is not TASK=N (N retries after the first "
          "run, 0 to {}: --retry-max-attempts-limit runs in all)",
          entry, limits.max_attempts_limit - 1));
    }
    limits.task_retries[entry.substr(0, eq)] = n + 1;  // Runs in all.
  }
  return absl::OkStatus();
}

}  // namespace jobd
