// Internal: what a Client shares with its futures and streams: the channel,
// the stub and the resolved options. Not part of the public API.
//
// Thread-safety: immutable after construction; the gRPC stub and channel are
// thread-safe. Ownership: shared (std::shared_ptr<const Core>) by the Client,
// every FutureState, MapStream and WatchStream, so they may outlive it.
#ifndef JOBD_CLIENT_INTERNAL_CORE_H_
#define JOBD_CLIENT_INTERNAL_CORE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "jobd/v1/jobd.grpc.pb.h"

namespace jobd::client::internal {

struct Core {
  // Address resolved (never empty); max_batch and submit_window clamped to
  // the daemon's limits (GetStats at Connect).
  ClientOptions options;
  uint32_t server_max_batch = 0;   // 0: unknown.
  uint32_t server_max_window = 0;  // 0: unknown.
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::JobService::Stub> stub;

  // grpc::Status -> absl::Status, naming the address when jobd is
  // unreachable; `what` names the call ("GetJob", "Submit stream", ...).
  absl::Status FromGrpc(const grpc::Status& status,
                        std::string_view what) const;
  // If the channel is not ready (e.g. jobd restarted and gRPC is backing
  // off), asks it to reconnect and waits at most connect_timeout, so a call
  // right after a restart does not fail fast. Cheap when ready.
  void AwaitReady() const;
  // Before a unary call: AwaitReady(), then a deadline of rpc_timeout +
  // extra on `context` (none if infinite).
  void PrepareUnary(grpc::ClientContext* context,
                    absl::Duration extra = absl::ZeroDuration()) const;
  // Adds the caller's credentials (the bearer token) to a call.
  void Authorize(grpc::ClientContext* context) const;
};

// Sets an absolute deadline on a context unless it is infinite.
void SetContextDeadline(grpc::ClientContext* context, absl::Time deadline);

}  // namespace jobd::client::internal

#endif  // JOBD_CLIENT_INTERNAL_CORE_H_
