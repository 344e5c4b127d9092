#include "server/auth/authenticator.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {

absl::StatusOr<uint32_t> ParseRoles(std::string_view text) {
  uint32_t roles = 0;
  for (absl::string_view r :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '+')) {
    if (r == "submit") {
      roles |= kRoleSubmit;
    } else if (r == "read") {
      roles |= kRoleRead;
    } else if (r == "admin") {
      roles |= kRoleAdmin;
    } else {
      return absl::InvalidArgumentError(fmt::format(
          "unknown role '{}' (submit, read, admin)", std::string(r)));
    }
  }
  return roles;
}

std::string RolesName(uint32_t roles) {
  std::vector<std::string> names;
  if (roles & kRoleSubmit) names.push_back("submit");
  if (roles & kRoleRead) names.push_back("read");
  if (roles & kRoleAdmin) names.push_back("admin");
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, "+"));
}

absl::Status Caller::Require(uint32_t any_of, std::string_view what) const {
  if (admin() || (roles & any_of) != 0) return absl::OkStatus();
  return absl::PermissionDeniedError(
      fmt::format("{}: caller '{}' (roles: {}) needs the {} role", what, name,
                  RolesName(roles), RolesName(any_of)));
}

std::string Authenticator::Sha256Hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += fmt::format("{:02x}", digest[i]);
  }
  return hex;
}

absl::StatusOr<std::shared_ptr<const Authenticator::Config>>
Authenticator::Parse(const AuthConfig& config) {
  auto c = std::make_shared<Config>();
  for (const std::string& entry : config.tokens) {
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    if (parts.size() != 3 || parts[0].empty() || parts[2].size() != 64 ||
        !std::all_of(parts[2].begin(), parts[2].end(),
                     [](char ch) { return absl::ascii_isxdigit(ch); })) {
      return absl::InvalidArgumentError(fmt::format(
          "--auth-token: '{}' is not NAME:ROLES:SHA256 (64 hex digits; "
          "e.g. printf %s TOKEN | sha256sum)",
          parts.empty() ? entry : parts[0] + ":..."));
    }
    if (!IsValidUtf8(parts[0])) {  // It becomes Job.owner.
      return absl::InvalidArgumentError(
          "--auth-token: a caller's NAME must be valid UTF-8");
    }
    absl::StatusOr<uint32_t> roles = ParseRoles(parts[1]);
    if (!roles.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("--auth-token {}: {}", parts[0],
                      std::string(roles.status().message())));
    }
    c->by_token_hash[absl::AsciiStrToLower(parts[2])] =
        Caller{.name = parts[0], .roles = *roles};
  }
  for (const std::string& entry : config.tls_identities) {
    const size_t colon = entry.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return absl::InvalidArgumentError(
          fmt::format("--tls-identity: '{}' is not NAME:ROLES", entry));
    }
    if (!IsValidUtf8(std::string_view(entry).substr(0, colon))) {
      return absl::InvalidArgumentError(
          "--tls-identity: a caller's NAME must be valid UTF-8");
    }
    absl::StatusOr<uint32_t> roles = ParseRoles(entry.substr(colon + 1));
    if (!roles.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("--tls-identity {}: {}", entry.substr(0, colon),
                      std::string(roles.status().message())));
    }
    c->by_identity[entry.substr(0, colon)] =
        Caller{.name = entry.substr(0, colon), .roles = *roles};
  }
  if (config.unix_socket_auth != "trusted" &&
      config.unix_socket_auth != "token") {
    return absl::InvalidArgumentError(
        fmt::format("--unix-socket-auth: '{}' is not trusted or token",
                    config.unix_socket_auth));
  }
  c->unix_trusted = config.unix_socket_auth == "trusted";
  return std::shared_ptr<const Config>(std::move(c));
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    const AuthConfig& config) {
  auto a = std::make_unique<Authenticator>();
  if (absl::Status s = a->Set(config); !s.ok()) return s;
  return a;
}

absl::Status Authenticator::Set(const AuthConfig& config) {
  absl::StatusOr<std::shared_ptr<const Config>> parsed = Parse(config);
  if (!parsed.ok()) return parsed.status();
  absl::MutexLock lock(&mu_);
  config_ = *std::move(parsed);
  return absl::OkStatus();
}

bool Authenticator::required() const {
  absl::MutexLock lock(&mu_);
  return !config_->by_token_hash.empty() || !config_->by_identity.empty();
}

absl::StatusOr<Caller> Authenticator::Authenticate(
    const Credentials& credentials) const {
  std::shared_ptr<const Config> c;
  {
    absl::MutexLock lock(&mu_);
    c = config_;
  }
  if (c->by_token_hash.empty() && c->by_identity.empty()) {
    return Caller{.name = "anonymous", .roles = kRoleAdmin};
  }
  if (c->unix_trusted && credentials.peer.starts_with("unix:")) {
    return Caller{.name = "local", .roles = kRoleAdmin};
  }
  // A bearer token.
  if (credentials.authorization.has_value()) {
    const std::string_view value = *credentials.authorization;
    constexpr std::string_view kBearer = "Bearer ";
    if (!value.starts_with(kBearer)) {
      return absl::UnauthenticatedError(
          "the authorization header is not 'Bearer TOKEN'");
    }
    const std::string hash = Sha256Hex(value.substr(kBearer.size()));
    // Compare every configured hash in constant time (no early exit).
    const Caller* found = nullptr;
    for (const auto& [known, caller] : c->by_token_hash) {
      if (known.size() == hash.size() &&
          CRYPTO_memcmp(known.data(), hash.data(), hash.size()) == 0) {
        found = &caller;
      }
    }
    if (found == nullptr) {
      return absl::UnauthenticatedError("unknown or revoked token");
    }
    return *found;
  }
  // A verified client certificate.
  const std::vector<std::string> names = credentials.certificate_names
                                             ? credentials.certificate_names()
                                             : std::vector<std::string>();
  if (!names.empty()) {
    for (const std::string& name : names) {
      auto id = c->by_identity.find(name);
      if (id != c->by_identity.end()) return id->second;
    }
    return absl::UnauthenticatedError(
        "the client certificate's name is not a configured --tls-identity");
  }
  return absl::UnauthenticatedError(
      "authentication required: send 'authorization: Bearer TOKEN' (jobctl "
      "--token, $JOBD_TOKEN) or a client certificate");
}

}  // namespace jobd
