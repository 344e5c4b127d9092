#include "tests/integration/daemon_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"

extern char** environ;

namespace jobd::testing {
namespace {

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (std::string& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Waits for `pid` up to `timeout`; returns its wait status or -1.
int WaitPid(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (int i = 0; i < 100000; ++i) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (absl::Now() >= deadline) return -1;
    absl::SleepFor(absl::Milliseconds(2));  // Polling a child's exit.
  }
  return -1;
}

}  // namespace

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  close(fd);
  return ok ? ntohs(a.sin_port) : -1;
}

std::string JobdPath() { return JOBD_TEST_JOBD_PATH; }
std::string JobctlPath() { return JOBD_TEST_JOBCTL_PATH; }

absl::StatusOr<ReadyProcess> SpawnReady(std::vector<std::string> args,
                                        const std::string& marker,
                                        const std::string& stderr_path,
                                        absl::Duration timeout,
                                        const std::vector<std::string>& env) {
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  ReadyProcess child;
  auto argv = CStrings(args);
  // This process's environment, with `env` ("K=V") replacing or adding.
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view var(*e);
    const std::string_view key = var.substr(0, var.find('=') + 1);
    if (std::none_of(env.begin(), env.end(), [&](const std::string& x) {
          return std::string_view(x).starts_with(key);
        })) {
      environment.emplace_back(var);
    }
  }
  environment.insert(environment.end(), env.begin(), env.end());
  auto envp = CStrings(environment);
  const int rc =
      posix_spawn(&child.pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    return absl::InternalError("spawn " + args[0] + ": " + strerror(rc));
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(child.banner, marker)) {
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{out_pipe[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, left) <= 0) break;
    char buf[1024];
    const ssize_t n = read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    child.banner.append(buf, n);
  }
  close(out_pipe[0]);
  if (!absl::StrContains(child.banner, marker)) {
    (void)StopProcess(child.pid, SIGKILL, absl::Seconds(10));
    return absl::DeadlineExceededError(args[0] + " did not print '" + marker +
                                       "'; it printed: '" + child.banner + "'");
  }
  return child;
}

absl::StatusOr<int> StopProcess(pid_t pid, int sig, absl::Duration timeout) {
  if (sig != 0) kill(pid, sig);
  const int status = WaitPid(pid, timeout);
  if (status != -1) return status;
  kill(pid, SIGKILL);
  WaitPid(pid, absl::Seconds(10));
  return absl::DeadlineExceededError("process did not exit in time");
}

std::vector<std::string> DaemonArgs(const std::string& program,
                                    const std::string& dir,
                                    const std::vector<std::string>& extra) {
  auto given = [&](const char* flag) {
    return std::find(extra.begin(), extra.end(), flag) != extra.end();
  };
  std::vector<std::string> args = {program, "--tcp", "127.0.0.1:0",
                                   "--testing-tasks"};
  // A test that restarts jobd at the same address gives its own socket.
  if (!given("--unix-socket")) {
    args.insert(args.end(), {"--unix-socket", dir + "/jobd.sock"});
  }
  if (!given("--log-level")) args.insert(args.end(), {"--log-level", "debug"});
  // The tests' HTTP servers listen on 127.0.0.1, which http.get refuses
  // unless allowed ("--http-allow" "" starts a daemon without it).
  if (!given("--http-allow")) {
    args.insert(args.end(), {"--http-allow", "127.0.0.1"});
  }
  if (!given("--state-dir")) {
    args.insert(args.end(), {"--state-dir", dir + "/state"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(
    std::vector<std::string> extra_args, std::vector<std::string> env,
    const std::string& program) {
  auto d = std::unique_ptr<Daemon>(new Daemon());
  char tmpl[] = "/tmp/jobd-test-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  d->dir_ = tmpl;
  std::vector<std::string> args =
      DaemonArgs(program.empty() ? JobdPath() : program, d->dir_, extra_args);
  absl::StatusOr<ReadyProcess> child = SpawnReady(
      std::move(args), "try:", d->dir_ + "/stderr.log", absl::Seconds(20), env);
  if (!child.ok()) {
    return absl::InternalError(std::string(child.status().message()) +
                               " log: " + d->Log());
  }
  d->pid_ = child->pid;
  for (absl::string_view line : absl::StrSplit(child->banner, '\n')) {
    const absl::string_view kPrefix = "  listening on ";
    if (!absl::StartsWith(line, kPrefix)) continue;
    std::string addr(line.substr(kPrefix.size()));
    (absl::StartsWith(addr, "unix:") ? d->unix_address_ : d->tcp_address_) =
        addr;
  }
  if (d->unix_address_.empty() || d->tcp_address_.empty()) {
    return absl::InternalError("jobd banner lacks addresses: " + child->banner);
  }
  return d;
}

Daemon::~Daemon() {
  // Graceful, so sanitizers (LeakSanitizer) run their exit checks.
  const pid_t pid = pid_;
  if (pid_ > 0) (void)Stop(SIGTERM, absl::Seconds(20));
  const std::string report = SanitizerReport();
  if (!report.empty()) {
    ADD_FAILURE() << "jobd (pid " << pid << ") reported:\n" << report;
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::unique_ptr<v1::JobService::Stub> Daemon::NewStub() const {
  grpc::ChannelArguments args;  // Tests may raise the daemon's limit.
  args.SetMaxReceiveMessageSize(256 << 20);
  return v1::JobService::NewStub(grpc::CreateCustomChannel(
      unix_address_, grpc::InsecureChannelCredentials(), args));
}

absl::StatusOr<int> Daemon::Stop(int sig, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  const pid_t pid = pid_;
  pid_ = -1;
  return StopProcess(pid, sig, timeout);
}

std::string Daemon::SanitizerReport() const {
  const std::string log = Log();
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                             "runtime error:", "WARNING: ThreadSanitizer",
                             "ERROR: ThreadSanitizer"}) {
    const size_t at = log.find(marker);
    if (at != std::string::npos) return log.substr(at, 8000);
  }
  return "";
}

std::string Daemon::Log() const {
  std::ifstream in(dir_ + "/stderr.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult RunCommand(const std::vector<std::string>& argv_in,
                         const std::string& stdin_data, absl::Duration timeout,
                         const std::vector<std::string>& env_add) {
  CommandResult result;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    return result;
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), env_add.begin(), env_add.end());
  std::vector<std::string> args = argv_in;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
  pid_t pid = -1;
  auto argv = CStrings(args);
  auto envp = CStrings(env);
  const int rc =
      posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    result.err = std::string("spawn failed: ") + strerror(rc);
    return result;
  }
  size_t written = 0;
  if (stdin_data.empty()) {
    close(in[1]);
    in[1] = -1;
  } else {
    fcntl(in[1], F_SETFL, O_NONBLOCK);
  }
  const absl::Time deadline = absl::Now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) break;
    pollfd p[3] = {
        {out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
    const int nfds = in[1] >= 0 ? 3 : 2;
    if (poll(p, nfds, left) < 0 && errno != EINTR) break;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = read(p[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf, n);
      } else {
        (i == 0 ? out_open : err_open) = false;
      }
    }
    if (nfds == 3 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = write(in[1], stdin_data.data() + written,
                              stdin_data.size() - written);
      if (n > 0) written += n;
      if (n < 0 || written == stdin_data.size()) {
        close(in[1]);
        in[1] = -1;
      }
    }
  }
  if (in[1] >= 0) close(in[1]);
  close(out[0]);
  close(err[0]);
  int status = WaitPid(
      pid, out_open || err_open ? absl::ZeroDuration() : absl::Seconds(10));
  if (status == -1) {
    kill(pid, SIGKILL);
    WaitPid(pid, absl::Seconds(10));
    result.err += "\n[timed out]";
    return result;
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

v1::JobSpec Spec(const std::string& task, std::vector<double> nums,
                 v1::JobKind kind) {
  v1::JobSpec s;
  s.set_task(task);
  s.set_kind(kind);
  for (double n : nums) s.add_args()->set_number_value(n);
  return s;
}

void Deadline(grpc::ClientContext& ctx, absl::Duration d) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + d));
}

grpc::Status CancelJob(v1::JobService::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::CancelJobRequest req;
  req.set_job_id(id);
  v1::CancelJobResponse resp;
  return stub.CancelJob(&ctx, req, &resp);
}

std::vector<v1::JobEvent> StreamResult::Terminal() const {
  std::vector<v1::JobEvent> out;
  for (const auto& e : events) {
    if (v1::EndsSubmitItem(e.type())) {
      out.push_back(e);
    }
  }
  return out;
}

v1::SubmitRequest SubmitRequestOf(const std::vector<v1::JobSpec>& specs,
                                  v1::SubmitOptions options) {
  v1::SubmitRequest req;
  *req.mutable_options() = std::move(options);
  for (size_t i = 0; i < specs.size(); ++i) {
    auto* item = req.add_items();
    item->set_client_tag(i + 1);
    *item->mutable_spec() = specs[i];
  }
  return req;
}

StreamResult SubmitAll(v1::JobService::Stub& stub,
                       const std::vector<v1::JobSpec>& specs,
                       v1::SubmitOptions options) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  return SubmitAll(ctx, stub, specs, std::move(options));
}

v1::JobEvent RunOne(v1::JobService::Stub& stub, const v1::JobSpec& spec) {
  StreamResult r = SubmitAll(stub, {spec});
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  std::vector<v1::JobEvent> t = r.Terminal();
  EXPECT_EQ(t.size(), 1u);
  return t.empty() ? v1::JobEvent() : t.back();
}

v1::GetStatsResponse GetStats(v1::JobService::Stub& stub,
                              const std::string& token) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::GetStatsResponse s;
  EXPECT_TRUE(stub.GetStats(&ctx, {}, &s).ok());
  return s;
}

StreamResult SubmitAll(grpc::ClientContext& ctx, v1::JobService::Stub& stub,
                       const std::vector<v1::JobSpec>& specs,
                       v1::SubmitOptions options) {
  auto stream = stub.Submit(&ctx);
  stream->Write(SubmitRequestOf(specs, std::move(options)));
  stream->WritesDone();
  StreamResult r;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) r.events.push_back(e);
  }
  r.status = stream->Finish();
  return r;
}

bool WaitFor(const std::function<bool()>& done, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  for (int i = 0; i < 100000 && absl::Now() < end; ++i) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

std::string ReadProcFile(const std::filesystem::path& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (int i = 0; i < 64; ++i) {  // A cmdline or stat line: a few KiB.
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::vector<pid_t> PidsWithArg(const std::string& token) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() ||
        name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const std::string args = ReadProcFile(entry.path() / "cmdline");
    if (args.find(token) == std::string::npos) continue;
    const std::string line = ReadProcFile(entry.path() / "stat");
    const size_t close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size() ||
        line[close + 2] == 'Z') {
      continue;
    }
    pids.push_back(std::stoi(name));
  }
  return pids;
}

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace jobd::testing
