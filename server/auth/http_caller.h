// HttpCaller: who sends an HTTP request to the metrics listener
// (--http-listen: /metrics and the dashboard's API), the one check both
// use. It reads what cpp-httplib's request carries — the `Authorization`
// header (`Bearer TOKEN`) and, on HTTPS with --tls-client-ca, the verified
// client certificate's names (subject CN, DNS, URI and email SANs) — and
// asks the Authenticator, as the gRPC edge does for a call
// (server/frontend/auth.h). With no tokens and no identities configured,
// every request is the anonymous administrator.
//
// Thread-safety: a free function; safe on any of the listener's threads.
#ifndef JOBD_SERVER_AUTH_HTTP_CALLER_H_
#define JOBD_SERVER_AUTH_HTTP_CALLER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/auth/authenticator.h"

namespace httplib {
struct Request;
}

namespace jobd {

// The caller of `req`, if it has one of `roles` (admin has every role):
// Unauthenticated (no or unknown credential) or PermissionDenied (naming
// the caller and `what` it may not do) otherwise.
absl::StatusOr<Caller> HttpCaller(const Authenticator& auth,
                                  const httplib::Request& req, uint32_t roles,
                                  std::string_view what);

}  // namespace jobd

#endif  // JOBD_SERVER_AUTH_HTTP_CALLER_H_
