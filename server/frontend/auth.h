// The gRPC edge's side of authentication: who calls an RPC, from its
// context's metadata (`authorization: Bearer TOKEN`) and verified client
// certificate. Callers, roles and tokens themselves are server/auth's
// (authenticator.h, re-exported here), which the dashboard's HTTP API
// shares.
//
// Thread-safety: AuthenticateCall is thread-safe (Authenticator is).
#ifndef JOBD_SERVER_FRONTEND_AUTH_H_
#define JOBD_SERVER_FRONTEND_AUTH_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "server/auth/authenticator.h"

namespace grpc {
class CallbackServerContext;
}

namespace jobd {

// Who calls, over a connection from `peer` ("unix:...", "ipv4:...": the
// context's peer, or what jobd's listener knows of it); Unauthenticated if
// nobody known.
absl::StatusOr<Caller> AuthenticateCall(
    const Authenticator& auth, const grpc::CallbackServerContext& context,
    std::string_view peer);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_AUTH_H_
