// MetricsServer: the HTTP listener (--http-listen) that serves the
// Prometheus exposition on GET /metrics (cpp-httplib, Debian's
// libcpp-httplib-dev). It runs on threads of its own: a small pool
// (kThreads) answers connections, each read and write bounded by
// kIoTimeout, so a slow or stalled client holds at most one of these
// threads for that long and never a job, the scheduler or a gRPC thread.
// A scrape calls `render` (which takes the scheduler's lock briefly, as
// GetStats does).
//
// With a certificate (--tls-cert, --tls-key) it serves HTTPS only (TLS 1.2
// or later, OpenSSL through cpp-httplib's SSLServer), with a client CA
// (--tls-client-ca) it requires a client certificate that CA signed, as
// the gRPC listener does; the files are re-read when they change
// (tls_files.h). With callers
// configured (server/auth), /metrics answers only a caller with the read
// role (HttpCaller: `Authorization: Bearer TOKEN`, or a --tls-identity's
// certificate): 401 without a known credential, 403 without the role.
//
// Thread-safety: Start and Stop from the owner's thread; `render` runs on
// the server's threads, concurrently with itself.
// Ownership: owns its threads; Stop (or the destructor) joins them. The
// Authenticator outlives it.
#ifndef JOBD_SERVER_METRICS_METRICS_SERVER_H_
#define JOBD_SERVER_METRICS_METRICS_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace jobd {

class Authenticator;
class TlsFiles;

struct MetricsServerOptions {
  // PEM files: HTTPS when tls_cert is set (tls_key with it); with
  // tls_client_ca, clients must present a certificate it signed.
  std::string tls_cert, tls_key, tls_client_ca;
  // Who may read /metrics (the read role, when callers are configured);
  // null: anyone who reaches the listener.
  const Authenticator* auth = nullptr;
};

class MetricsServer {
 public:
  static constexpr int kThreads = 4;
  static constexpr absl::Duration kIoTimeout = absl::Seconds(5);

  // Listens on `host_port` ("127.0.0.1:9464", "[::1]:0": port 0 picks a
  // free one). The caller checked the address is allowed (server/config).
  // `add_routes` (if set) adds more routes to the same listener (the
  // dashboard) before it listens; its handlers run on the same threads.
  // InvalidArgument naming the option for an unusable address or TLS
  // file, Unavailable if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& host_port, const MetricsServerOptions& options,
      std::function<std::string()> render,
      std::function<void(httplib::Server&)> add_routes = {});
  ~MetricsServer();

  int port() const { return port_; }
  bool tls() const { return tls_; }
  void Stop();

 private:
  MetricsServer();
  std::unique_ptr<TlsFiles> tls_files_;  // Outlives server_'s SSL_CTX.
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  // Set by thread_ once listen_after_bind has returned.
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
  bool tls_ = false;
};

}  // namespace jobd

#endif  // JOBD_SERVER_METRICS_METRICS_SERVER_H_
