// AddressPolicy: where a task's outgoing connections (http.get) may go.
//
// By default only to public unicast addresses. Refused, in every spelling
// (the check is on the socket address about to be connected, after DNS,
// on every redirect; an IPv4-mapped, IPv4-compatible or NAT64 IPv6 address
// is judged as the IPv4 address it carries):
//   unspecified  0.0.0.0/8, ::
//   loopback     127.0.0.0/8, ::1
//   link-local   169.254.0.0/16, fe80::/10
//   private      10/8, 172.16/12, 192.168/16, 100.64/10 (shared, CGNAT),
//                fc00::/7 (unique local), fec0::/10 (site-local)
//   multicast    224.0.0.0/4, ff00::/8
//   reserved     192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4 (with the
//                broadcast address 255.255.255.255)
// The operator may allow hosts by name (as URLs spell them, any address
// they resolve to) and networks (CIDR, or single addresses): --http-allow.
//
// Thread-safety: immutable after Parse; share it freely.
#ifndef JOBD_WORKERS_REACTOR_ADDRESS_POLICY_H_
#define JOBD_WORKERS_REACTOR_ADDRESS_POLICY_H_

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace jobd {

class AddressPolicy {
 public:
  // Public addresses only.
  AddressPolicy() = default;
  // Also `allow`: host names, IP addresses and CIDR networks (e.g.
  // "intranet.example", "127.0.0.1", "10.0.0.0/8", "fd00::/8"); empty
  // entries are ignored. InvalidArgument naming a bad entry.
  static absl::StatusOr<AddressPolicy> Parse(
      const std::vector<std::string>& allow);

  // Why a connection to `addr` for a URL naming `host` is refused (e.g. "a
  // loopback address"), or "" if it is allowed.
  std::string Refusal(const sockaddr* addr, socklen_t len,
                      std::string_view host) const;

 private:
  struct Network {
    int family = 0;                   // AF_INET or AF_INET6.
    std::array<uint8_t, 16> bytes{};  // 4 used for AF_INET.
    int prefix = 0;                   // Bits.
  };
  std::vector<Network> networks_;
  std::vector<std::string> hosts_;  // Lower-case.
};

// The policy http.get uses, replaceable while jobs run (jobd reloads it on
// SIGHUP): a job uses the one current when it starts.
class HttpPolicy {
 public:
  explicit HttpPolicy(AddressPolicy policy = {})
      : current_(std::make_shared<const AddressPolicy>(std::move(policy))) {}
  std::shared_ptr<const AddressPolicy> Get() const {
    absl::MutexLock lock(&mu_);
    return current_;
  }
  void Set(AddressPolicy policy) {
    auto next = std::make_shared<const AddressPolicy>(std::move(policy));
    absl::MutexLock lock(&mu_);
    current_ = std::move(next);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const AddressPolicy> current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd

#endif  // JOBD_WORKERS_REACTOR_ADDRESS_POLICY_H_
