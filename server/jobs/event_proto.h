// An event as clients see it: the scheduler's Event to a jobd.v1
// JobEvent, for the RPC edge (server/frontend/convert.h) and for the
// cluster's forwarding of a job's events to a watcher on another node
// (server/cluster/job_router.h). Stateless.
#ifndef JOBD_SERVER_JOBS_EVENT_PROTO_H_
#define JOBD_SERVER_JOBS_EVENT_PROTO_H_

#include <cstdint>

#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"

namespace jobd {

// Fills `out` from `event` as seen by a subscriber with `client_tag`.
void ToProto(const Event& event, uint64_t client_tag, v1::JobEvent* out);

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_EVENT_PROTO_H_
