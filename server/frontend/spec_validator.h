// Spec validation: turns a client's JobSpec into a NewJob the scheduler can
// admit, or an InvalidArgument status whose message names the offending field
// (spec.task, spec.args[1], spec.kwargs.ms, spec.timeout, spec.delay,
// spec.retry.max_attempts, ...).
//
// Stateless and thread-safe; the registry must outlive the call.
#ifndef JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_
#define JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// Per-spec limits (configurable; see server/config.h).
struct SpecLimits {
  size_t max_payload_bytes = 1 << 20;
  size_t max_labels = 64;
  size_t max_label_bytes = 1024;  // Key or value.
  size_t max_idempotency_key_bytes = 256;
  int max_value_depth = 32;         // Nesting of args/kwargs lists and objects.
  size_t max_args_bytes = 1 << 20;  // args + kwargs, serialized.
  // Jobs over time (README: Retries, delays and deadlines).
  uint32_t max_attempts_limit = 10;  // --retry-max-attempts-limit
  absl::Duration max_delay = absl::Hours(24 * 365);  // --max-delay
  // What a spec's retry policy leaves unset (--retry-*); max_attempts 1:
  // no retries unless the spec asks.
  v1::RetryPolicy default_retry = DefaultRetryPolicy();
  // Most entries of spec.depends_on (--max-dependencies).
  size_t max_dependencies = 1000;
  // Whether spec.depends_on may name another node's job (cluster mode).
  bool remote_dependencies = false;
  // Whether a spec may ask to stay out of the journal (spec.in_memory;
  // --in-memory-jobs allow|forbid).
  bool allow_in_memory = true;
  // Per task: its default max_attempts (--task-retries name=N).
  std::map<std::string, uint32_t> task_retries;

  static v1::RetryPolicy DefaultRetryPolicy();
  // Where spec.callback_url may point (server/callbacks/callback_url.h);
  // empty: no callbacks.
  std::vector<std::string> callback_allowed_prefixes;
};

// True if `value` is a W3C Trace Context traceparent this jobd keeps:
// "<version>-<trace-id>-<parent-id>-<flags>", lowercase hex, 2-32-16-2
// digits, version not "ff", ids not all zeros; version 00 exactly that,
// a later version may go on after a '-' (at most 256 bytes in all).
bool IsValidTraceparent(std::string_view value);

// Validates `spec` (consumed) against the registry and limits, at `now`
// (not_before past now + max_delay is refused). Its retry policy is
// completed from the task's and the daemon's defaults (kept only when it
// allows more than one attempt). `rpc_deadline` (a Submit stream's, or
// InfiniteFuture) becomes the start_deadline of a spec that is due at
// once (no delay, no dependencies) and sets none. spec.depends_on is
// checked for its form and count here; whether its jobs exist, by the
// scheduler at admission.
absl::StatusOr<NewJob> ValidateSpec(
    v1::JobSpec spec, const TaskRegistry& registry, const SpecLimits& limits,
    absl::Time now = absl::Now(),
    absl::Time rpc_deadline = absl::InfiniteFuture());

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_
