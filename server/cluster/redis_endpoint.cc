#include "server/cluster/redis_endpoint.h"

#include <cctype>

#include "absl/strings/numbers.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd::cluster {
namespace {

constexpr std::string_view kRedis = "redis://";
constexpr std::string_view kUnix = "unix://";

absl::Status Bad(std::string_view option, std::string_view url,
                 std::string_view why) {
  return absl::InvalidArgumentError(fmt::format(
      "{}: '{}' {}; expected redis://HOST:PORT/DB or unix:///path/to/socket",
      option, ClipUtf8(std::string(url), 256), why));
}

bool IsHostChar(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return std::isalnum(c) || ch == '.' || ch == '-' || ch == '_' || ch == ':';
}

}  // namespace

std::string RedisEndpoint::ToString() const {
  if (is_unix()) return fmt::format("unix://{}", unix_path);
  if (host.find(':') != std::string::npos) {
    return fmt::format("redis://[{}]:{}/{}", host, port, db);
  }
  return fmt::format("redis://{}:{}/{}", host, port, db);
}

absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url,
                                            std::string_view option) {
  RedisEndpoint e;
  if (url.size() > 1024) return Bad(option, url, "is too long");
  for (char ch : url) {
    if (static_cast<unsigned char>(ch) < 0x21 ||
        static_cast<unsigned char>(ch) >= 0x7f) {
      return Bad(option, url,
                 "holds a space, a control or a non-ASCII character");
    }
  }
  if (url.starts_with(kUnix)) {
    std::string_view path = url.substr(kUnix.size());
    if (path.empty() || path.front() != '/') {
      return Bad(option, url, "names no absolute socket path");
    }
    if (path.find('?') != std::string_view::npos) {
      return Bad(option, url, "has a query; a Unix socket uses database 0");
    }
    e.unix_path = std::string(path);
    return e;
  }
  if (!url.starts_with(kRedis)) {
    return Bad(option, url, "has an unknown scheme");
  }
  std::string_view rest = url.substr(kRedis.size());
  if (rest.find('@') != std::string_view::npos) {
    return Bad(option, url, "holds credentials, which are not supported");
  }
  std::string_view hostport = rest, db;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    db = rest.substr(slash + 1);
  }
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {  // [v6]:port
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) {
      return Bad(option, url, "has an unclosed '['");
    }
    e.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Bad(option, url, "has junk after ']'");
      port = after.substr(1);
      if (port.empty()) return Bad(option, url, "has an empty port");
    }
  } else {
    size_t colon = hostport.rfind(':');
    if (colon != std::string_view::npos) {
      if (hostport.find(':') != colon) {
        return Bad(option, url, "has an IPv6 host without brackets");
      }
      port = hostport.substr(colon + 1);
      if (port.empty()) return Bad(option, url, "has an empty port");
      hostport = hostport.substr(0, colon);
    }
    e.host = std::string(hostport);
  }
  if (e.host.empty()) return Bad(option, url, "names no host");
  for (char ch : e.host) {
    if (!IsHostChar(ch)) return Bad(option, url, "has a bad host name");
  }
  if (!port.empty()) {
    int p = 0;
    if (!absl::SimpleAtoi(std::string(port), &p) || p < 1 || p > 65535) {
      return Bad(option, url, "has a port out of 1..65535");
    }
    e.port = p;
  }
  if (!db.empty()) {
    int d = -1;
    if (!absl::SimpleAtoi(std::string(db), &d) || d < 0 || d > 1023) {
      return Bad(option, url, "has a database number out of 0..1023");
    }
    e.db = d;
  }
  return e;
}

}  // namespace jobd::cluster
