// Integration tests of jobd's security rules against the real daemon:
// tokens and roles (none, bad, wrong role, another caller's job), quotas
// (live jobs, submit rate, streams) while a well-behaved client is served,
// TLS and mTLS (with certificates made by openssl for the test), plaintext
// refused beyond loopback, the Unix socket's permissions, the runtime and
// state directories (refused when others could change them), the workers'
// sandbox, and every request limit crossed.
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/frontend/auth.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;
using testing::StreamResult;
using testing::TempDir;
using testing::WaitFor;

constexpr char kAlice[] = "alice-secret";  // submit
constexpr char kCarol[] = "carol-secret";  // submit
constexpr char kBob[] = "bob-secret";      // read
constexpr char kRoot[] = "root-secret";    // admin

std::vector<std::string> TokenFlags() {
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

// A context carrying `token` (none if empty).
void WithToken(grpc::ClientContext& ctx, const std::string& token) {
  Deadline(ctx, absl::Seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

class SecurityTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args) {
    args.insert(args.end(), {"--shutdown-grace", "100ms"});
    auto d = Daemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    // Over TCP (127.0.0.1): with --unix-socket-auth trusted the socket
    // would make everyone the local admin.
    channel_ = grpc::CreateChannel(daemon_->tcp_address(),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel_);
  }

  grpc::Status Stats(const std::string& token) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::GetStatsResponse r;
    return stub_->GetStats(&ctx, {}, &r);
  }

  // Submits `specs` as `token`; the stream's events and status.
  StreamResult Submit(const std::string& token,
                      const std::vector<v1::JobSpec>& specs) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    Deadline(ctx, absl::Seconds(60));
    return testing::SubmitAll(ctx, *stub_, specs);
  }

  // Submits `specs` as `token` and returns their ACCEPTED / REJECTED
  // events without waiting for the jobs to end (they run on).
  std::vector<v1::JobEvent> Admit(const std::string& token,
                                  const std::vector<v1::JobSpec>& specs) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    auto stream = stub_->Submit(&ctx);
    stream->Write(testing::SubmitRequestOf(specs));
    std::vector<v1::JobEvent> admitted;
    v1::SubmitResponse resp;
    while (admitted.size() < specs.size() && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED ||
            e.type() == v1::EVENT_TYPE_REJECTED) {
          admitted.push_back(e);
        }
      }
    }
    ctx.TryCancel();
    stream->Finish();
    return admitted;
  }

  grpc::Status GetJob(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    return stub_->GetJob(&ctx, req, &job);
  }

  grpc::Status Cancel(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::CancelJobResponse resp;
    return stub_->CancelJob(&ctx, req, &resp);
  }

  std::vector<std::string> ListIds(const std::string& token) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::ListJobsResponse resp;
    EXPECT_TRUE(stub_->ListJobs(&ctx, {}, &resp).ok());
    std::vector<std::string> ids;
    for (const v1::Job& j : resp.jobs()) ids.push_back(j.id());
    return ids;
  }

  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(SecurityTest, TokensAndRolesDecideWhoMayDoWhat) {
  std::vector<std::string> flags = TokenFlags();
  StartDaemon(flags);
  // No token, a bad token, a malformed header.
  EXPECT_EQ(Stats("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Stats("wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    ctx.AddMetadata("authorization", "Basic xyz");
    v1::GetStatsResponse r;
    EXPECT_EQ(stub_->GetStats(&ctx, {}, &r).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(Submit("", {Spec("echo", {1})}).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The right token.
  EXPECT_TRUE(Stats(kAlice).ok());
  EXPECT_TRUE(Stats(kBob).ok());
  // Wrong role: bob reads, he does not submit.
  const StreamResult denied = Submit(kBob, {Spec("echo", {1})});
  EXPECT_EQ(denied.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.status.error_message(),
              HasSubstr("needs the submit role"));

  // Alice's job is hers.
  const std::vector<v1::JobEvent> a = Admit(kAlice, {Spec("sleep", {60000})});
  ASSERT_EQ(a.size(), 1u);
  const std::string id = a[0].job_id();
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(GetJob(kAlice, id).ok());
  EXPECT_EQ(GetJob(kBob, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetJob(kCarol, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetJob(kRoot, id).ok());
  EXPECT_THAT(ListIds(kAlice), ::testing::ElementsAre(id));
  EXPECT_THAT(ListIds(kCarol), ::testing::IsEmpty());
  EXPECT_THAT(ListIds(kRoot), ::testing::ElementsAre(id));
  // Cancelling: not bob (read only), not carol (not hers), root may.
  EXPECT_EQ(Cancel(kBob, id).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Cancel(kCarol, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Cancel(kRoot, id).ok());
  // Admin-only calls.
  for (const std::string& who : {std::string(kAlice), std::string(kBob)}) {
    grpc::ClientContext c1, c2;
    WithToken(c1, who);
    WithToken(c2, who);
    v1::ClearQuarantineRequest q;
    q.set_task("echo");
    v1::ClearQuarantineResponse qr;
    EXPECT_EQ(stub_->ClearQuarantine(&c1, q, &qr).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    v1::DrainResponse dr;
    EXPECT_EQ(stub_->Drain(&c2, {}, &dr).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // Idempotency keys are per caller: carol's does not find alice's job.
  v1::JobSpec keyed = Spec("echo", {1});
  keyed.set_idempotency_key("k1");
  const StreamResult ka = Submit(kAlice, {keyed});
  const StreamResult kc = Submit(kCarol, {keyed});
  ASSERT_FALSE(ka.Terminal().empty());
  ASSERT_FALSE(kc.Terminal().empty());
  EXPECT_NE(ka.Terminal()[0].job_id(), kc.Terminal()[0].job_id());
  // Watching everything shows a caller only its own jobs.
  {
    grpc::ClientContext ctx;
    WithToken(ctx, kCarol);
    v1::WatchJobsRequest req;
    req.set_after_sequence(1);
    auto reader = stub_->WatchJobs(&ctx, req);
    v1::WatchJobsResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    for (const v1::JobEvent& e : resp.events()) {
      EXPECT_EQ(e.job_id(), kc.Terminal()[0].job_id());
    }
    ctx.TryCancel();
  }
  // Jobs say whose they are.
  grpc::ClientContext ctx;
  WithToken(ctx, kRoot);
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
  EXPECT_EQ(job.owner(), "alice");
  // The admin may drain.
  grpc::ClientContext drain;
  WithToken(drain, kRoot);
  v1::DrainResponse dr;
  EXPECT_TRUE(stub_->Drain(&drain, {}, &dr).ok());
  auto status = daemon_->Stop(0, absl::Seconds(15));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

TEST_F(SecurityTest, TheUnixSocketIsTrustedOrNotAsConfigured) {
  std::vector<std::string> flags = TokenFlags();
  StartDaemon(flags);
  auto unix_stub = daemon_->NewStub();
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatsResponse r;
  EXPECT_TRUE(unix_stub->GetStats(&ctx, {}, &r).ok());  // Local admin.
  flags.insert(flags.end(), {"--unix-socket-auth", "token"});
  StartDaemon(flags);
  unix_stub = daemon_->NewStub();
  grpc::ClientContext ctx2;
  Deadline(ctx2);
  EXPECT_EQ(unix_stub->GetStats(&ctx2, {}, &r).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // jobctl with --token (or $JOBD_TOKEN) is let in.
  const testing::CommandResult ok = testing::RunCommand(
      {testing::JobctlPath(), "--address", daemon_->unix_address(), "submit",
       "echo", "7", "--wait"},
      "", absl::Seconds(30), {std::string("JOBD_TOKEN=") + kAlice});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "7\n");
  const testing::CommandResult no = testing::RunCommand(
      {testing::JobctlPath(), "--address", daemon_->unix_address(), "stats"});
  EXPECT_NE(no.exit_code, 0);
  EXPECT_THAT(no.err, HasSubstr("authentication required"));
}

TEST_F(SecurityTest, TheLiveJobQuotaRefusesTheThirdJob) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--quota-max-live", "2"});
  StartDaemon(flags);
  const std::vector<v1::JobEvent> live = Admit(
      kAlice,
      {Spec("sleep", {60000}), Spec("sleep", {60000}), Spec("sleep", {60000})});
  ASSERT_EQ(live.size(), 3u);
  int refused = 0;
  for (const v1::JobEvent& e : live) {
    if (e.type() != v1::EVENT_TYPE_REJECTED) continue;
    ++refused;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(e.error().message(), HasSubstr("quota-max-live"));
  }
  EXPECT_EQ(refused, 1);
  // Another caller, and the admin, are not held up by alice's jobs.
  const StreamResult carol = Submit(kCarol, {Spec("echo", {1})});
  ASSERT_EQ(carol.Terminal().size(), 1u);
  EXPECT_EQ(carol.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(SecurityTest, ARateBelowOnePerSecondStillAdmitsJobs) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--quota-submit-rate", "0.5"});
  StartDaemon(flags);
  const StreamResult burst =
      Submit(kCarol, std::vector<v1::JobSpec>(3, Spec("echo", {1})));
  int accepted = 0;
  for (const v1::JobEvent& e : burst.events) {
    accepted += e.type() == v1::EVENT_TYPE_ACCEPTED;
    if (e.type() == v1::EVENT_TYPE_REJECTED) {
      EXPECT_THAT(e.error().message(), HasSubstr("retry in"));
    }
  }
  EXPECT_EQ(accepted, 1);  // One now, the next in 2 s.
}

TEST_F(SecurityTest, RateAndStreamQuotasRefuseTheGreedyAndServeTheRest) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(),
               {"--quota-submit-rate", "5", "--max-streams-per-caller", "3"});
  StartDaemon(flags);
  // Rate: of 20 at once, carol gets her 5 a second, the rest are told when
  // to retry.
  const StreamResult burst =
      Submit(kCarol, std::vector<v1::JobSpec>(20, Spec("echo", {1})));
  int accepted = 0, limited = 0;
  for (const v1::JobEvent& e : burst.events) {
    accepted += e.type() == v1::EVENT_TYPE_ACCEPTED;
    if (e.type() == v1::EVENT_TYPE_REJECTED) {
      ++limited;
      EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_THAT(e.error().message(), HasSubstr("retry in"));
    }
  }
  EXPECT_EQ(accepted, 5);
  EXPECT_EQ(limited, 15);
  // Streams: a flood of watches from carol stops at 3 (once the server has
  // seen her Submit stream above end: until then it holds one place)...
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>>>
      readers;
  const absl::Time open_by = absl::Now() + absl::Seconds(10);
  while (readers.size() < 3 && absl::Now() < open_by) {
    auto context = std::make_unique<grpc::ClientContext>();
    WithToken(*context, kCarol);
    auto reader = stub_->WatchJobs(context.get(), {});
    v1::WatchJobsResponse header;
    if (reader->Read(&header)) {  // Open for sure.
      contexts.push_back(std::move(context));
      readers.push_back(std::move(reader));
      continue;
    }
    const grpc::Status refused = reader->Finish();
    ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << refused.error_message();
    absl::SleepFor(absl::Milliseconds(20));  // Polling.
  }
  ASSERT_EQ(readers.size(), 3u);
  grpc::ClientContext fourth;
  WithToken(fourth, kCarol);
  auto over = stub_->WatchJobs(&fourth, {});
  v1::WatchJobsResponse ignored;
  EXPECT_FALSE(over->Read(&ignored));
  const grpc::Status s = over->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("max-streams-per-caller"));
  // ...while everyone else is served, and the admin is not limited.
  EXPECT_TRUE(Stats(kBob).ok());
  const StreamResult alice = Submit(kAlice, {Spec("echo", {1})});
  ASSERT_EQ(alice.Terminal().size(), 1u);
  EXPECT_EQ(alice.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  const StreamResult root =
      Submit(kRoot, std::vector<v1::JobSpec>(20, Spec("echo", {1})));
  EXPECT_EQ(root.Terminal().size(), 20u);
  for (const v1::JobEvent& e : root.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
  }
  for (auto& c : contexts) c->TryCancel();
  for (auto& r : readers) r->Finish();
  // A closed stream frees its place (once the server has seen it end).
  bool reopened = false;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!reopened && absl::Now() < end) {
    grpc::ClientContext again;
    WithToken(again, kCarol);
    auto stream = stub_->WatchJobs(&again, {});
    v1::WatchJobsResponse header;
    reopened = stream->Read(&header);
    again.TryCancel();
    stream->Finish();
    if (!reopened) absl::SleepFor(absl::Milliseconds(20));  // Polling.
  }
  EXPECT_TRUE(reopened);
}

// Certificates for a test: a CA, a server certificate for 127.0.0.1 and a
// client certificate (CN "alice-cert"), made with the openssl CLI.
class Pki {
 public:
  explicit Pki(const std::string& dir) : dir_(dir) {
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
    const testing::CommandResult r = testing::RunCommand(args);
    if (r.exit_code != 0) {
      ok_ = false;
      ADD_FAILURE() << "openssl: " << r.err;
    }
  }
  std::string dir_;
  bool ok_ = true;
};

absl::StatusOr<std::unique_ptr<client::Client>> TlsClient(
    const Daemon& daemon, const Pki& pki, bool client_cert,
    const std::string& token = "") {
  client::ClientOptions o;
  o.address = daemon.tcp_address();
  o.connect_timeout = absl::Seconds(3);
  o.token = token;
  o.tls.enabled = true;
  o.tls.ca_file = pki.Path("ca.pem");
  if (client_cert) {
    o.tls.cert_file = pki.Path("client.pem");
    o.tls.key_file = pki.Path("client.key");
  }
  return client::Client::Connect(o);
}

TEST(TlsTest, TlsWithTokensAndMutualTlsWithIdentities) {
  TempDir dir("jobd-security-test");
  Pki pki(dir.path());
  ASSERT_TRUE(pki.ok());
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--tls-cert", pki.Path("server.pem"), "--tls-key",
                             pki.Path("server.key")});
  {
    auto daemon = Daemon::Start(flags);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    // TLS and a token: served.
    auto c = TlsClient(**daemon, pki, false, kAlice);
    ASSERT_TRUE(c.ok()) << c.status();
    auto out = (*c)->Submit(client::MakeSpec("echo", 5)).Get(absl::Seconds(10));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->result.value().number_value(), 5);
    // Plaintext to the TLS port: no connection.
    client::ClientOptions plain;
    plain.address = (*daemon)->tcp_address();
    plain.connect_timeout = absl::Seconds(1);
    EXPECT_EQ(client::Client::Connect(plain).status().code(),
              absl::StatusCode::kUnavailable);
    // jobctl speaks TLS too.
    const testing::CommandResult r = testing::RunCommand(
        {testing::JobctlPath(), "--address", (*daemon)->tcp_address(),
         "--tls-ca", pki.Path("ca.pem"), "--token", kAlice, "submit", "echo",
         "9", "--wait"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "9\n");
  }
  // mTLS: the client certificate is the identity.
  flags.insert(flags.end(), {"--tls-client-ca", pki.Path("ca.pem"),
                             "--tls-identity", "alice-cert:submit"});
  auto daemon = Daemon::Start(flags);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto with_cert = TlsClient(**daemon, pki, true);
  ASSERT_TRUE(with_cert.ok()) << with_cert.status();
  const client::Future f = (*with_cert)->Submit(client::MakeSpec("echo", 1));
  ASSERT_TRUE(f.Get(absl::Seconds(10)).ok());
  auto job = (*with_cert)->GetJob(*f.job_id(absl::Seconds(5)));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->owner(), "alice-cert");
  EXPECT_FALSE(TlsClient(**daemon, pki, false).ok());  // No certificate.
}

TEST(ListenerTest, PlaintextBeyondLoopbackIsRefused) {
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{},
        std::vector<std::string>{"--tls-cert", "/etc/hostname", "--tls-key",
                                 "/etc/hostname"}}) {
    TempDir dir("jobd-security-test");
    std::vector<std::string> argv = {
        testing::JobdPath(),  "--tcp", "0.0.0.0:0",
        "--unix-socket",      "none",  "--state-dir",
        dir.path() + "/state"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const testing::CommandResult r = testing::RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("refusing to listen on non-loopback"));
  }
}

TEST(ListenerTest, TheUnixSocketIsOwnerOnlyOrGroupAsConfigured) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string path = (*daemon)->unix_address().substr(5);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);  // Nobody but its owner.
  ASSERT_EQ(stat(std::filesystem::path(path).parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
  const struct group* g = getgrgid(getgid());
  ASSERT_NE(g, nullptr);
  auto shared = Daemon::Start({"--unix-socket-group", g->gr_name});
  ASSERT_TRUE(shared.ok()) << shared.status();
  const std::string shared_path = (*shared)->unix_address().substr(5);
  ASSERT_EQ(stat(shared_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, g->gr_gid);
  ASSERT_EQ(stat(std::filesystem::path(shared_path).parent_path().c_str(), &st),
            0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
}

// Runs jobd with `args` (no TCP listener) and expects it to refuse to start.
testing::CommandResult RunRefusedJobd(std::vector<std::string> args) {
  args.insert(args.begin(), testing::JobdPath());
  args.insert(args.end(), {"--tcp", "none"});
  return testing::RunCommand(args, "", absl::Seconds(20));
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

TEST(DirectoryTest, RuntimeAndStateDirectoriesOthersCanWriteAreRefused) {
  TempDir dir("jobd-dir-test");
  ASSERT_FALSE(dir.path().empty());
  const std::string open = dir.path() + "/open";  // 0777 runtime dir.
  ASSERT_EQ(mkdir(open.c_str(), 0700), 0);
  ASSERT_EQ(chmod(open.c_str(), 0777), 0);
  testing::CommandResult r =
      RunRefusedJobd({"--unix-socket", open + "/jobd.sock", "--state-dir",
                      dir.path() + "/state"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--unix-socket: refusing to use " + open +
                               ": it is writable by its group and others "
                               "(mode 0777"));
  EXPECT_THAT(r.err, HasSubstr("chmod go-w " + open));
  EXPECT_FALSE(std::filesystem::exists(open + "/jobd.sock"));
  // A group-writable state directory.
  const std::string state = dir.path() + "/state-g";
  ASSERT_EQ(mkdir(state.c_str(), 0700), 0);
  ASSERT_EQ(chmod(state.c_str(), 0770), 0);
  r = RunRefusedJobd(
      {"--unix-socket", dir.path() + "/run/jobd.sock", "--state-dir", state});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--state-dir: refusing to use " + state +
                               ": it is writable by its group (mode 0770"));
  EXPECT_FALSE(std::filesystem::exists(state + "/jobd.db"));
  // A directory above them that others may write to, not sticky (as /tmp
  // is, which every other test has above its directories).
  ASSERT_EQ(chmod(open.c_str(), 0777), 0);
  r = RunRefusedJobd({"--unix-socket", open + "/run/jobd.sock", "--state-dir",
                      dir.path() + "/state"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the directory above it, " + open +
                               ", is writable by its group and others "
                               "(mode 0777"));
  EXPECT_FALSE(std::filesystem::exists(open + "/run"));
}

TEST(DirectoryTest, DirectoriesOfAnotherUserAreRefused) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root to give a directory to another user";
  }
  const struct passwd* nobody = getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  TempDir dir("jobd-dir-test");
  ASSERT_FALSE(dir.path().empty());
  for (const bool runtime : {true, false}) {
    const std::string theirs = dir.path() + (runtime ? "/run" : "/state");
    ASSERT_EQ(mkdir(theirs.c_str(), 0700), 0);
    ASSERT_EQ(chown(theirs.c_str(), nobody->pw_uid, nobody->pw_gid), 0);
    const testing::CommandResult r = RunRefusedJobd(
        {"--unix-socket",
         runtime ? theirs + "/jobd.sock" : dir.path() + "/ok/jobd.sock",
         "--state-dir", runtime ? dir.path() + "/ok-state" : theirs});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat(
                           runtime ? "--unix-socket" : "--state-dir",
                           ": refusing to use ", theirs,
                           ": it is owned by nobody (uid ", nobody->pw_uid,
                           ") (mode 0700), not by jobd's user")));
    EXPECT_THAT(r.err, HasSubstr("chown root " + theirs));
    EXPECT_EQ(std::filesystem::exists(theirs + "/jobd.sock") ||
                  std::filesystem::exists(theirs + "/jobd.db"),
              false);
  }
}

TEST(DirectoryTest, FreshDirectoriesAreCreatedPrivateWhateverTheUmask) {
  TempDir dir("jobd-dir-test");
  ASSERT_FALSE(dir.path().empty());
  const std::string run = dir.path() + "/run/jobd";
  const std::string state = dir.path() + "/state/jobd";
  const mode_t old_umask = umask(0);  // jobd inherits it.
  absl::StatusOr<testing::ReadyProcess> jobd = testing::SpawnReady(
      {testing::JobdPath(), "--unix-socket", run + "/jobd.sock", "--tcp",
       "none", "--state-dir", state},
      "try:", dir.path() + "/stderr.log", absl::Seconds(20));
  umask(old_umask);
  ASSERT_TRUE(jobd.ok()) << jobd.status();
  EXPECT_EQ(ModeOf(run), 0700u);
  EXPECT_EQ(ModeOf(state), 0700u);
  // The directories above them that jobd made: nobody else may write there.
  EXPECT_EQ(ModeOf(dir.path() + "/run"), 0755u);
  EXPECT_EQ(ModeOf(dir.path() + "/state"), 0755u);
  EXPECT_EQ(ModeOf(run + "/jobd.sock") & 077, 0u);
  struct stat st {};
  ASSERT_EQ(stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, geteuid());
  absl::StatusOr<int> status =
      testing::StopProcess(jobd->pid, SIGTERM, absl::Seconds(10));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
}

TEST(DirectoryTest, ASymlinkOrFileAtTheSocketPathIsLeftAlone) {
  TempDir dir("jobd-dir-test");
  ASSERT_FALSE(dir.path().empty());
  const std::string precious = dir.path() + "/precious";
  std::ofstream(precious) << "keep me";
  const std::string socket = dir.path() + "/jobd.sock";
  for (const bool link : {true, false}) {
    if (link) {
      ASSERT_EQ(symlink(precious.c_str(), socket.c_str()), 0);
    } else {
      std::ofstream(socket) << "not a socket";
    }
    const testing::CommandResult r = RunRefusedJobd(
        {"--unix-socket", socket, "--state-dir", dir.path() + "/state"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err,
                HasSubstr(socket + " exists and is not a socket (" +
                          (link ? "a symbolic link" : "a regular file") + ")"));
    struct stat st {};
    ASSERT_EQ(lstat(socket.c_str(), &st), 0);
    EXPECT_EQ(S_ISLNK(st.st_mode), link);
    ASSERT_EQ(unlink(socket.c_str()), 0);
  }
  std::ifstream in(precious);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "keep me");
}

TEST(SandboxTest, WorkersHaveACleanEnvironmentNoNewPrivilegesAndFewFds) {
  std::vector<std::string> flags;
  const bool root = geteuid() == 0;
  if (root) flags = {"--worker-user", "nobody"};
  auto daemon = Daemon::Start(flags, {"JOBD_SECRET=do-not-leak"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  v1::JobSpec spec = Spec("inspect", {}, v1::JOB_KIND_CPU_BOUND);
  spec.set_executor(v1::EXECUTOR_PROCESS);
  const StreamResult r = testing::SubmitAll(*stub, {spec});
  ASSERT_EQ(r.Terminal().size(), 1u);
  const v1::JobEvent e = r.Terminal()[0];
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  const auto& f = e.result().value().struct_value().fields();
  ASSERT_TRUE(f.contains("no_new_privs")) << e.DebugString();
  EXPECT_TRUE(f.at("no_new_privs").bool_value());
  std::vector<std::string> env;
  for (const auto& v : f.at("env").list_value().values()) {
    env.push_back(v.string_value());
  }
  EXPECT_THAT(env, ::testing::ElementsAre("PATH"));
  std::set<int> fds;
  for (const auto& v : f.at("fds").list_value().values()) {
    fds.insert(static_cast<int>(v.number_value()));
  }
  // stdin/out/err and the socket to jobd (3): nothing else of jobd's.
  for (int fd : fds) EXPECT_LE(fd, 3) << "fd " << fd << " leaked in";
  if (root) {
    EXPECT_EQ(f.at("uid").number_value(), 65534);  // nobody
  }
}

// An exec job of `argv`, its program's failure not failing the job.
v1::JobSpec ExecSpec(const std::vector<std::string>& argv) {
  v1::JobSpec s;
  s.set_task("exec");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  auto& kw = *s.mutable_kwargs()->mutable_fields();
  for (const std::string& a : argv) {
    kw["argv"].mutable_list_value()->add_values()->set_string_value(a);
  }
  kw["check"].set_bool_value(false);
  return s;
}

TEST(SandboxTest, ExecProgramsRunAsTheWorkerUserAwayFromJobdsFiles) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root: --worker-user makes jobd switch users";
  }
  TempDir dir("jobd-security-test");
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);  // Only the file's mode:
  const std::string secret = dir.path() + "/secret";
  std::ofstream(secret) << "root's only";
  ASSERT_EQ(chmod(secret.c_str(), 0600), 0);
  const std::string state = dir.path() + "/state";
  auto daemon = Daemon::Start({"--worker-user", "nobody", "--exec-allow",
                               "/bin/cat,/usr/bin/id", "--state-dir", state},
                              {"JOBD_SECRET=do-not-leak"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  auto run = [&](const std::vector<std::string>& argv) {
    const StreamResult r = testing::SubmitAll(*stub, {ExecSpec(argv)});
    EXPECT_EQ(r.Terminal().size(), 1u);
    const v1::JobEvent e =
        r.Terminal().empty() ? v1::JobEvent() : r.Terminal()[0];
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
    return e.result().value().struct_value().fields();
  };
  const auto id = run({"id"});
  EXPECT_EQ(id.at("stdout").string_value(),
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n");
  // Not a root-only file, not the journal (every caller's jobs), not
  // jobd's environment.
  for (const std::string& path :
       {secret, state + "/jobd.db", state + "/jobd.procs",
        absl::StrCat("/proc/", (*daemon)->pid(), "/environ"),
        std::string("/etc/shadow")}) {
    const auto f = run({"cat", path});
    EXPECT_EQ(f.at("exit_code").number_value(), 1) << path;
    EXPECT_EQ(f.at("stdout").string_value(), "") << path;
    EXPECT_THAT(f.at("stderr").string_value(),
                ::testing::AnyOf(HasSubstr("Permission denied"),
                                 HasSubstr("No such file")))
        << path;
  }
  // The journal's directory keeps that user out whatever its files' modes.
  struct stat st {};
  ASSERT_EQ(stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_THAT((*daemon)->Log(),
              ::testing::Not(HasSubstr("without --worker-user")));
}

TEST(SandboxTest, RootWithoutAWorkerUserIsWarnedAbout) {
  if (geteuid() != 0) GTEST_SKIP() << "the warning is for a jobd run as root";
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(),
              HasSubstr("jobd runs as root without --worker-user"));
}

TEST(LimitsTest, EveryRequestLimitIsEnforcedAndTheDaemonServesOn) {
  auto daemon = Daemon::Start(
      {"--max-payload-bytes", "100", "--max-labels", "2", "--max-label-bytes",
       "8", "--max-idempotency-key-bytes", "8", "--max-value-depth", "3",
       "--max-args-bytes", "200", "--max-jobs-per-request", "3",
       "--max-message-bytes", "65536", "--max-retained", "5"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  auto rejected = [&](const v1::JobSpec& spec, const std::string& flag) {
    const StreamResult r = testing::SubmitAll(*stub, {spec});
    ASSERT_EQ(r.Terminal().size(), 1u) << flag;
    EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_REJECTED) << flag;
    EXPECT_EQ(r.Terminal()[0].error().code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << flag;
  };
  v1::JobSpec payload = Spec("echo");
  payload.set_payload(std::string(101, 'p'));
  rejected(payload, "max-payload-bytes");
  v1::JobSpec labels = Spec("echo");
  for (const char* k : {"a", "b", "c"}) (*labels.mutable_labels())[k] = "v";
  rejected(labels, "max-labels");
  v1::JobSpec long_label = Spec("echo");
  (*long_label.mutable_labels())["k"] = std::string(9, 'v');
  rejected(long_label, "max-label-bytes");
  v1::JobSpec key = Spec("echo");
  key.set_idempotency_key(std::string(9, 'k'));
  rejected(key, "max-idempotency-key-bytes");
  v1::JobSpec deep = Spec("echo");
  google::protobuf::Value* v = deep.add_args();
  for (int i = 0; i < 5; ++i) v = v->mutable_list_value()->add_values();
  v->set_number_value(1);
  rejected(deep, "max-value-depth");
  v1::JobSpec big_args = Spec("echo");
  big_args.add_args()->set_string_value(std::string(300, 'a'));
  rejected(big_args, "max-args-bytes");
  // Too many jobs in one message, and a message over the size limit.
  EXPECT_EQ(testing::SubmitAll(*stub, std::vector<v1::JobSpec>(4, Spec("echo")))
                .status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::JobSpec huge = Spec("echo");
  huge.set_payload(std::string(100000, 'h'));
  EXPECT_EQ(testing::SubmitAll(*stub, {huge}).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Retention: only the last 5 ended jobs are kept.
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    const StreamResult r = testing::SubmitAll(*stub, {Spec("echo", {1})});
    ASSERT_EQ(r.Terminal().size(), 1u);
    ids.push_back(r.Terminal()[0].job_id());
  }
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetJobRequest req;
  req.set_job_id(ids[0]);
  v1::Job job;
  EXPECT_EQ(stub->GetJob(&ctx, req, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Garbage where a request should be: refused, and nothing else breaks.
  {
    grpc::GenericStub generic(grpc::CreateChannel(
        (*daemon)->unix_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext gctx;
    Deadline(gctx);
    grpc::Slice garbage(std::string("\xff\xff\xff\xff\x0f garbage", 13));
    grpc::ByteBuffer in(&garbage, 1), out;
    grpc::Status status;
    absl::Notification done;
    generic.UnaryCall(&gctx, "/jobd.v1.JobService/GetJob", grpc::StubOptions(),
                      &in, &out, [&](grpc::Status s) {
                        status = s;
                        done.Notify();
                      });
    done.WaitForNotification();
    EXPECT_FALSE(status.ok());
  }
  const StreamResult after = testing::SubmitAll(*stub, {Spec("echo", {2})});
  ASSERT_EQ(after.Terminal().size(), 1u);
  EXPECT_EQ(after.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
}

}  // namespace
}  // namespace jobd
