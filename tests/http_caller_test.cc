// HttpCaller (server/auth/http_caller.h): the caller of an HTTP request on
// the metrics listener, from its bearer token, with the role asked for;
// the anonymous administrator when no callers are configured. (Client
// certificates need a TLS connection: metrics_test.cc covers them.)
#include "server/auth/http_caller.h"

#include <httplib.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

httplib::Request WithAuthorization(const std::string& value) {
  httplib::Request req;
  if (!value.empty()) req.headers.emplace("Authorization", value);
  return req;
}

std::unique_ptr<Authenticator> WithTokens() {
  auto auth = Authenticator::Create(AuthConfig{
      .tokens = {"bob:read:" + Authenticator::Sha256Hex("bob-secret"),
                 "alice:submit:" + Authenticator::Sha256Hex("alice-secret"),
                 "root:admin:" + Authenticator::Sha256Hex("root-secret")}});
  EXPECT_TRUE(auth.ok()) << auth.status();
  return *std::move(auth);
}

TEST(HttpCallerTest, WithoutCallersConfiguredEveryRequestIsTheAdministrator) {
  auto auth = Authenticator::Create(AuthConfig{});
  ASSERT_TRUE(auth.ok());
  for (const char* header : {"", "Bearer whatever", "Basic Ym9iOmJvYg=="}) {
    absl::StatusOr<Caller> c =
        HttpCaller(**auth, WithAuthorization(header), kRoleRead, "read");
    ASSERT_TRUE(c.ok()) << header << ": " << c.status();
    EXPECT_TRUE(c->admin());
  }
}

TEST(HttpCallerTest, ABearerTokenWithTheRoleIsItsCaller) {
  std::unique_ptr<Authenticator> auth = WithTokens();
  absl::StatusOr<Caller> bob = HttpCaller(
      *auth, WithAuthorization("Bearer bob-secret"), kRoleRead, "read");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->name, "bob");
  absl::StatusOr<Caller> root = HttpCaller(
      *auth, WithAuthorization("Bearer root-secret"), kRoleRead, "read");
  ASSERT_TRUE(root.ok()) << root.status();  // Admin has every role.
  EXPECT_EQ(root->name, "root");
}

TEST(HttpCallerTest, NoOrAnUnknownCredentialIsUnauthenticated) {
  std::unique_ptr<Authenticator> auth = WithTokens();
  for (const auto& [header, says] :
       {std::pair{"", "authentication required"},
        std::pair{"Bearer nobody-secret", "unknown or revoked token"},
        std::pair{"Basic Ym9iOmJvYg==", "not 'Bearer TOKEN'"}}) {
    absl::StatusOr<Caller> c = HttpCaller(*auth, WithAuthorization(header),
                                          kRoleRead, "read /metrics");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnauthenticated) << header;
    EXPECT_THAT(c.status().message(), HasSubstr(says)) << header;
  }
}

TEST(HttpCallerTest, AKnownCallerWithoutTheRoleIsDeniedNamingIt) {
  std::unique_ptr<Authenticator> auth = WithTokens();
  absl::StatusOr<Caller> alice =
      HttpCaller(*auth, WithAuthorization("Bearer alice-secret"), kRoleRead,
                 "read /metrics");
  EXPECT_EQ(alice.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(alice.status().message(),
              HasSubstr("read /metrics: caller 'alice' (roles: submit) needs "
                        "the read role"));
}

}  // namespace
}  // namespace jobd
