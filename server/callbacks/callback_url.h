// Which callback URLs a job may name (JobSpec.callback_url): http or https
// URLs under one of the operator's prefixes (--callback-allowed-prefixes),
// at most kMaxCallbackUrlBytes. The prefixes decide alone where callbacks
// go (loopback and private addresses included): each names a scheme and a
// whole host (with its port, if any) followed by a '/', so that
// "https://hooks.example/" never lets "https://hooks.example.evil/" in.
//
// Thread-safety: pure functions.
#ifndef JOBD_SERVER_CALLBACKS_CALLBACK_URL_H_
#define JOBD_SERVER_CALLBACKS_CALLBACK_URL_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace jobd::callbacks {

inline constexpr size_t kMaxCallbackUrlBytes = 2048;

// OK, or InvalidArgument naming --callback-allowed-prefixes and the bad
// prefix (not http(s), no host, no '/' after the host, control characters
// or spaces, too long).
absl::Status CheckPrefixes(const std::vector<std::string>& prefixes);

// OK, or InvalidArgument naming spec.callback_url: too long, not http(s),
// spaces or control characters, or under none of `prefixes` (none at all:
// callbacks are off).
absl::Status CheckCallbackUrl(std::string_view url,
                              const std::vector<std::string>& prefixes);

}  // namespace jobd::callbacks

#endif  // JOBD_SERVER_CALLBACKS_CALLBACK_URL_H_
