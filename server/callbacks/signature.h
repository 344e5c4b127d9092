// Signing of push callbacks: what a receiver checks to know a POST came
// from this jobd and was not replayed later (README: Callbacks).
//
//   X-Jobd-Timestamp: <Unix seconds when the attempt was made>
//   X-Jobd-Signature: sha256=<hex HMAC-SHA256(secret, timestamp "." body)>
//
// Thread-safety: pure functions. OpenSSL's HMAC, no state kept.
#ifndef JOBD_SERVER_CALLBACKS_SIGNATURE_H_
#define JOBD_SERVER_CALLBACKS_SIGNATURE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace jobd::callbacks {

// HMAC-SHA256 of `data` with `key`, as 64 lower-case hex digits.
std::string HmacSha256Hex(std::string_view key, std::string_view data);

// The X-Jobd-Signature value of `body` sent at `unix_seconds`:
// "sha256=" + HmacSha256Hex(secret, "<unix_seconds>.<body>").
std::string SignatureHeader(std::string_view secret, int64_t unix_seconds,
                            std::string_view body);

}  // namespace jobd::callbacks

#endif  // JOBD_SERVER_CALLBACKS_SIGNATURE_H_
