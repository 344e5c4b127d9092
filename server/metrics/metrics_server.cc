#include "server/metrics/metrics_server.h"

#include <httplib.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "fmt/format.h"
#include "server/auth/http_caller.h"
#include "server/metrics/tls_files.h"

namespace jobd {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& host_port, const MetricsServerOptions& options,
    std::function<std::string()> render,
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
  if (options.tls_cert.empty()) {
    m->server_ = std::make_unique<httplib::Server>();
  } else {
    absl::StatusOr<std::unique_ptr<TlsFiles>> files = TlsFiles::Load(
        options.tls_cert, options.tls_key, options.tls_client_ca);
    if (!files.ok()) return files.status();
    m->tls_files_ = *std::move(files);
    TlsFiles& tls = *m->tls_files_;
    auto server = std::make_unique<httplib::SSLServer>(
        [&tls](SSL_CTX& ctx) { return tls.SetUp(ctx); });
    if (!server->is_valid()) {
      return absl::InternalError("the metrics listener cannot set up TLS");
    }
    m->server_ = std::move(server);
    m->tls_ = true;
  }
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
  s.Get("/metrics", [render = std::move(render), auth = options.auth](
                        const httplib::Request& req, httplib::Response& res) {
    if (auth != nullptr) {
      absl::StatusOr<Caller> caller =
          HttpCaller(*auth, req, kRoleRead, "read /metrics");
      if (!caller.ok()) {
        const bool unknown =
            caller.status().code() == absl::StatusCode::kUnauthenticated;
        res.status = unknown ? 401 : 403;
        if (unknown) res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(fmt::format("jobd: /metrics: {}\n",
                                    std::string(caller.status().message())),
                        "text/plain; charset=utf-8");
        return;
      }
    }
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

MetricsServer::MetricsServer() = default;
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
