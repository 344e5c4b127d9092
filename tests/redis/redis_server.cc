#include "tests/redis/redis_server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace jobd::testing {
namespace {

constexpr char kRedisServer[] = "/usr/bin/redis-server";
constexpr char kReady[] = "ready to accept connections";

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    std::vector<std::string> extra_args) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "jobd-redis-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  // Connections to it write as jobd's do (hiredis, write(2)): a write to
  // one it has just closed (Kill) raises SIGPIPE, which jobd's main
  // ignores; so does a test process that runs Redis.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<RedisServer> r(new RedisServer());
  r->dir_ = tmpl;
  r->socket_ = tmpl + "/redis.sock";
  r->log_ = tmpl + "/redis.log";
  r->extra_args_ = std::move(extra_args);
  if (absl::Status s = r->Launch(); !s.ok()) return s;
  return r;
}

absl::Status RedisServer::Launch() {
  std::vector<std::string> args = {
      kRedisServer, "--port",           "0",   "--unixsocket",
      socket_,      "--unixsocketperm", "700", "--save",
      "",           "--appendonly",     "no",  "--dir",
      dir_,         "--logfile",        "",    "--daemonize",
      "no"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  }
  const int log_fd =
      open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(out[0]);
    close(out[1]);
    if (log_fd >= 0) close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(kRedisServer, argv.data());
    _exit(127);
  }
  close(out[1]);
  if (log_fd >= 0) close(log_fd);
  pid_ = pid;
  // Its stdout (the log) until the ready line, bounded in time; then the
  // rest is copied to the log file by nobody: the pipe is closed and redis
  // logs nothing we need (it ignores EPIPE on its log).
  std::string seen;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  bool ready = false;
  while (!ready && absl::Now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    const int wait_ms = static_cast<int>(std::max<int64_t>(
        1, absl::ToInt64Milliseconds(deadline - absl::Now())));
    if (poll(&p, 1, wait_ms) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) break;  // It exited.
    seen.append(buf, static_cast<size_t>(n));
    ready = seen.find(kReady) != std::string::npos;
  }
  close(out[0]);
  {
    std::ofstream log(log_, std::ios::app);
    log << seen;
  }
  if (!ready) {
    Kill();
    return absl::InternalError(
        absl::StrCat("redis-server did not become ready; its output:\n", seen));
  }
  return absl::OkStatus();
}

RedisServer::~RedisServer() {
  Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status RedisServer::Stop(absl::Duration timeout) {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + timeout;
  for (int i = 0; i < 100000 && absl::Now() < deadline; ++i) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(5));  // Polling an exit: bounded.
  }
  Kill();
  return absl::DeadlineExceededError("redis-server ignored SIGTERM");
}

absl::Status RedisServer::Restart() {
  if (pid_ > 0) return absl::FailedPreconditionError("still running");
  return Launch();
}

std::string RedisServer::Log() const {
  std::ifstream in(log_);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace jobd::testing
