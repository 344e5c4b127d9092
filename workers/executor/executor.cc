#include "workers/executor/executor.h"

namespace jobd {

void SetOutcomeError(JobOutcome& outcome, absl::Status status,
                     const CancelToken& cancel, bool out_of_memory) {
  outcome.status = std::move(status);
  switch (cancel.reason()) {
    case CancelReason::kTimeout:
      outcome.reason = v1::ERROR_REASON_TIMEOUT;
      break;
    case CancelReason::kCancelled:
      outcome.reason = v1::ERROR_REASON_CANCELLED;
      break;
    case CancelReason::kShutdown:
      outcome.reason = v1::ERROR_REASON_SHUTDOWN;
      break;
    case CancelReason::kNone:
      outcome.reason = out_of_memory ? v1::ERROR_REASON_OUT_OF_MEMORY
                                     : v1::ERROR_REASON_TASK_ERROR;
      break;
  }
}

}  // namespace jobd
