#include "server/metrics/tls_files.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <utility>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

// OpenSSL's latest error, as text, and its queue cleared.
std::string OpenSslError() {
  char text[256] = "no detail";
  const unsigned long e = ERR_peek_last_error();  // NOLINT(runtime/int)
  if (e != 0) ERR_error_string_n(e, text, sizeof text);
  ERR_clear_error();
  return text;
}

absl::Status FileError(const char* option, const std::string& path,
                       std::string_view what) {
  return absl::InvalidArgumentError(
      fmt::format("{}: '{}' {} (the metrics listener's TLS): {}", option, path,
                  what, OpenSslError()));
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;

}  // namespace

struct TlsFiles::Material {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  STACK_OF(X509) * chain = nullptr;
  X509_STORE* ca_store = nullptr;            // Null without a client CA.
  STACK_OF(X509_NAME) * ca_names = nullptr;  // Sent to ask for a certificate.
  Material() = default;
  Material(const Material&) = delete;
  Material& operator=(const Material&) = delete;
  ~Material() {
    X509_free(cert);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    X509_STORE_free(ca_store);
    sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
  }
};

absl::StatusOr<std::unique_ptr<TlsFiles>> TlsFiles::Load(
    std::string cert, std::string key, std::string client_ca) {
  std::unique_ptr<TlsFiles> files(
      new TlsFiles(std::move(cert), std::move(key), std::move(client_ca)));
  const std::string stamp = files->Stamp();
  absl::StatusOr<std::shared_ptr<const Material>> m = files->Read();
  if (!m.ok()) return m.status();
  absl::MutexLock lock(&files->mu_);
  files->material_ = *std::move(m);
  files->stamp_ = stamp;
  files->checked_ = absl::Now();
  return files;
}

TlsFiles::~TlsFiles() = default;

std::string TlsFiles::Stamp() const {
  std::string stamp;
  for (const std::string* path : {&cert_, &key_, &client_ca_}) {
    struct stat st {};
    if (path->empty() || stat(path->c_str(), &st) != 0) {
      stamp += "-;";
      continue;
    }
    stamp += fmt::format("{}:{}:{}.{};", st.st_ino, st.st_size,
                         st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }
  return stamp;
}

absl::StatusOr<std::shared_ptr<const TlsFiles::Material>> TlsFiles::Read()
    const {
  auto m = std::make_shared<Material>();
  Bio cert(BIO_new_file(cert_.c_str(), "r"), &BIO_free);
  if (cert == nullptr) return FileError("--tls-cert", cert_, "cannot be read");
  m->cert = PEM_read_bio_X509_AUX(cert.get(), nullptr, nullptr, nullptr);
  if (m->cert == nullptr) {
    return FileError("--tls-cert", cert_, "holds no PEM certificate");
  }
  m->chain = sk_X509_new_null();
  while (X509* next =
             PEM_read_bio_X509(cert.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(m->chain, next);
  }
  ERR_clear_error();  // The end of the file.
  Bio key(BIO_new_file(key_.c_str(), "r"), &BIO_free);
  if (key == nullptr) return FileError("--tls-key", key_, "cannot be read");
  m->key = PEM_read_bio_PrivateKey(key.get(), nullptr, nullptr, nullptr);
  if (m->key == nullptr) {
    return FileError("--tls-key", key_, "holds no PEM private key");
  }
  if (X509_check_private_key(m->cert, m->key) != 1) {
    return FileError("--tls-key", key_, "is not --tls-cert's key");
  }
  if (!client_ca_.empty()) {
    m->ca_store = X509_STORE_new();
    m->ca_names = SSL_load_client_CA_file(client_ca_.c_str());
    if (m->ca_store == nullptr || m->ca_names == nullptr ||
        X509_STORE_load_file(m->ca_store, client_ca_.c_str()) != 1) {
      return FileError("--tls-client-ca", client_ca_,
                       "holds no PEM CA certificate");
    }
  }
  return m;
}

bool TlsFiles::SetUp(SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      &ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  // No resumption: each connection is checked against the files as they
  // are (a rotated CA applies at once); scrapes are few.
  SSL_CTX_set_session_cache_mode(&ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(&ctx, 0);
  SSL_CTX_set_cert_cb(&ctx, &TlsFiles::OnCertificate, this);
  if (!client_ca_.empty()) {
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
  }
  return true;
}

std::shared_ptr<const TlsFiles::Material> TlsFiles::Current() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - checked_ < kRecheck) return material_;
  checked_ = now;
  std::string stamp = Stamp();
  if (stamp == stamp_) return material_;
  // A failed read is retried at the files' next change (a file being
  // written changes again when it is complete).
  stamp_ = std::move(stamp);
  absl::StatusOr<std::shared_ptr<const Material>> fresh = Read();
  if (fresh.ok()) {
    material_ = *std::move(fresh);
    spdlog::info("metrics listener: TLS files re-read ({})", cert_);
  } else {
    spdlog::warn("metrics listener: {}; still using the previous ones",
                 std::string(fresh.status().message()));
  }
  return material_;
}

int TlsFiles::OnCertificate(SSL* ssl, void* self) {
  const std::shared_ptr<const Material> m =
      static_cast<TlsFiles*>(self)->Current();
  // Each call takes its own references: the SSL keeps them past a reload.
  if (SSL_use_cert_and_key(ssl, m->cert, m->key, m->chain, 1) != 1) return 0;
  if (m->ca_store != nullptr) {
    STACK_OF(X509_NAME)* names = SSL_dup_CA_list(m->ca_names);
    if (names == nullptr || SSL_set1_verify_cert_store(ssl, m->ca_store) != 1) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      return 0;
    }
    SSL_set_client_CA_list(ssl, names);  // Takes them.
  }
  return 1;
}

}  // namespace jobd
