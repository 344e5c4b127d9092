// TlsFiles: the metrics listener's TLS material (--tls-cert, --tls-key,
// --tls-client-ca), re-read when the files change, as the gRPC listener's
// certificate provider does: a certificate can be rotated without a
// restart. It is OpenSSL's, through cpp-httplib's SSLServer: SetUp
// prepares the SSL_CTX (TLS 1.2 or later; with a client CA, a client
// certificate that CA signed is required) and installs a certificate
// callback that hands each new connection the current files' pair (and
// CA). The files are looked at again at a handshake at most once per
// kRecheck; a change that does not load (a half-written file, a key that
// does not match) keeps the previous material, with a warning, until the
// files load.
//
// Thread-safety: Load and SetUp on the owner's thread; the certificate
// callback runs on the listener's threads (mu_ guards the material).
// Ownership: owns its OpenSSL objects; must outlive the SSL_CTX it set up
// (the MetricsServer owns both, this one longer).
#ifndef JOBD_SERVER_METRICS_TLS_FILES_H_
#define JOBD_SERVER_METRICS_TLS_FILES_H_

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace jobd {

class TlsFiles {
 public:
  static constexpr absl::Duration kRecheck = absl::Seconds(1);

  // Reads the files; InvalidArgument naming the option whose file does not
  // load. `client_ca` empty: no client certificate asked.
  static absl::StatusOr<std::unique_ptr<TlsFiles>> Load(std::string cert,
                                                        std::string key,
                                                        std::string client_ca);
  ~TlsFiles();
  TlsFiles(const TlsFiles&) = delete;
  TlsFiles& operator=(const TlsFiles&) = delete;

  // Prepares `ctx` for a server with this material; false if OpenSSL
  // refuses.
  bool SetUp(SSL_CTX& ctx);

 private:
  struct Material;  // One consistent set: pair, chain, CA store and names.
  TlsFiles(std::string cert, std::string key, std::string client_ca)
      : cert_(std::move(cert)),
        key_(std::move(key)),
        client_ca_(std::move(client_ca)) {}
  // The files' identity (inode, size, modification time), to see a change.
  std::string Stamp() const;
  absl::StatusOr<std::shared_ptr<const Material>> Read() const;
  // The material for a new connection (re-read first if the files
  // changed).
  std::shared_ptr<const Material> Current();
  static int OnCertificate(SSL* ssl, void* self);

  // Const after construction.
  const std::string cert_, key_, client_ca_;

  absl::Mutex mu_;
  std::shared_ptr<const Material> material_ ABSL_GUARDED_BY(mu_);
  std::string stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace jobd

#endif  // JOBD_SERVER_METRICS_TLS_FILES_H_
