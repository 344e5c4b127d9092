// Pki: certificates for a test, made with the openssl CLI in a temporary
// directory: a CA, a server certificate for 127.0.0.1 and localhost, and
// a client certificate (CN "alice-cert") the CA signed. The TLS tests of
// the gRPC listener (security_test.cc) and of the metrics listener
// (metrics_test.cc) use it.
//
// Thread-safety: build it on the test's thread. Ownership: the files are
// in `dir`, which the test owns.
#ifndef JOBD_TESTS_INTEGRATION_TEST_PKI_H_
#define JOBD_TESTS_INTEGRATION_TEST_PKI_H_

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::testing {

class Pki {
 public:
  explicit Pki(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    Run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=jobd-test-ca", "-keyout",
         Path("ca.key"), "-out", Path("ca.pem")});
    Issue("server", "/CN=jobd-test-server",
          "subjectAltName=IP:127.0.0.1,DNS:localhost");
    Issue("client", "/CN=alice-cert", "");
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  bool ok() const { return ok_; }

 private:
  void Issue(const std::string& name, const std::string& subject,
             const std::string& san) {
    Run({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", subject, "-keyout", Path(name + ".key"), "-out",
         Path(name + ".csr")});
    std::vector<std::string> sign = {"x509",
                                     "-req",
                                     "-in",
                                     Path(name + ".csr"),
                                     "-CA",
                                     Path("ca.pem"),
                                     "-CAkey",
                                     Path("ca.key"),
                                     "-CAcreateserial",
                                     "-days",
                                     "2",
                                     "-out",
                                     Path(name + ".pem")};
    if (!san.empty()) {
      std::ofstream(Path(name + ".ext")) << san << "\n";
      sign.insert(sign.end(), {"-extfile", Path(name + ".ext")});
    }
    Run(sign);
  }
  void Run(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    const CommandResult r = RunCommand(args);
    if (r.exit_code != 0) {
      ok_ = false;
      ADD_FAILURE() << "openssl: " << r.err;
    }
  }
  std::string dir_;
  bool ok_ = true;
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_TEST_PKI_H_
