// The retry and delay options (--max-delay, --retry-*, --task-retries)
// into the spec limits the frontend validates with (README: Retries,
// delays and deadlines), each refusal naming its flag.
//
// Thread-safety: a pure function. Ownership: none.
#ifndef JOBD_SERVER_CONFIG_RETRY_OPTIONS_H_
#define JOBD_SERVER_CONFIG_RETRY_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/frontend/spec_validator.h"

namespace jobd {

absl::Status ApplyRetryOptions(const std::string& max_delay, uint32_t attempts,
                               const std::string& initial,
                               const std::string& max_backoff,
                               double multiplier,
                               const std::vector<std::string>& task_retries,
                               SpecLimits& limits);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_RETRY_OPTIONS_H_
