#include "server/frontend/auth.h"

#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_context.h"

namespace jobd {

absl::StatusOr<Caller> AuthenticateCall(
    const Authenticator& auth, const grpc::CallbackServerContext& context,
    std::string_view peer) {
  Credentials credentials{.peer = peer};
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    credentials.authorization =
        std::string_view(it->second.data(), it->second.size());
  }
  credentials.certificate_names = [&context] {
    std::vector<std::string> names;
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    if (auth == nullptr || !auth->IsPeerAuthenticated()) return names;
    for (const char* property :
         {"x509_common_name", "x509_subject_alternative_name"}) {
      for (const grpc::string_ref& name : auth->FindPropertyValues(property)) {
        names.emplace_back(name.data(), name.size());
      }
    }
    return names;
  };
  return auth.Authenticate(credentials);
}

}  // namespace jobd
