// The callers of the tests that use token auth, one per role, and the
// --auth-token flags that make a daemon know them (README: Security).
//
// Thread-safety: constants and a pure function. Ownership: none.
#ifndef JOBD_TESTS_INTEGRATION_TEST_TOKENS_H_
#define JOBD_TESTS_INTEGRATION_TEST_TOKENS_H_

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/frontend/auth.h"

namespace jobd::testing {

inline constexpr char kAlice[] = "alice-secret";  // submit
inline constexpr char kCarol[] = "carol-secret";  // submit
inline constexpr char kBob[] = "bob-secret";      // read
inline constexpr char kRoot[] = "root-secret";    // admin

// --auth-token NAME:ROLE:SHA256 for alice, carol, bob and root.
inline std::vector<std::string> TokenFlags() {
  std::vector<std::string> flags;
  for (const auto& [name, roles, token] :
       {std::tuple{"alice", "submit", kAlice},
        std::tuple{"carol", "submit", kCarol}, std::tuple{"bob", "read", kBob},
        std::tuple{"root", "admin", kRoot}}) {
    flags.push_back("--auth-token");
    flags.push_back(
        absl::StrCat(name, ":", roles, ":", Authenticator::Sha256Hex(token)));
  }
  return flags;
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_TEST_TOKENS_H_
