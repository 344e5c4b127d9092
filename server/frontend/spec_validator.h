// Spec validation: turns a client's JobSpec into a NewJob the scheduler can
// admit, or an InvalidArgument status whose message names the offending field
// (spec.task, spec.args[1], spec.kwargs.ms, spec.timeout, ...).
//
// Stateless and thread-safe; the registry must outlive the call.
#ifndef JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_
#define JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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
  // Where spec.callback_url may point (server/callbacks/callback_url.h);
  // empty: no callbacks.
  std::vector<std::string> callback_allowed_prefixes;
};

// Validates `spec` (consumed) against the registry and limits.
absl::StatusOr<NewJob> ValidateSpec(v1::JobSpec spec,
                                    const TaskRegistry& registry,
                                    const SpecLimits& limits);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_SPEC_VALIDATOR_H_
