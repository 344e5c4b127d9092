#include "server/metrics/metrics_server.h"

#include <httplib.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "fmt/format.h"

namespace jobd {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& host_port, std::function<std::string()> render,
    std::function<void(httplib::Server&)> add_routes) {
  const size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(fmt::format(
        "--http-listen: '{}' is not HOST:PORT (e.g. 127.0.0.1:9464)",
        host_port));
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *m->server_;
  s.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  const auto io = absl::ToChronoMicroseconds(kIoTimeout);
  s.set_read_timeout(io);
  s.set_write_timeout(io);
  s.set_idle_interval(std::chrono::milliseconds(0));
  s.set_keep_alive_timeout(absl::ToInt64Seconds(kIoTimeout));
  s.set_keep_alive_max_count(100);
  s.set_payload_max_length(4096);  // A scrape sends no body.
  if (add_routes) add_routes(s);   // First: the dashboard's page is "/".
  s.Get("/metrics", [render = std::move(render)](const httplib::Request&,
                                                 httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("jobd: metrics at /metrics\n", "text/plain");
  });
  const int bound = port == 0 ? s.bind_to_any_port(host)
                              : (s.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(fmt::format(
        "--http-listen: cannot listen on '{}' (in use, or not an address of "
        "this machine)",
        host_port));
  }
  m->port_ = bound;
  MetricsServer* self = m.get();
  m->thread_ = std::thread([&s, self] {
    s.listen_after_bind();
    self->listen_returned_ = true;
  });
  return m;
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  if (thread_.joinable()) {
    // httplib's stop() does nothing until listen_after_bind has begun (its
    // is_running()): a Stop right after Start would then join a thread
    // that accepts forever. Wait for one or the other; it is a moment.
    while (!server_->is_running() && !listen_returned_) {
      std::this_thread::yield();
    }
    server_->stop();
    thread_.join();
  }
}

}  // namespace jobd
