// MetricsServer: the HTTP listener (--http-listen) that serves the
// Prometheus exposition on GET /metrics (cpp-httplib, Debian's
// libcpp-httplib-dev). It runs on threads of its own: a small pool
// (kThreads) answers connections, each read and write bounded by
// kIoTimeout, so a slow or stalled client holds at most one of these
// threads for that long and never a job, the scheduler or a gRPC thread.
// A scrape calls `render` (which takes the scheduler's lock briefly, as
// GetStats does).
//
// Thread-safety: Start and Stop from the owner's thread; `render` runs on
// the server's threads, concurrently with itself.
// Ownership: owns its threads; Stop (or the destructor) joins them.
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

class MetricsServer {
 public:
  static constexpr int kThreads = 4;
  static constexpr absl::Duration kIoTimeout = absl::Seconds(5);

  // Listens on `host_port` ("127.0.0.1:9464", "[::1]:0": port 0 picks a
  // free one). The caller checked the address is allowed (server/config).
  // `add_routes` (if set) adds more routes to the same listener (the
  // dashboard) before it listens; its handlers run on the same threads.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& host_port, std::function<std::string()> render,
      std::function<void(httplib::Server&)> add_routes = {});
  ~MetricsServer();

  int port() const { return port_; }
  void Stop();

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  // Set by thread_ once listen_after_bind has returned.
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_METRICS_METRICS_SERVER_H_
