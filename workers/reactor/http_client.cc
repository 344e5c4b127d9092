#include "workers/reactor/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/redirect_error.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

constexpr char kUserAgent[] = "jobd/" JOBD_VERSION;

}  // namespace

// A socket libcurl asked us to watch. Shared with the waits armed on it, so
// a wait that completes after libcurl dropped the socket sees `removed`.
struct HttpSocketWatch {
  HttpSocketWatch(asio::io_context& io, int fd) : fd(fd), descriptor(io, fd) {}
  int fd;
  asio::posix::stream_descriptor descriptor;  // Does not own fd (released).
  int what = 0;                               // CURL_POLL_*.
  bool reading = false, writing = false;      // Waits armed.
  bool removed = false;
};

// One request in flight: the coroutine waits on `done` (a timer that never
// fires by itself; CollectDone cancels it once the transfer has ended).
struct HttpTransfer {
  explicit HttpTransfer(asio::io_context& io) : done(io) {}
  asio::steady_timer done;
  bool finished = false;
  CURLcode code = CURLE_OK;
  char error[CURL_ERROR_SIZE] = {};
  uint64_t max_body = 0;
  bool too_big = false;
  size_t header_bytes = 0;
  bool headers_too_big = false;
  CURL* easy = nullptr;
  const AddressPolicy* policy = nullptr;
  std::string refusal;  // Why an address was refused; "" if none was.
  HttpResponse response;
};

namespace {

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<HttpTransfer*>(user);
  const size_t bytes = size * n;
  if (t->response.body.size() + bytes > t->max_body) {
    t->too_big = true;
    return 0;  // Aborts the transfer (CURLE_WRITE_ERROR).
  }
  t->response.body.append(data, bytes);
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<HttpTransfer*>(user);
  const size_t bytes = size * n;
  std::string_view line(data, bytes);
  if (line.starts_with("HTTP/")) {
    t->response.headers.clear();  // A new response (redirect, 100-continue).
    t->header_bytes = 0;
    return bytes;
  }
  t->header_bytes += bytes;
  if (t->header_bytes > kMaxResponseHeaderBytes) {
    t->headers_too_big = true;
    return 0;  // Aborts the transfer.
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return bytes;
  std::string name(line.substr(0, colon));
  absl::AsciiStrToLower(&name);
  const absl::string_view value = absl::StripAsciiWhitespace(
      absl::string_view(data + colon + 1, bytes - colon - 1));
  std::string& slot = t->response.headers[name];
  if (!slot.empty()) slot += ", ";
  slot.append(value.data(), value.size());
  return bytes;
}

// The host of `url` as the URL spells it ("" if it has none).
std::string HostOf(const char* url) {
  std::unique_ptr<CURLU, void (*)(CURLU*)> u(curl_url(), &curl_url_cleanup);
  char* host = nullptr;
  if (u == nullptr || url == nullptr ||
      curl_url_set(u.get(), CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    return "";
  }
  std::string out = host;
  curl_free(host);
  return out;
}

// libcurl asks for a socket to connect to `a`: refused (no socket, so no
// packet) when the policy says so. The URL being fetched names the host:
// the request's, or a redirect's.
curl_socket_t OnOpenSocket(void* user, curlsocktype purpose, curl_sockaddr* a) {
  auto* t = static_cast<HttpTransfer*>(user);
  char* url = nullptr;
  curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &url);
  const std::string host = HostOf(url);
  const std::string why = t->policy->Refusal(&a->addr, a->addrlen, host);
  if (!why.empty()) {
    char text[INET6_ADDRSTRLEN] = "?";
    const void* ip =
        a->family == AF_INET6
            ? static_cast<const void*>(
                  &reinterpret_cast<const sockaddr_in6*>(&a->addr)->sin6_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<const sockaddr_in*>(&a->addr)->sin_addr);
    inet_ntop(a->family, ip, text, sizeof(text));
    spdlog::info("http.get: refused {} for host '{}': {}", text,
                 MakeValidUtf8(host), why);
    if (t->refusal.empty()) {
      t->refusal = absl::StrCat(
          "http.get may not connect to '", ClipUtf8(host, 256), "': ", why,
          " (only public addresses, unless jobd's --http-allow lists the "
          "host or its network)");
    }
    return CURL_SOCKET_BAD;
  }
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

const AddressPolicy& PublicOnly() {
  static const AddressPolicy* const policy = new AddressPolicy();
  return *policy;
}

absl::Status CurlError(CURLcode code, const char* detail, const char* method,
                       const std::string& url) {
  const std::string what =
      absl::StrCat(method, " ", url, ": ",
                   *detail != '\0' ? detail : curl_easy_strerror(code));
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(what);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(what);
    case CURLE_FILESIZE_EXCEEDED:
      return absl::ResourceExhaustedError(what);
    case CURLE_TOO_MANY_REDIRECTS:
      return absl::FailedPreconditionError(what);
    default:
      return absl::UnavailableError(what);
  }
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

HttpClient::HttpClient(asio::io_context& io)
    : io_(io), multi_((GlobalInit(), curl_multi_init())), timer_(io) {
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &HttpClient::OnSocket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &HttpClient::OnTimer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
}

HttpClient::~HttpClient() {
  for (auto& [easy, t] : active_) curl_multi_remove_handle(multi_, easy);
  for (auto& [fd, w] : watches_) {
    w->removed = true;
    w->descriptor.release();
  }
  curl_multi_cleanup(multi_);
}

int HttpClient::OnSocket(CURL*, curl_socket_t fd, int what, void* self, void*) {
  auto& client = *static_cast<HttpClient*>(self);
  if (what == CURL_POLL_REMOVE) {
    auto it = client.watches_.find(fd);
    if (it != client.watches_.end()) {
      it->second->removed = true;
      it->second->descriptor.cancel();
      it->second->descriptor.release();  // libcurl closes it.
      client.watches_.erase(it);
    }
    return 0;
  }
  std::shared_ptr<HttpSocketWatch>& w = client.watches_[fd];
  if (w == nullptr) w = std::make_shared<HttpSocketWatch>(client.io_, fd);
  w->what = what;
  client.Arm(w);
  return 0;
}

int HttpClient::OnTimer(CURLM*, long timeout_ms, void* self) {
  auto& client = *static_cast<HttpClient*>(self);
  if (timeout_ms < 0) {
    client.timer_.cancel();
    return 0;
  }
  // Never act from inside libcurl: even a 0 ms timeout goes through the loop.
  client.timer_.expires_after(std::chrono::milliseconds(timeout_ms));
  client.timer_.async_wait([&client](const asio::error_code& ec) {
    if (!ec) client.Act(CURL_SOCKET_TIMEOUT, 0);
  });
  return 0;
}

void HttpClient::Arm(const std::shared_ptr<HttpSocketWatch>& w) {
  if ((w->what & CURL_POLL_IN) && !w->reading) {
    w->reading = true;
    w->descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                             [this, w](const asio::error_code& ec) {
                               w->reading = false;
                               if (ec || w->removed) return;
                               if (w->what & CURL_POLL_IN)
                                 Act(w->fd, CURL_CSELECT_IN);
                               if (!w->removed) Arm(w);
                             });
  }
  if ((w->what & CURL_POLL_OUT) && !w->writing) {
    w->writing = true;
    w->descriptor.async_wait(asio::posix::descriptor_base::wait_write,
                             [this, w](const asio::error_code& ec) {
                               w->writing = false;
                               if (ec || w->removed) return;
                               if (w->what & CURL_POLL_OUT)
                                 Act(w->fd, CURL_CSELECT_OUT);
                               if (!w->removed) Arm(w);
                             });
  }
}

void HttpClient::Act(int fd, int events) {
  int running = 0;
  curl_multi_socket_action(multi_, fd, events, &running);
  CollectDone();
}

void HttpClient::CollectDone() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode code = msg->data.result;
    auto it = active_.find(easy);
    curl_multi_remove_handle(multi_, easy);
    if (it == active_.end()) continue;
    HttpTransfer& t = *it->second;
    active_.erase(it);
    t.finished = true;
    t.code = code;
    t.done.cancel();  // Resumes Get() from the loop, not from here.
  }
}

asio::awaitable<absl::StatusOr<HttpResponse>> HttpClient::Perform(
    const HttpRequest& request) {
  const char* const method = request.post_body ? "POST" : "GET";
  std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(),
                                              &curl_easy_cleanup);
  if (easy == nullptr) co_return absl::ResourceExhaustedError("curl_easy_init");
  HttpTransfer t(io_);
  t.max_body = request.max_body_bytes;
  CURL* e = easy.get();
  t.easy = e;
  t.policy =
      request.addresses != nullptr ? request.addresses.get() : &PublicOnly();
  curl_easy_setopt(e, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION,
                   request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS,
                   static_cast<long>(request.max_redirects));
  curl_easy_setopt(
      e, CURLOPT_TIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(request.timeout)));
  curl_easy_setopt(
      e, CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(request.connect_timeout)));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, kUserAgent);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  // Every decoding curl has.
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(request.max_body_bytes));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t.error);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, &t);
  // Straight to the address checked: no proxy from the environment.
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(
      nullptr, &curl_slist_free_all);
  if (request.post_body.has_value()) {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, request.post_body->data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.post_body->size()));
    headers.reset(curl_slist_append(headers.release(), "Expect:"));
  }
  for (const auto& [name, value] : request.headers) {
    headers.reset(curl_slist_append(headers.release(),
                                    absl::StrCat(name, ": ", value).c_str()));
  }
  if (headers != nullptr)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers.get());

  const absl::Time start = absl::Now();
  t.done.expires_at(asio::steady_timer::time_point::max());
  if (const CURLMcode m = curl_multi_add_handle(multi_, e); m != CURLM_OK) {
    co_return absl::InternalError(
        absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(m)));
  }
  active_.emplace(e, &t);
  asio::error_code ec;
  co_await t.done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (!t.finished) {  // The job was cancelled: abort the transfer now.
    active_.erase(e);
    curl_multi_remove_handle(multi_, e);
    throw asio::system_error(asio::error::operation_aborted);
  }
  if (!t.refusal.empty() && t.code != CURLE_OK) {
    // The same text whatever the port and whether anything listens there.
    co_return absl::PermissionDeniedError(t.refusal);
  }
  if (t.headers_too_big) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat(method, " ", request.url, ": the response headers exceed ",
                     kMaxResponseHeaderBytes, " bytes"));
  }
  if (t.too_big || t.code == CURLE_FILESIZE_EXCEEDED) {
    co_return absl::ResourceExhaustedError(absl::StrCat(
        method, " ", request.url, ": the response body exceeds max_bytes (",
        request.max_body_bytes, " bytes)"));
  }
  if (t.code != CURLE_OK)
    co_return CurlError(t.code, t.error, method, request.url);
  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  char* effective = nullptr;
  curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &effective);
  t.response.status = static_cast<int>(status);
  t.response.effective_url = effective != nullptr ? effective : request.url;
  t.response.elapsed = absl::Now() - start;
  co_return std::move(t.response);
}

}  // namespace jobd
