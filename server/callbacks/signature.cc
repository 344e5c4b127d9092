#include "server/callbacks/signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace jobd::callbacks {

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest,
       &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), length));
}

std::string SignatureHeader(std::string_view secret, int64_t unix_seconds,
                            std::string_view body) {
  std::string signed_bytes = absl::StrCat(unix_seconds, ".");
  signed_bytes.append(body.data(), body.size());
  return absl::StrCat("sha256=", HmacSha256Hex(secret, signed_bytes));
}

}  // namespace jobd::callbacks
