// Integration tests of jobd's security rules against the real daemon
// binary: TLS and mTLS (with certificates made by openssl for the test),
// plaintext refused beyond loopback, the Unix socket's permissions, the
// runtime and state directories (refused when others could change them,
// whatever the umask), and the workers' sandbox (environment, privileges,
// fds, the worker user). Tokens, roles, quotas and request limits are in
// auth_test.cc, on an in-process daemon.
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
#include "tests/integration/test_pki.h"
#include "tests/integration/test_tokens.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::Pki;
using testing::Spec;
using testing::StreamResult;
using testing::TempDir;
using testing::WaitFor;

using testing::kAlice;
using testing::kBob;
using testing::kCarol;
using testing::kRoot;
using testing::TokenFlags;

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

}  // namespace
}  // namespace jobd
