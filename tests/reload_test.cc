// Unit tests of ApplyConfig (server/reload.h), the SIGHUP reload, with real
// components and no listener: which settings apply live, and that new
// callers which would leave a TCP listener beyond loopback open to anyone
// are refused. Also CheckTcpExposure (server/config.h).
#include "server/daemon/reload.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/frontend/auth.h"
#include "server/frontend/service.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/scheduler.h"
#include "workers/sdk/task_registry.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

// sha256("alice-secret") and sha256("bob-secret").
constexpr char kAlice[] =
    "alice:submit+read:"
    "0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376";
constexpr char kBob[] =
    "bob:submit:"
    "9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99";

class ReloadTest : public ::testing::Test {
 protected:
  void Start(const std::string& tcp, bool tls) {
    current_.tcp_address = tcp;
    if (tls) {
      current_.tls_cert = "/etc/jobd/cert.pem";
      current_.tls_key = "/etc/jobd/key.pem";
    }
    current_.auth.tokens = {kAlice};
    auto auth = Authenticator::Create(current_.auth);
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = *std::move(auth);
    service_ = std::make_unique<JobServiceImpl>(
        scheduler_, registry_, *auth_, current_.service, "test", [] {});
  }
  ReloadResult Apply(const DaemonConfig& fresh) {
    return ApplyConfig(current_, fresh, scheduler_, *service_, exec_, http_,
                       *auth_);
  }

  RealClock clock_;
  Scheduler scheduler_{SchedulerOptions{}, clock_};
  TaskRegistry registry_;
  ExecPolicy exec_;
  HttpPolicy http_;
  DaemonConfig current_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<JobServiceImpl> service_;
};

TEST_F(ReloadTest, RefusesToDropAuthenticationBeyondLoopback) {
  Start("0.0.0.0:7443", /*tls=*/true);  // Never listened on: no server here.
  DaemonConfig fresh = current_;
  fresh.auth.tokens.clear();
  fresh.scheduler.max_queued = 7;
  const ReloadResult r = Apply(fresh);
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_THAT(r.refused[0], HasSubstr("--auth-token: 1 -> 0 entries"));
  EXPECT_THAT(r.refused[0], HasSubstr("non-loopback"));
  EXPECT_TRUE(auth_->required());              // Alice's token still counts.
  EXPECT_EQ(current_.auth.tokens.size(), 1u);  // And is what runs.
  // The rest of the reload applied.
  EXPECT_THAT(r.applied, ::testing::Contains(HasSubstr("--max-queued")));
  EXPECT_EQ(current_.scheduler.max_queued, 7u);

  // Another token in its place is fine.
  fresh.auth.tokens = {kBob};
  const ReloadResult swap = Apply(fresh);
  EXPECT_THAT(swap.refused, IsEmpty());
  EXPECT_THAT(swap.applied, ::testing::Contains(HasSubstr("--auth-token")));
  EXPECT_EQ(current_.auth.tokens, std::vector<std::string>{kBob});
}

// The metrics listener beyond loopback holds to the same rule: its
// callers cannot be dropped live either.
TEST_F(ReloadTest, RefusesToDropAuthenticationWhileMetricsListenBeyond) {
  Start("127.0.0.1:0", /*tls=*/true);
  current_.http_listen = "0.0.0.0:9464";  // Never listened on here.
  DaemonConfig fresh = current_;
  fresh.auth.tokens.clear();
  const ReloadResult r = Apply(fresh);
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_THAT(r.refused[0], HasSubstr("--auth-token: 1 -> 0 entries"));
  EXPECT_THAT(r.refused[0], HasSubstr("--http-listen: refusing"));
  EXPECT_TRUE(auth_->required());
}

TEST_F(ReloadTest, OnLoopbackCallersMayBeDroppedLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.auth.tokens.clear();
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.refused, IsEmpty());
  EXPECT_FALSE(auth_->required());
  EXPECT_THAT(current_.auth.tokens, IsEmpty());
}

TEST_F(ReloadTest, TheExecEnvironmentAllowlistChangesLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.exec.env_allow = {"TZ"};
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied, ::testing::Contains(HasSubstr("--exec-env-allow")));
  EXPECT_EQ(exec_.Get()->env_allow, std::vector<std::string>{"TZ"});
  EXPECT_EQ(current_.exec.env_allow, std::vector<std::string>{"TZ"});
}

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "jobd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseConfig(static_cast<int>(argv.size()), argv.data());
}

TEST(ConfigTest, PipelineDepthIsReadAndCheckedByName) {
  absl::StatusOr<ParsedArgs> none = Parse({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->config.process_pool.pipeline_depth, 4);  // The default.
  absl::StatusOr<ParsedArgs> one = Parse({"--pipeline-depth", "1"});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->config.process_pool.pipeline_depth, 1);
  for (const char* bad : {"0", "65", "two"}) {
    absl::StatusOr<ParsedArgs> refused = Parse({"--pipeline-depth", bad});
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("--pipeline-depth"))
        << bad;
  }
}

TEST(ConfigTest, ExecEnvAllowTakesVariableNamesFromFlagsAndTheFile) {
  absl::StatusOr<ParsedArgs> none = Parse({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(none->config.exec.env_allow, IsEmpty());  // The default.
  absl::StatusOr<ParsedArgs> flag =
      Parse({"--exec-env-allow", "TZ,http_proxy"});
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->config.exec.env_allow,
            (std::vector<std::string>{"TZ", "http_proxy"}));
  const std::string file = ::testing::TempDir() + "/jobd-env-allow.toml";
  std::ofstream(file) << "exec-env-allow = [\"LANG\", \"TZ\"]\n";
  absl::StatusOr<ParsedArgs> toml = Parse({"--config", file});
  ASSERT_TRUE(toml.ok()) << toml.status();
  EXPECT_EQ(toml->config.exec.env_allow,
            (std::vector<std::string>{"LANG", "TZ"}));
  std::remove(file.c_str());
  for (const char* bad : {"TAR-OPTIONS", "1X", "PATH", "JOBD_INSTANCE"}) {
    absl::StatusOr<ParsedArgs> r = Parse({"--exec-env-allow", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--exec-env-allow")) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(bad));
  }
}

TEST(ConfigTest, CallerWeightsFromFlagsAndTheFileRefusalsNameTheOption) {
  absl::StatusOr<ParsedArgs> none = Parse({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(none->config.scheduler.caller_weights, IsEmpty());
  absl::StatusOr<ParsedArgs> flag =
      Parse({"--caller-weight", "alice=3", "--caller-weight", "ci-bot=1000"});
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->config.scheduler.caller_weights,
            (std::map<std::string, uint32_t>{{"alice", 3}, {"ci-bot", 1000}}));
  const std::string file = ::testing::TempDir() + "/jobd-caller-weight.toml";
  std::ofstream(file) << "caller-weight = [\"alice=2\", \"bob=5\"]\n";
  absl::StatusOr<ParsedArgs> toml = Parse({"--config", file});
  ASSERT_TRUE(toml.ok()) << toml.status();
  EXPECT_EQ(toml->config.scheduler.caller_weights,
            (std::map<std::string, uint32_t>{{"alice", 2}, {"bob", 5}}));
  std::remove(file.c_str());
  for (const char* bad :
       {"alice", "=3", "alice=0", "alice=1001", "alice=x", "alice=1.5"}) {
    absl::StatusOr<ParsedArgs> r = Parse({"--caller-weight", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--caller-weight")) << bad;
  }
  absl::StatusOr<ParsedArgs> twice =
      Parse({"--caller-weight", "alice=3", "--caller-weight", "alice=2"});
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.status().message(), HasSubstr("more than once"));
}

// --caller-weight applies live.
TEST_F(ReloadTest, CallerWeightsApplyLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.scheduler.caller_weights = {{"alice", 3}};
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied, ::testing::Contains(HasSubstr("--caller-weight")));
  EXPECT_THAT(r.needs_restart, IsEmpty());
  EXPECT_EQ(current_.scheduler.caller_weights, fresh.scheduler.caller_weights);
}

// --http-allow applies live: jobs started after the reload use the new
// allowlist.
TEST_F(ReloadTest, HttpAllowlistAppliesLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  sockaddr_in loopback{};
  loopback.sin_family = AF_INET;
  loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto refusal = [&] {
    return http_.Get()->Refusal(reinterpret_cast<sockaddr*>(&loopback),
                                sizeof(loopback), "127.0.0.1");
  };
  EXPECT_THAT(refusal(), HasSubstr("loopback"));
  DaemonConfig fresh = current_;
  fresh.http_allow = {"127.0.0.0/8"};
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied, ::testing::Contains(HasSubstr("--http-allow")));
  EXPECT_EQ(refusal(), "");
  EXPECT_EQ(current_.http_allow, fresh.http_allow);
}

TEST_F(ReloadTest, CallbackPrefixesApplyLiveWhileTheKeyStays) {
  current_.callbacks.secret = "the first key, 16+ bytes";
  current_.service.spec.callback_allowed_prefixes = {"http://a.example/"};
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.service.spec.callback_allowed_prefixes = {"http://b.example/"};
  ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied,
              ::testing::Contains(HasSubstr("--callback-allowed-prefixes")));
  EXPECT_EQ(current_.service.spec.callback_allowed_prefixes,
            fresh.service.spec.callback_allowed_prefixes);
  // A new key needs a restart, and so do the prefixes that come with it;
  // the key is never shown.
  fresh.callbacks.secret = "the second key, 16+ bytes";
  fresh.service.spec.callback_allowed_prefixes = {"http://c.example/"};
  fresh.callbacks.max_attempts = 3;
  r = Apply(fresh);
  EXPECT_THAT(r.needs_restart,
              ::testing::Contains(HasSubstr("--callback-secret-file")));
  EXPECT_THAT(r.needs_restart,
              ::testing::Contains(HasSubstr("--callback-allowed-prefixes")));
  EXPECT_THAT(r.needs_restart,
              ::testing::Contains(HasSubstr("--callback-max-attempts")));
  for (const std::string& line : r.needs_restart) {
    EXPECT_THAT(line, ::testing::Not(HasSubstr("key, 16+")));
  }
  EXPECT_EQ(current_.service.spec.callback_allowed_prefixes,
            std::vector<std::string>{"http://b.example/"});
  EXPECT_EQ(current_.callbacks.secret, "the first key, 16+ bytes");
}

TEST(ConfigTest, ABadHttpAllowEntryIsRefusedByName) {
  const char* argv[] = {"jobd", "--http-allow", "127.0.0.1,10.0.0.0/99"};
  absl::StatusOr<ParsedArgs> parsed = ParseConfig(3, const_cast<char**>(argv));
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("--http-allow"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("10.0.0.0/99"));
}

TEST(ConfigTest, OutputBudgetsAndLogFormatAreCheckedByName) {
  absl::StatusOr<ParsedArgs> ok =
      Parse({"--output-bytes-per-job", "64K", "--max-output-bytes", "1M",
             "--log-format", "json"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->config.scheduler.output_bytes_per_job, 64u << 10);
  EXPECT_EQ(ok->config.scheduler.max_output_bytes, 1u << 20);
  EXPECT_EQ(ok->config.log_format, "json");
  EXPECT_EQ(Parse({})->config.log_format, "text");
  absl::StatusOr<ParsedArgs> bad = Parse({"--log-format", "xml"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--log-format"));
  bad = Parse({"--output-bytes-per-job", "2M", "--max-output-bytes", "1M"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--output-bytes-per-job"));
}

TEST_F(ReloadTest, OutputBudgetsApplyLiveTheLogFormatAtRestart) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.scheduler.output_bytes_per_job = 4096;
  fresh.log_format = "json";
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied,
              ::testing::Contains(HasSubstr("--output-bytes-per-job")));
  EXPECT_THAT(r.needs_restart, ::testing::Contains(HasSubstr("--log-format")));
  EXPECT_EQ(current_.scheduler.output_bytes_per_job, 4096u);
}

// A caller's name becomes Job.owner on the wire: it must be UTF-8.
TEST(ConfigTest, ACallerNameThatIsNotUtf8IsRefused) {
  const std::string token =
      std::string("caf\xe9:submit:") + std::string(64, 'a');
  const char* argv[] = {"jobd", "--auth-token", token.c_str()};
  absl::StatusOr<ParsedArgs> parsed = ParseConfig(3, const_cast<char**>(argv));
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("valid UTF-8"));
}

TEST_F(ReloadTest, ByteBudgetsApplyLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.scheduler.max_live_bytes = 1 << 20;
  fresh.scheduler.max_retained_bytes = 2 << 20;
  fresh.scheduler.max_retained_result_bytes = 64 << 10;
  fresh.service.quota_max_bytes = 8 << 20;
  fresh.service.stream_buffer_bytes = 4 << 20;
  fresh.service.total_stream_buffer_bytes = 16 << 20;
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.needs_restart, IsEmpty());
  for (const char* flag :
       {"--max-live-bytes: 134217728 -> 1048576",
        "--max-retained-bytes: 134217728 -> 2097152",
        "--max-retained-result-bytes: 0 -> 65536",
        "--quota-max-bytes: 67108864 -> 8388608",
        "--stream-buffer-bytes: 33554432 -> 4194304",
        "--total-stream-buffer-bytes: 134217728 -> 16777216"}) {
    EXPECT_THAT(r.applied, ::testing::Contains(flag));
  }
  EXPECT_EQ(current_.scheduler.max_live_bytes, 1u << 20);
  EXPECT_EQ(current_.scheduler.max_retained_bytes, 2u << 20);
  EXPECT_EQ(current_.scheduler.max_retained_result_bytes, 64u << 10);
  EXPECT_EQ(service_->limits().quota_max_bytes, 8u << 20);
  EXPECT_EQ(service_->limits().stream_buffer_bytes, 4u << 20);
  EXPECT_EQ(service_->limits().total_stream_buffer_bytes, 16u << 20);
}

TEST_F(ReloadTest, AQuotaOfBytesAloneAppliesLive) {
  // Changed alone, not carried in by another service limit's change.
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.service.quota_max_bytes = 8 << 20;
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied,
              ::testing::Contains("--quota-max-bytes: 67108864 -> 8388608"));
  EXPECT_EQ(service_->limits().quota_max_bytes, 8u << 20);
}

TEST_F(ReloadTest, MaxDependenciesAppliesLive) {
  Start("127.0.0.1:0", /*tls=*/false);
  DaemonConfig fresh = current_;
  fresh.service.spec.max_dependencies = 10;
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(r.applied, ::testing::Contains("--max-dependencies: 1000 -> 10"));
  EXPECT_EQ(service_->limits().spec.max_dependencies, 10u);
}

// The plugins to load: the --plugin files in the order given (made
// absolute), then --plugin-dir's *.so files in name order; the fork server
// is told the same list.
TEST(ConfigTest, PluginsAreTheFilesThenTheDirectoryInNameOrder) {
  const std::string dir = ::testing::TempDir() + "/jobd-plugin-dir";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/z.so") << "";
  std::ofstream(dir + "/a.so") << "";
  std::ofstream(dir + "/readme.txt") << "";
  absl::StatusOr<ParsedArgs> r = Parse(
      {"--plugin", "rel.so", "--plugin", "/opt/b.so", "--plugin-dir", dir});
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string cwd = std::filesystem::current_path().string();
  const std::vector<std::string> expected = {cwd + "/rel.so", "/opt/b.so",
                                             dir + "/a.so", dir + "/z.so"};
  EXPECT_EQ(r->config.plugins, expected);
  std::vector<std::string> told;
  const std::vector<std::string>& args =
      r->config.process_pool.fork_server_args;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--plugin") told.push_back(args[i + 1]);
  }
  EXPECT_EQ(told, expected);

  const std::string file = ::testing::TempDir() + "/jobd-plugins.toml";
  std::ofstream(file) << "plugin = [\"/opt/b.so\", \"/opt/c.so\"]\n"
                      << "plugin-dir = \"" << dir << "\"\n";
  r = Parse({"--config", file});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.plugins,
            (std::vector<std::string>{"/opt/b.so", "/opt/c.so", dir + "/a.so",
                                      dir + "/z.so"}));
  std::remove(file.c_str());

  // A file named twice, here through a link, is loaded once.
  std::filesystem::create_symlink(dir + "/a.so", dir + "/b.so");
  r = Parse({"--plugin", dir + "/z.so", "--plugin-dir", dir});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.plugins,
            (std::vector<std::string>{dir + "/z.so", dir + "/a.so"}));
  std::filesystem::remove_all(dir);

  r = Parse({"--plugin-dir", dir + "/gone"});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("--plugin-dir"));
  EXPECT_THAT(r.status().message(), HasSubstr("is not a directory"));
}

// Plugins are loaded at start only: a change is reported, not applied.
TEST_F(ReloadTest, APluginChangeNeedsARestart) {
  Start("127.0.0.1:0", /*tls=*/false);
  current_.plugins = {"/opt/a.so"};
  DaemonConfig fresh = current_;
  fresh.plugins = {"/opt/a.so", "/opt/b.so"};
  const ReloadResult r = Apply(fresh);
  EXPECT_THAT(
      r.needs_restart,
      ::testing::Contains("--plugin: '/opt/a.so' -> '/opt/a.so,/opt/b.so'"));
  EXPECT_THAT(r.applied, IsEmpty());
}

TEST(TcpExposureTest, BeyondLoopbackNeedsTlsAndAuthentication) {
  for (const char* address :
       {"127.0.0.1:50051", "127.8.9.1:1", "[::1]:50051", "localhost:1"}) {
    EXPECT_TRUE(CheckTcpExposure(address, false, false).ok()) << address;
  }
  for (const char* address : {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:1",
                              "example.org:1", "128.0.0.1:1"}) {
    EXPECT_FALSE(CheckTcpExposure(address, false, true).ok()) << address;
    EXPECT_FALSE(CheckTcpExposure(address, true, false).ok()) << address;
    EXPECT_TRUE(CheckTcpExposure(address, true, true).ok()) << address;
  }
}

TEST(HttpExposureTest, BeyondLoopbackNeedsTlsAndAuthenticationNamingIt) {
  for (const char* address : {"127.0.0.1:9464", "[::1]:0", "localhost:1"}) {
    EXPECT_TRUE(CheckHttpExposure(address, false, false).ok()) << address;
  }
  for (const char* address : {"0.0.0.0:9464", "[::]:9464", "10.0.0.1:1"}) {
    const absl::Status no_auth = CheckHttpExposure(address, true, false);
    EXPECT_THAT(no_auth.message(), HasSubstr("--http-listen: refusing"));
    EXPECT_THAT(no_auth.message(), HasSubstr("without authentication"));
    const absl::Status no_tls = CheckHttpExposure(address, false, true);
    EXPECT_THAT(no_tls.message(), HasSubstr("--http-listen: refusing"));
    EXPECT_THAT(no_tls.message(), HasSubstr("without TLS (--tls-cert"));
    EXPECT_FALSE(CheckHttpExposure(address, false, false).ok()) << address;
    EXPECT_TRUE(CheckHttpExposure(address, true, true).ok()) << address;
  }
}

}  // namespace
}  // namespace jobd
