#include "server/callbacks/callback_url.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd::callbacks {
namespace {

// The scheme's length with its "://" if `url` starts with http:// or
// https:// (any case), else 0.
size_t SchemeLength(std::string_view url) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.size() >= scheme.size() &&
        absl::EqualsIgnoreCase(
            absl::string_view(url.data(), scheme.size()),
            absl::string_view(scheme.data(), scheme.size()))) {
      return scheme.size();
    }
  }
  return 0;
}

bool HasSpaceOrControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

absl::Status CheckPrefixes(const std::vector<std::string>& prefixes) {
  for (const std::string& p : prefixes) {
    auto bad = [&](std::string_view why) {
      return absl::InvalidArgumentError(fmt::format(
          "--callback-allowed-prefixes: '{}' {}", ClipUtf8(p, 128), why));
    };
    const size_t scheme = SchemeLength(p);
    if (scheme == 0) return bad("is not an http:// or https:// URL");
    if (p.size() > kMaxCallbackUrlBytes) return bad("is too long");
    if (HasSpaceOrControl(p) || !IsValidUtf8(p)) {
      return bad("has spaces, control characters or bytes that are not UTF-8");
    }
    const size_t slash = p.find('/', scheme);
    if (slash == scheme) return bad("names no host");
    if (slash == std::string::npos) {
      return bad(
          "must end its host (and port) with '/', e.g. "
          "https://hooks.example/");
    }
    if (p.find('@', scheme) < slash) return bad("has a user name");
  }
  return absl::OkStatus();
}

absl::Status CheckCallbackUrl(std::string_view url,
                              const std::vector<std::string>& prefixes) {
  if (url.size() > kMaxCallbackUrlBytes) {
    return absl::InvalidArgumentError(
        fmt::format("spec.callback_url: {} bytes, more than the {} allowed",
                    url.size(), kMaxCallbackUrlBytes));
  }
  if (SchemeLength(url) == 0) {
    return absl::InvalidArgumentError(
        fmt::format("spec.callback_url: '{}' is not an http:// or https:// URL",
                    ClipUtf8(url, 128)));
  }
  if (HasSpaceOrControl(url)) {
    return absl::InvalidArgumentError(
        "spec.callback_url: has spaces or control characters");
  }
  if (prefixes.empty()) {
    return absl::InvalidArgumentError(
        "spec.callback_url: callbacks are off on this daemon (its "
        "--callback-allowed-prefixes is empty)");
  }
  for (const std::string& p : prefixes) {
    if (url.starts_with(p)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      fmt::format("spec.callback_url: '{}' is under none of the daemon's "
                  "--callback-allowed-prefixes",
                  ClipUtf8(url, 128)));
}

}  // namespace jobd::callbacks
