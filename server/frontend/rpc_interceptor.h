// RpcStatsInterceptorFactory: a server interceptor (gRPC's experimental
// interceptor API, as request_errors.h) that counts every RPC of the
// server into an RpcStats (server/telemetry/rpc_stats.h) for the metrics
// endpoint: in flight from its arrival, then ended with the status code it
// sent and how long it took (a stream: from its opening to its end). An
// RPC that ends with no status sent (the client went away first) counts
// as CANCELLED. Installed after ParseErrorInterceptorFactory, so the code
// counted is the one the client gets.
//
// Thread-safety: gRPC calls it from its threads; RpcStats is lock-free.
// Ownership: borrows `stats`, which must outlive the server.
#ifndef JOBD_SERVER_FRONTEND_RPC_INTERCEPTOR_H_
#define JOBD_SERVER_FRONTEND_RPC_INTERCEPTOR_H_

#include <memory>
#include <vector>

#include "grpcpp/support/server_interceptor.h"
#include "server/telemetry/rpc_stats.h"

namespace jobd {

// The methods of jobd.v1.JobService, as RpcStats counts them (label: the
// method's name, "GetJob"; a stream is Submit or WatchJobs).
std::vector<RpcStats::Method> JobServiceMethods();

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcStatsInterceptorFactory(RpcStats& stats);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_RPC_INTERCEPTOR_H_
