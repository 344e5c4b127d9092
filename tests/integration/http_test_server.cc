#include "tests/integration/http_test_server.h"

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/read_until.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/streambuf.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"

namespace jobd::testing {

using asio::ip::tcp;

class HttpTestServer::Impl {
 public:
  explicit Impl(HttpTestServer& owner)
      : owner_(owner),
        acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    acceptor_.listen(4096);
  }

  int port() const { return acceptor_.local_endpoint().port(); }

  void Run() {
    asio::co_spawn(io_, Accept(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Impl() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::awaitable<void> Accept() {
    for (;;) {
      asio::error_code ec;
      tcp::socket socket = co_await acceptor_.async_accept(
          asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      asio::co_spawn(io_, Serve(std::move(socket)), asio::detached);
    }
  }

  static std::string Response(int status, const std::string& reason,
                              const std::string& body,
                              const std::string& extra = "") {
    return absl::StrCat(
        "HTTP/1.1 ", status, " ", reason,
        "\r\nContent-Type: text/plain\r\nContent-Length: ", body.size(),
        "\r\nConnection: close\r\n", extra, "\r\n", body);
  }

  // Cancels `timer` when the client closes `socket` (or the socket closes).
  static asio::awaitable<void> WatchHangUp(
      std::shared_ptr<tcp::socket> socket,
      std::shared_ptr<asio::steady_timer> timer) {
    char c;
    asio::error_code ec;
    co_await socket->async_read_some(
        asio::buffer(&c, 1), asio::redirect_error(asio::use_awaitable, ec));
    timer->cancel();
  }

  asio::awaitable<void> Serve(tcp::socket plain_socket) {
    auto socket = std::make_shared<tcp::socket>(std::move(plain_socket));
    ++owner_.open_;
    asio::error_code ec;
    asio::streambuf buffer;
    co_await asio::async_read_until(
        *socket, buffer, "\r\n\r\n",
        asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      ++owner_.requests_;
      std::string head(asio::buffers_begin(buffer.data()),
                       asio::buffers_end(buffer.data()));
      const size_t sp1 = head.find(' ');
      const size_t sp2 = head.find(' ', sp1 + 1);
      const std::string path = head.substr(sp1 + 1, sp2 - sp1 - 1);
      int n = 0;
      std::string response;
      if (path == "/ok") {
        response = Response(200, "OK", "hello");
      } else if (path.starts_with("/slow/") &&
                 absl::SimpleAtoi(path.substr(6), &n)) {
        // Waits, or less if the client goes away (its connection reads EOF).
        auto timer = std::make_shared<asio::steady_timer>(
            io_, std::chrono::milliseconds(n));
        asio::co_spawn(io_, WatchHangUp(socket, timer), asio::detached);
        co_await timer->async_wait(
            asio::redirect_error(asio::use_awaitable, ec));
        response = Response(200, "OK", "slow");
      } else if (path.starts_with("/bytes/") &&
                 absl::SimpleAtoi(path.substr(7), &n)) {
        response = Response(200, "OK", std::string(n, 'x'));
      } else if (path.starts_with("/status/") &&
                 absl::SimpleAtoi(path.substr(8), &n)) {
        response = Response(n, "Status", "");
      } else if (path == "/redirect") {
        response = Response(302, "Found", "", "Location: /ok\r\n");
      } else if (path.starts_with("/redirect-to/")) {
        response =
            Response(302, "Found", "",
                     absl::StrCat("Location: ", path.substr(13), "\r\n"));
      } else if (path == "/bad-utf8") {
        // Bytes that are not UTF-8 in a header (name and value) and the body.
        response = Response(200, "OK", "\xff\xfe body",
                            "X-Bad: \xff\xfe\r\nX-\xe9t\xe9: caf\xe9\r\n"
                            "X-Good: caf\xc3\xa9 100%\r\n");
      } else {
        response = Response(404, "Not Found", "no such path");
      }
      co_await asio::async_write(*socket, asio::buffer(response),
                                 asio::redirect_error(asio::use_awaitable, ec));
    }
    socket->close(ec);
    --owner_.open_;
  }

  HttpTestServer& owner_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<HttpTestServer>> HttpTestServer::Start() {
  std::unique_ptr<HttpTestServer> server(new HttpTestServer());
  try {
    server->impl_ = std::make_unique<Impl>(*server);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("http test server: ", e.what()));
  }
  server->port_ = server->impl_->port();
  server->impl_->Run();
  return server;
}

HttpTestServer::~HttpTestServer() = default;

std::string HttpTestServer::Url(const std::string& path) const {
  return absl::StrCat("http://127.0.0.1:", port_, path);
}

}  // namespace jobd::testing
