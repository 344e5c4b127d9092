// HttpClient: HTTP(S) requests for async tasks, on libcurl's multi interface
// driven by one reactor event loop (no thread per request, no polling):
// libcurl tells which sockets to watch and when to time out; Asio watches
// them and calls back into libcurl (curl_multi_socket_action).
//
// Only http and https are allowed, also across redirects. Every address
// about to be connected (after DNS, on every redirect) is checked against
// the request's AddressPolicy (public addresses only by default): a refused
// one fails the request with PermissionDenied, before any packet is sent,
// with a message that names the host and the kind of address but neither
// the address nor the port. Proxies from the environment are not used.
// A body larger than the request's limit aborts the transfer
// (ResourceExhausted); a cancelled job's request is removed from the multi
// handle at once.
//
// Thread-safety: none; one HttpClient per loop, used on its thread only. It
// owns its libcurl multi handle and every socket watch; requests own their
// easy handles.
#ifndef JOBD_WORKERS_REACTOR_HTTP_CLIENT_H_
#define JOBD_WORKERS_REACTOR_HTTP_CLIENT_H_

#include <curl/curl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "workers/reactor/address_policy.h"

namespace jobd {

struct HttpSocketWatch;  // Details of http_client.cc.
struct HttpTransfer;

struct HttpRequest {
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  absl::Duration timeout = absl::Seconds(30);  // Whole transfer.
  absl::Duration connect_timeout = absl::Seconds(10);
  uint64_t max_body_bytes = 1 << 20;
  bool follow_redirects = true;
  int max_redirects = 5;
  // Where it may connect; null: public addresses only.
  std::shared_ptr<const AddressPolicy> addresses;
  // Set: Perform sends a POST with these bytes as its body (give its
  // Content-Type in `headers`); unset: a GET.
  std::optional<std::string> post_body;
};

// Response header bytes kept at most (of each response of a redirect
// chain); more fails the request.
inline constexpr size_t kMaxResponseHeaderBytes = 256 << 10;

struct HttpResponse {
  int status = 0;
  // Header names lower-cased; a repeated header's values joined by ", ".
  // Those of the last response when redirects were followed. Raw bytes, not
  // necessarily UTF-8; at most 256 KiB (more fails the request).
  std::map<std::string, std::string> headers;
  std::string body;
  std::string effective_url;
  absl::Duration elapsed;
};

class HttpClient {
 public:
  explicit HttpClient(asio::io_context& io);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Performs a GET. Errors: InvalidArgument (bad URL or scheme),
  // PermissionDenied (an address the policy refuses),
  // Unavailable (DNS, connect, TLS, reset: the message says which),
  // DeadlineExceeded (request timeout), ResourceExhausted (body over the
  // limit). Cancellation of the awaiting coroutine aborts the transfer and
  // throws asio::system_error(operation_aborted).
  asio::awaitable<absl::StatusOr<HttpResponse>> Get(
      const HttpRequest& request) {
    return Perform(request);
  }
  // A GET, or a POST of request.post_body (no "Expect: 100-continue"); the
  // same errors.
  asio::awaitable<absl::StatusOr<HttpResponse>> Perform(
      const HttpRequest& request);

  // Transfers in progress (for tests and stats).
  size_t active() const { return active_.size(); }

 private:
  static int OnSocket(CURL* easy, curl_socket_t fd, int what, void* self,
                      void* socket_data);
  static int OnTimer(CURLM* multi, long timeout_ms, void* self);
  void Arm(const std::shared_ptr<HttpSocketWatch>& watch);
  void Act(int fd, int events);
  void CollectDone();

  asio::io_context& io_;
  CURLM* multi_;
  asio::steady_timer timer_;
  absl::flat_hash_map<int, std::shared_ptr<HttpSocketWatch>> watches_;
  absl::flat_hash_map<CURL*, HttpTransfer*> active_;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_REACTOR_HTTP_CLIENT_H_
