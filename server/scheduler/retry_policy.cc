#include "server/scheduler/retry_policy.h"

#include <algorithm>
#include <cmath>

#include "server/jobs/proto_time.h"

namespace jobd {

absl::Time FirstDue(const v1::JobSpec& spec, absl::Time create_time) {
  absl::Time due = create_time;
  if (spec.has_not_before())
    due = std::max(due, FromProtoTime(spec.not_before()));
  if (spec.has_delay())
    due = std::max(due, create_time + FromProto(spec.delay()));
  return due;
}

absl::Time StartExpiry(const v1::JobSpec& spec, absl::Time due) {
  return spec.has_start_deadline() ? due + FromProto(spec.start_deadline())
                                   : absl::InfiniteFuture();
}

absl::Time TotalExpiry(const v1::JobSpec& spec, absl::Time due) {
  return spec.has_total_deadline() ? due + FromProto(spec.total_deadline())
                                   : absl::InfiniteFuture();
}

uint32_t MaxAttempts(const v1::RetryPolicy& policy) {
  return std::max<uint32_t>(1, policy.max_attempts());
}

bool RetriesOn(const v1::RetryPolicy& policy, v1::ErrorReason reason) {
  switch (reason) {
    case v1::ERROR_REASON_TASK_ERROR:
    case v1::ERROR_REASON_TIMEOUT:
    case v1::ERROR_REASON_WORKER_CRASHED:
    case v1::ERROR_REASON_OUT_OF_MEMORY:
      break;
    default:
      return false;  // Never a cancel, an invalid input, a deadline...
  }
  if (policy.retry_on().empty()) return true;
  return std::find(policy.retry_on().begin(), policy.retry_on().end(),
                   reason) != policy.retry_on().end();
}

absl::Duration BackoffCeiling(const v1::RetryPolicy& policy, uint32_t failed) {
  const absl::Duration initial = policy.has_initial_backoff()
                                     ? FromProto(policy.initial_backoff())
                                     : absl::ZeroDuration();
  const absl::Duration cap = policy.has_max_backoff()
                                 ? FromProto(policy.max_backoff())
                                 : absl::InfiniteDuration();
  const double multiplier = std::max(1.0, policy.backoff_multiplier());
  const double factor = std::pow(
      multiplier, static_cast<double>(std::max<uint32_t>(failed, 1) - 1));
  // In seconds: a large factor saturates instead of overflowing.
  const double seconds = absl::ToDoubleSeconds(initial) * factor;
  const absl::Duration raw = std::isfinite(seconds) && seconds < 1e12
                                 ? absl::Seconds(seconds)
                                 : absl::InfiniteDuration();
  return std::max(absl::ZeroDuration(), std::min(raw, cap));
}

absl::Duration Backoff(const v1::RetryPolicy& policy, uint32_t failed,
                       double u) {
  const absl::Duration ceiling = BackoffCeiling(policy, failed);
  if (ceiling == absl::InfiniteDuration()) return ceiling;
  return ceiling * std::clamp(u, 0.0, 1.0);
}

std::shared_ptr<const std::string> AppendAttempt(
    const std::shared_ptr<const std::string>& history,
    const v1::JobAttempt& attempt) {
  v1::Job holder;
  if (history != nullptr) holder.ParseFromString(*history);
  *holder.add_history() = attempt;
  const int extra = holder.history_size() - kMaxHistoryAttempts;
  if (extra > 0) holder.mutable_history()->DeleteSubrange(0, extra);
  auto out = std::make_shared<std::string>();
  holder.SerializeToString(out.get());
  return out;
}

}  // namespace jobd
