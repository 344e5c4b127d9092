// Conversions at the RPC edge, in one place: absl::Status to grpc::Status
// (nowhere else), the scheduler's events to jobd.v1 JobEvents (that one in
// server/jobs/event_proto.h, which cluster mode uses too), a refused
// item's status to its REJECTED event, tasks to TaskInfo, the service's
// limits to ServerLimits, and job ids from their decimal strings.
// (Times and durations: server/jobs/proto_time.h.) Stateless.
#ifndef JOBD_SERVER_FRONTEND_CONVERT_H_
#define JOBD_SERVER_FRONTEND_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "jobd/v1/jobd.pb.h"
#include "server/frontend/service_limits.h"
#include "server/jobs/event_proto.h"
#include "server/jobs/job_id.h"
#include "server/jobs/job_types.h"
#include "server/jobs/proto_time.h"
#include "workers/sdk/task.h"

namespace jobd {

// The same code and message.
grpc::Status ToGrpc(const absl::Status& status);

// The REJECTED event of a Submit item refused with `status` (no job):
// its error has the status's code, its message (clipped to
// kMaxErrorMessageBytes, valid UTF-8) and a reason: OVERLOADED for
// ResourceExhausted, SHUTDOWN for Unavailable, INVALID_INPUT otherwise.
Event Rejection(const absl::Status& status);

// What ListTasks says of `task`.
v1::TaskInfo ToProto(const TaskDef& task, bool quarantined);
v1::TaskParam ToProto(const TaskParam& param);

// What GetStats says of `limits`.
void ToProto(const ServiceLimits& limits, v1::ServerLimits* out);

// A job id of this node (server/jobs/job_id.h: "N", or "N@<this node>" in
// cluster mode): its number. InvalidArgument naming `field` otherwise
// (another node's id too: for calls that do not reach other nodes).
absl::StatusOr<uint64_t> ParseJobId(const std::string& id, const char* field);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_CONVERT_H_
