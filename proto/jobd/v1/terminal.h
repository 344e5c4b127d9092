// Which events and states end a job: part of the public contract, like the
// .proto (a RETRYING event, a PROGRESS event or a WAITING state end
// nothing). Shared by the daemon, its clients and the tests, so that no
// one compares enum values by order. Header-only, stateless.
#ifndef JOBD_PROTO_JOBD_V1_TERMINAL_H_
#define JOBD_PROTO_JOBD_V1_TERMINAL_H_

#include "jobd/v1/jobd.pb.h"

namespace jobd::v1 {

// SUCCEEDED, FAILED or CANCELLED: the job's one terminal event.
inline bool IsTerminalEvent(EventType type) {
  return type == EVENT_TYPE_SUCCEEDED || type == EVENT_TYPE_FAILED ||
         type == EVENT_TYPE_CANCELLED;
}

// A terminal event, or a REJECTED one (a spec that never became a job):
// what ends a Submit stream item either way.
inline bool EndsSubmitItem(EventType type) {
  return IsTerminalEvent(type) || type == EVENT_TYPE_REJECTED;
}

inline bool IsTerminalState(JobState state) {
  return state == JOB_STATE_SUCCEEDED || state == JOB_STATE_FAILED ||
         state == JOB_STATE_CANCELLED;
}

}  // namespace jobd::v1

#endif  // JOBD_PROTO_JOBD_V1_TERMINAL_H_
