// Where jobd listens by default, shared by the daemon and its clients (part
// of the public contract, like the .proto). Header-only, stateless.
//
//   Unix socket: $JOBD_SOCKET, else $RUNTIME_DIRECTORY/jobd.sock (systemd),
//                else $XDG_RUNTIME_DIR/jobd/jobd.sock, else /run/jobd/jobd.sock
//                for root, else /tmp/jobd-<uid>/jobd.sock
//   TCP:         127.0.0.1:7531
// Clients take $JOBD_ADDRESS first (any gRPC target: unix:/path, host:port).
#ifndef JOBD_PROTO_JOBD_V1_DEFAULT_ADDRESS_H_
#define JOBD_PROTO_JOBD_V1_DEFAULT_ADDRESS_H_

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace jobd::v1 {

inline constexpr int kDefaultTcpPort = 7531;
inline constexpr const char* kDefaultTcpAddress = "127.0.0.1:7531";

inline std::string DefaultSocketPath() {
  if (const char* s = std::getenv("JOBD_SOCKET"); s != nullptr && *s) return s;
  if (const char* d = std::getenv("RUNTIME_DIRECTORY"); d != nullptr && *d) {
    std::string dir = d;
    if (auto colon = dir.find(':'); colon != std::string::npos) {
      dir.resize(colon);  // systemd lists several directories with ':'.
    }
    return dir + "/jobd.sock";
  }
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x) {
    return std::string(x) + "/jobd/jobd.sock";
  }
  if (geteuid() == 0) return "/run/jobd/jobd.sock";
  return "/tmp/jobd-" + std::to_string(geteuid()) + "/jobd.sock";
}

// The address a client uses when none is given.
inline std::string DefaultClientAddress() {
  if (const char* a = std::getenv("JOBD_ADDRESS"); a != nullptr && *a) return a;
  return "unix:" + DefaultSocketPath();
}

}  // namespace jobd::v1

#endif  // JOBD_PROTO_JOBD_V1_DEFAULT_ADDRESS_H_
