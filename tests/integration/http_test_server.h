// HttpTestServer: a small HTTP/1.1 server on 127.0.0.1 (port 0) for the
// http.get tests and benchmarks, on its own Asio event loop and thread, so it
// holds thousands of connections at once. Every response closes its
// connection. Routes:
//   /ok              200 "hello"
//   /slow/MS         200 "slow" after MS milliseconds
//   /bytes/N         200 with N bytes of 'x'
//   /status/CODE     that status, empty body
//   /redirect        302 to /ok
//   /redirect-to/URL 302 to URL
//   /bad-utf8        200 with bytes that are not UTF-8 in headers (X-Bad:
//                    FF FE; a Latin-1 name and value) and in the body
//   anything else    404
//
// Thread-safety: the counters are atomic; start and stop from one thread.
#ifndef JOBD_TESTS_INTEGRATION_HTTP_TEST_SERVER_H_
#define JOBD_TESTS_INTEGRATION_HTTP_TEST_SERVER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace jobd::testing {

class HttpTestServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpTestServer>> Start();
  ~HttpTestServer();

  int port() const { return port_; }
  std::string Url(const std::string& path) const;
  // Connections open now, and requests read in full so far.
  int open_connections() const { return open_.load(); }
  int requests() const { return requests_.load(); }

 private:
  class Impl;
  HttpTestServer() = default;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<int> open_{0};
  std::atomic<int> requests_{0};
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_HTTP_TEST_SERVER_H_
