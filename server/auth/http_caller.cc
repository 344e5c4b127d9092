#include "server/auth/http_caller.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

namespace jobd {
namespace {

std::string AsString(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

// The names of the connection's verified client certificate (none without
// one): its subject CN and its DNS, URI and email SANs, as gRPC's
// x509_common_name and x509_subject_alternative_name give them.
std::vector<std::string> PeerCertificateNames(const SSL* ssl) {
  std::vector<std::string> names;
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return names;
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      SSL_get1_peer_certificate(ssl), &X509_free);
  if (cert == nullptr) return names;
  const X509_NAME* subject = X509_get_subject_name(cert.get());
  for (int i = -1;
       (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
    names.push_back(
        AsString(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i))));
  }
  std::unique_ptr<GENERAL_NAMES, decltype(&GENERAL_NAMES_free)> sans(
      static_cast<GENERAL_NAMES*>(
          X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)),
      &GENERAL_NAMES_free);
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans.get(), i);
    if (name->type == GEN_DNS || name->type == GEN_URI ||
        name->type == GEN_EMAIL) {
      names.push_back(AsString(name->d.ia5));
    }
  }
  return names;
}

}  // namespace

absl::StatusOr<Caller> HttpCaller(const Authenticator& auth,
                                  const httplib::Request& req, uint32_t roles,
                                  std::string_view what) {
  std::string header;
  Credentials credentials{.peer = "tcp"};
  if (req.has_header("Authorization")) {
    header = req.get_header_value("Authorization");
    credentials.authorization = header;
  }
  credentials.certificate_names = [&req] {
    return PeerCertificateNames(req.ssl);
  };
  absl::StatusOr<Caller> caller = auth.Authenticate(credentials);
  if (!caller.ok()) return caller.status();
  if (absl::Status s = caller->Require(roles, what); !s.ok()) return s;
  return caller;
}

}  // namespace jobd
