// Authentication and roles (README: Security): who a caller is, and what it
// may do. Knows no transport: the gRPC edge (server/frontend/auth.h) and
// the dashboard's HTTP API (server/dashboard/) each hand it what their
// request carries (Credentials).
//
// A caller is known by
//  * a bearer token (`authorization: Bearer TOKEN` metadata) whose SHA-256
//    is configured with its name and roles (--auth-token NAME:ROLES:SHA256),
//  * or a verified TLS client certificate (mTLS) whose subject CN, or a DNS
//    or URI SAN, is configured with roles (--tls-identity NAME:ROLES),
//  * or by coming in on the Unix socket while --unix-socket-auth is
//    "trusted" (the default: the socket is owner/group only): the local
//    administrator, "local".
// With no tokens and no identities configured, every caller is an
// anonymous administrator (the local-only default; jobd refuses to listen
// beyond loopback then).
//
// Roles: submit (submit jobs; see, watch and cancel its own), read (see and
// watch its own jobs; stats, tasks), admin (everything: every caller's
// jobs, drain, quarantine). A caller that is not admin sees only its own
// jobs: another caller's are NOT_FOUND to it.
//
// Thread-safety: Authenticate() is thread-safe; Set() (SIGHUP) swaps the
// configuration atomically.
#ifndef JOBD_SERVER_AUTH_AUTHENTICATOR_H_
#define JOBD_SERVER_AUTH_AUTHENTICATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace jobd {

enum Role : uint32_t {
  kRoleSubmit = 1,
  kRoleRead = 2,
  kRoleAdmin = 4,
};

struct Caller {
  std::string name;  // "local", "anonymous", a token's or identity's name.
  uint32_t roles = 0;
  bool admin() const { return (roles & kRoleAdmin) != 0; }
  // PermissionDenied naming the caller and what it lacks, unless it has one
  // of `any_of` (admin has every role).
  absl::Status Require(uint32_t any_of, std::string_view what) const;
};

struct AuthConfig {
  // "NAME:ROLE[+ROLE...]:SHA256HEX" (the token's SHA-256, lower-case hex).
  std::vector<std::string> tokens;
  // "NAME:ROLE[+ROLE...]": a client certificate's CN or SAN, and its roles.
  std::vector<std::string> tls_identities;
  // Callers on the Unix socket: "trusted" (local admin) or "token" (they
  // authenticate like everyone else).
  std::string unix_socket_auth = "trusted";
};

// What one request carries to say who sends it.
struct Credentials {
  // "unix:...", "ipv4:...", "ipv6:...": where the connection comes from.
  std::string_view peer;
  // The authorization header's value, if the request has one.
  std::optional<std::string_view> authorization;
  // The names (CN, SANs) of the request's verified client certificate;
  // null or empty: none (asked only when there is no bearer token).
  std::function<std::vector<std::string>()> certificate_names;
};

class Authenticator {
 public:
  // InvalidArgument naming the bad entry.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(
      const AuthConfig& config);
  // Replaces the configuration (validated like Create).
  absl::Status Set(const AuthConfig& config);

  // True if any token or identity is configured.
  bool required() const;
  // Who sends a request with `credentials`; Unauthenticated if nobody
  // known.
  absl::StatusOr<Caller> Authenticate(const Credentials& credentials) const;

  // SHA-256 of `text`, lower-case hex (as --auth-token wants it).
  static std::string Sha256Hex(std::string_view text);

 private:
  struct Config {
    absl::flat_hash_map<std::string, Caller> by_token_hash;
    absl::flat_hash_map<std::string, Caller> by_identity;
    bool unix_trusted = true;
  };
  static absl::StatusOr<std::shared_ptr<const Config>> Parse(
      const AuthConfig& config);

  mutable absl::Mutex mu_;
  std::shared_ptr<const Config> config_ ABSL_GUARDED_BY(mu_);
};

// "submit+read" -> roles; InvalidArgument for an unknown role.
absl::StatusOr<uint32_t> ParseRoles(std::string_view text);
std::string RolesName(uint32_t roles);

}  // namespace jobd

#endif  // JOBD_SERVER_AUTH_AUTHENTICATOR_H_
