#include "server/jobs/job_types.h"

namespace jobd {

bool IsTerminal(v1::EventType type) {
  return type == v1::EVENT_TYPE_SUCCEEDED || type == v1::EVENT_TYPE_FAILED ||
         type == v1::EVENT_TYPE_CANCELLED;
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

}  // namespace jobd
