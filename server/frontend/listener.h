// Listener: jobd's own accept loop for its plaintext listeners (the Unix
// socket, and the TCP address when it has no TLS). gRPC 1.51 stops
// accepting for good on a listener whose accept4() failed once with EMFILE;
// here jobd accepts connections itself and hands each to the gRPC server
// (grpc::AddInsecureChannelFromFd), so that
//  * running out of file descriptors never stops accepting: a reserve
//    descriptor is freed to take and close the connection that waits, and
//    connections are served again as soon as descriptors are free;
//  * connections are capped in total and per peer (a TCP client address, a
//    Unix socket user), and none is taken while fewer than kAcceptKeepFree
//    descriptors are free (workers/fd_limit.h);
//  * it says whether it can accept (Problem()): jobd's watchdog and health
//    service follow it.
// A TLS listener stays gRPC's (gRPC takes accepted descriptors only without
// TLS). The Listener watches it instead: now and then it connects to it and
// checks on the listening socket's accept queue (TCP_INFO) that the
// connection is taken; after kDeadProbes probes in a row that are not, the
// listener is dead for good (a restart is the only cure) and on_change is
// told so.
// gRPC names the peers of connections handed over this way "fd:N":
// PeerName() maps that back to "unix:PATH" or "ipv4:ADDRESS:PORT".
//
// Thread-safety: Open/Start/Stop from one thread (main); PeerName and
// Problem from any thread. One accept thread (and a probe thread when a
// TLS listener is watched) run between Start and Stop; on_change is called
// from them, without locks held.
// Ownership: owns its listening sockets and reserve descriptor; the
// accepted connections belong to the gRPC server once handed over.
#ifndef JOBD_SERVER_FRONTEND_LISTENER_H_
#define JOBD_SERVER_FRONTEND_LISTENER_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
class ServerBuilder;
}  // namespace grpc

namespace jobd {

// How connections are bounded (README: Limits and timeouts). Durations of
// zero mean "no limit".
struct ConnectionOptions {
  size_t max_connections = 4096;          // Open at once, all peers; 0: any.
  size_t max_connections_per_peer = 512;  // Per client address / uid; 0: any.
  // A connection without a call for this long is closed (GOAWAY).
  absl::Duration idle_timeout = absl::Seconds(30);
  // A connection is asked to go away (GOAWAY) at this age; its calls then
  // have `max_age_grace` to end before it is closed.
  absl::Duration max_age = absl::ZeroDuration();
  absl::Duration max_age_grace = absl::ZeroDuration();
  // While calls are open, jobd pings an idle connection this often and
  // closes it if the ping is not answered within `keepalive_timeout`.
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // A TLS connection must finish its handshake and a gRPC-accepted one send
  // its HTTP/2 settings within this.
  absl::Duration handshake_timeout = absl::Seconds(10);
  uint32_t max_calls_per_connection = 1024;  // Concurrent HTTP/2 streams.
};

// Sets the gRPC channel arguments of `options` on the server.
void ApplyConnectionOptions(const ConnectionOptions& options,
                            grpc::ServerBuilder& builder);

class Listener {
 public:
  // Tells a change of Problem(): "" when accepting again; `dead` when a
  // gRPC listener stopped accepting for good.
  using OnChange = std::function<void(const std::string& problem, bool dead)>;

  // Binds and listens on `unix_path` (if not empty; the caller has cleared a
  // stale socket and set the umask) and on `tcp_address` (host:port, if not
  // empty; port 0 picks one).
  static absl::StatusOr<std::unique_ptr<Listener>> Open(
      const std::string& unix_path, const std::string& tcp_address,
      const ConnectionOptions& options);
  ~Listener();  // Stop().

  int tcp_port() const { return tcp_port_; }

  // Watches a TLS listener that gRPC owns on `port` of `host`.
  void WatchGrpcListener(const std::string& host, int port);

  // Starts accepting for `server` (and the probes).
  void Start(grpc::Server* server, OnChange on_change);
  // Stops accepting (before the server shuts down); idempotent.
  void Stop();

  // "unix:PATH" or "ipv4:1.2.3.4:5678" for a peer gRPC calls "fd:N" (a
  // connection this accepted); else `grpc_peer` itself.
  std::string PeerName(std::string_view grpc_peer) const;

  // Why jobd cannot accept connections now, or "".
  std::string Problem() const;

 private:
  struct Socket {
    int fd = -1;
    bool is_unix = false;
    std::string name;         // For logs.
    absl::Time paused_until;  // Backing off after a failure.
  };
  struct Connection {
    ino_t inode = 0;
    std::string peer;  // Key of its peer: "uid 1000", "127.0.0.1".
    std::string name;  // What PeerName answers.
  };

  explicit Listener(const ConnectionOptions& options) : options_(options) {}
  void AcceptLoop();
  void AcceptFrom(Socket& socket);
  void Take(Socket& socket, int fd, const sockaddr_storage& address);
  // Takes and closes the waiting connection with the reserve descriptor
  // (accept4 failed with `err`).
  void Shed(Socket& socket, int err);
  void Refuse(int fd, const std::string& why);
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evaluate();
  void ProbeLoop();

  const ConnectionOptions options_;
  std::vector<Socket> sockets_;  // Accept thread only once started.
  int tcp_port_ = -1;
  std::string unix_path_;
  int wake_fd_ = -1;     // eventfd: Stop() wakes the accept thread.
  int reserve_fd_ = -1;  // Accept thread only.
  grpc::Server* server_ = nullptr;
  OnChange on_change_;
  std::thread accept_thread_, probe_thread_;
  // The watched gRPC listener.
  std::string grpc_host_;
  int grpc_port_ = -1;
  int grpc_listen_fd_ = -1;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<int, Connection> connections_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> per_peer_ ABSL_GUARDED_BY(mu_);
  absl::Time swept_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_refusal_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_shed_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t unlogged_refusals_ ABSL_GUARDED_BY(mu_) = 0;
  // Health.
  absl::Time starved_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string problem_ ABSL_GUARDED_BY(mu_);       // As last reported.
  std::string grpc_problem_ ABSL_GUARDED_BY(mu_);  // The watched listener.
  bool grpc_dead_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time heartbeat_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_LISTENER_H_
