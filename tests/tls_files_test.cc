// TlsFiles (server/metrics/tls_files.h): the metrics listener's TLS files
// load, and each file that does not is refused naming its option and path.
// Serving, rotation and client certificates over real connections are in
// integration/metrics_test.cc.
#include "server/metrics/tls_files.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/jobd-tls-files-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    // Two self-signed pairs, a and b, made by the openssl CLI.
    for (const char* name : {"a", "b"}) {
      const std::string command =
          "/usr/bin/openssl req -x509 -newkey ec -pkeyopt "
          "ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=" +
          std::string(name) + " -keyout " + Path(name) + ".key -out " +
          Path(name) + ".pem 2>/dev/null";
      ASSERT_EQ(std::system(command.c_str()), 0) << command;
    }
    std::ofstream(Path("junk")) << "not PEM\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

TEST_F(TlsFilesTest, APairAndACaLoad) {
  EXPECT_TRUE(TlsFiles::Load(Path("a.pem"), Path("a.key"), "").ok());
  auto with_ca = TlsFiles::Load(Path("a.pem"), Path("a.key"), Path("b.pem"));
  ASSERT_TRUE(with_ca.ok()) << with_ca.status();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  ASSERT_NE(ctx, nullptr);
  EXPECT_TRUE((*with_ca)->SetUp(*ctx));
  EXPECT_EQ(SSL_CTX_get_verify_mode(ctx),
            SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  SSL_CTX_free(ctx);
}

TEST_F(TlsFilesTest, EachUnusableFileIsRefusedNamingItsOption) {
  const struct {
    std::string cert, key, ca, says;
  } cases[] = {
      {Path("missing.pem"), Path("a.key"), "",
       "--tls-cert: '" + Path("missing.pem") + "' cannot be read"},
      {Path("junk"), Path("a.key"), "",
       "--tls-cert: '" + Path("junk") + "' holds no PEM certificate"},
      {Path("a.pem"), Path("junk"), "",
       "--tls-key: '" + Path("junk") + "' holds no PEM private key"},
      {Path("a.pem"), Path("b.key"), "",
       "--tls-key: '" + Path("b.key") + "' is not --tls-cert's key"},
      {Path("a.pem"), Path("a.key"), Path("junk"),
       "--tls-client-ca: '" + Path("junk") + "' holds no PEM CA certificate"},
  };
  for (const auto& c : cases) {
    auto files = TlsFiles::Load(c.cert, c.key, c.ca);
    ASSERT_FALSE(files.ok()) << c.says;
    EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(files.status().message(), HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace jobd
