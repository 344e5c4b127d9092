// Jobs over time, as pure functions of a spec: when a job is first due
// (a delay or not_before), its deadlines (start_deadline, total_deadline),
// whether a failed attempt is retried and after what backoff, and the
// bounded history of failed attempts a job keeps (README: Retries, delays
// and deadlines). The scheduler applies them (scheduler_time.cc).
//
// Thread-safety: pure functions. Ownership: none.
#ifndef JOBD_SERVER_SCHEDULER_RETRY_POLICY_H_
#define JOBD_SERVER_SCHEDULER_RETRY_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd {

// Failed attempts a job's history keeps (the latest).
inline constexpr int kMaxHistoryAttempts = 16;

// When a job accepted at `create_time` may first run: the latest of its
// acceptance, its not_before and its acceptance plus its delay.
absl::Time FirstDue(const v1::JobSpec& spec, absl::Time create_time);
// The latest a job first due at `due` may start its first attempt
// (InfiniteFuture without a start_deadline).
absl::Time StartExpiry(const v1::JobSpec& spec, absl::Time due);
// The latest any attempt may run (InfiniteFuture without a
// total_deadline).
absl::Time TotalExpiry(const v1::JobSpec& spec, absl::Time due);

// Runs allowed in all (at least 1).
uint32_t MaxAttempts(const v1::RetryPolicy& policy);
// Whether a failure for `reason` may be retried under `policy`: only
// TASK_ERROR, TIMEOUT, WORKER_CRASHED and OUT_OF_MEMORY ever are (all four
// when retry_on is empty).
bool RetriesOn(const v1::RetryPolicy& policy, v1::ErrorReason reason);
// The largest backoff after attempt `failed` (1 = the first) failed:
// min(max_backoff, initial_backoff * multiplier^(failed-1)).
absl::Duration BackoffCeiling(const v1::RetryPolicy& policy, uint32_t failed);
// The backoff after attempt `failed`, full jitter: `u` (uniform in [0, 1))
// times the ceiling.
absl::Duration Backoff(const v1::RetryPolicy& policy, uint32_t failed,
                       double u);

// `history` (the serialized bytes of a v1::Job holding only its history,
// or null) with `attempt` appended, the oldest dropped beyond
// kMaxHistoryAttempts. Its size is bounded: errors are cut to
// kMaxErrorMessageBytes.
std::shared_ptr<const std::string> AppendAttempt(
    const std::shared_ptr<const std::string>& history,
    const v1::JobAttempt& attempt);

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_RETRY_POLICY_H_
