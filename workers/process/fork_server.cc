#include "workers/process/fork_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "fmt/format.h"
#include "jobd/internal/worker.pb.h"
#include "workers/plugins/plugin_loader.h"
#include "workers/process/ipc.h"
#include "workers/process/result_ring.h"
#include "workers/process/worker_process.h"
#include "workers/python/python_tasks.h"
#include "workers/tasks/builtin_tasks.h"

extern char** environ;

namespace jobd {
namespace {

int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

absl::Status Errno(std::string_view what) {
  return absl::InternalError(
      fmt::format("{}: {}", std::string(what), std::strerror(errno)));
}

void SetLimit(int resource, uint64_t value) {
  if (value == 0) return;
  rlimit limit{.rlim_cur = value, .rlim_max = value};
  if (resource == RLIMIT_CPU) {
    limit.rlim_max = value + 1;  // SIGXCPU at the soft limit, SIGKILL after.
  }
  setrlimit(resource, &limit);
}

// In the child after fork(): becomes a worker; never returns.
[[noreturn]] void BecomeWorker(int socket_fd, int ring_fd,
                               const internal::WorkerLimits& limits,
                               const TaskRegistry& registry,
                               const WorkerSetup& setup, pid_t fork_server) {
  setpgid(0, 0);
  // Dies with the fork server (which lives no longer than jobd), even if
  // that is killed outright.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != fork_server) _exit(127);
  // Mapped before any limit applies; the mapping outlives the fd.
  absl::StatusOr<ResultRing> ring = ResultRing::Map(ring_fd);
  if (!ring.ok()) _exit(127);
  if (socket_fd == kWorkerSocketFd) {
    fcntl(socket_fd, F_SETFD, 0);
  } else if (dup2(socket_fd, kWorkerSocketFd) < 0) {
    _exit(127);
  }
  close_range(kWorkerSocketFd + 1, ~0U, 0);
  // A clean environment: nothing of jobd's (tokens, paths) leaks to tasks.
  clearenv();
  setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
  // No privilege gained through setuid binaries (jobd set it too), and the
  // configured user, for good: no way back to root.
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (limits.switch_user() &&
      (setgroups(0, nullptr) != 0 || setgid(limits.gid()) != 0 ||
       setuid(limits.uid()) != 0 || setuid(0) == 0)) {
    _exit(126);  // Never run tasks as root by mistake.
  }
  SetLimit(RLIMIT_AS, limits.address_space_bytes());
  SetLimit(RLIMIT_CPU, limits.cpu_seconds());
  SetLimit(RLIMIT_NOFILE, limits.open_files());
  // Default dispositions (even a sanitizer's SIGSEGV handler goes), so a
  // crash is reported as the signal it was.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  prctl(PR_SET_NAME, "jobd-worker");
  if (setup) {
    if (absl::Status s = setup(); !s.ok()) {
      std::fprintf(stderr, "jobd worker %d: %s\n", getpid(),
                   std::string(s.message()).c_str());
      _exit(125);
    }
  }
  RunWorkerProcess(registry, *std::move(ring));
}

void Spawn(int control_fd, const internal::ForkRequest& request,
           const TaskRegistry& registry, const WorkerSetup& setup,
           absl::flat_hash_set<pid_t>& children) {
  internal::ForkReply reply;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    reply.mutable_spawn_failed()->set_request_id(request.request_id());
    reply.mutable_spawn_failed()->set_error(
        fmt::format("socketpair: {}", std::strerror(errno)));
    (void)SendPacket(control_fd, reply);
    return;
  }
  UniqueFd daemon_end(sv[0]);
  UniqueFd worker_end(sv[1]);
  absl::StatusOr<UniqueFd> ring = ResultRing::Create();
  if (!ring.ok()) {
    reply.mutable_spawn_failed()->set_request_id(request.request_id());
    reply.mutable_spawn_failed()->set_error(ring.status().ToString());
    (void)SendPacket(control_fd, reply);
    return;
  }
  const pid_t self = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    BecomeWorker(worker_end.get(), ring->get(), request.limits(), registry,
                 setup, self);
  }
  if (pid < 0) {
    reply.mutable_spawn_failed()->set_request_id(request.request_id());
    reply.mutable_spawn_failed()->set_error(
        fmt::format("fork: {}", std::strerror(errno)));
    (void)SendPacket(control_fd, reply);
    return;
  }
  children.insert(pid);
  setpgid(pid, pid);  // Also here: no race with an early kill of the group.
  UniqueFd pidfd(PidfdOpen(pid));  // Before any reaping: race-free.
  reply.mutable_spawned()->set_request_id(request.request_id());
  reply.mutable_spawned()->set_pid(pid);
  const int fds[3] = {daemon_end.get(), ring->get(), pidfd.get()};
  (void)SendPacket(control_fd, reply,
                   std::span<const int>(fds, pidfd.valid() ? 3 : 2));
}

void ReapChildren(int control_fd, absl::flat_hash_set<pid_t>& children) {
  for (;;) {
    int status = 0;
    rusage usage{};
    const pid_t pid = wait4(-1, &status, WNOHANG, &usage);
    if (pid <= 0) return;
    children.erase(pid);
    internal::ForkReply reply;
    internal::ForkReply::Exited& e = *reply.mutable_exited();
    e.set_pid(pid);
    e.set_wait_status(status);
    e.set_user_cpu_us(usage.ru_utime.tv_sec * 1000000LL +
                      usage.ru_utime.tv_usec);
    e.set_sys_cpu_us(usage.ru_stime.tv_sec * 1000000LL +
                     usage.ru_stime.tv_usec);
    e.set_max_rss_kb(usage.ru_maxrss);
    (void)SendPacket(control_fd, reply);
  }
}

// The parent's handle on a fork server it just started (its child, not yet
// reaped, so the pidfd refers to it for sure).
absl::StatusOr<ForkServerProcess> Adopt(pid_t pid, UniqueFd control) {
  ForkServerProcess p;
  p.pid = pid;
  p.control = std::move(control);
  p.pidfd.reset(PidfdOpen(pid));
  if (!p.pidfd.valid()) return Errno("pidfd_open");
  return p;
}

}  // namespace

absl::StatusOr<ForkServerProcess> ForkForkServer(const TaskRegistry& registry,
                                                 WorkerSetup setup) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Errno("socketpair");
  }
  UniqueFd parent_end(sv[0]);
  UniqueFd child_end(sv[1]);
  const pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    parent_end.reset();
    RunForkServer(child_end.release(), registry, std::move(setup));
  }
  return Adopt(pid, std::move(parent_end));
}

absl::StatusOr<ForkServerProcess> SpawnForkServer(
    const std::string& exe, const std::vector<std::string>& extra_args) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Errno("socketpair");
  }
  UniqueFd parent_end(sv[0]);
  // Not fd 3 itself: dup2 onto the same fd would keep FD_CLOEXEC.
  UniqueFd child_end(fcntl(sv[1], F_DUPFD_CLOEXEC, 10));
  close(sv[1]);
  if (!child_end.valid()) return Errno("fcntl");
  constexpr int kChildFd = 3;
  std::vector<std::string> args = {exe, kForkServerFlag,
                                   std::to_string(kChildFd)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_end.get(), kChildFd);
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(
        fmt::format("posix_spawn {}: {}", exe, std::strerror(rc)));
  }
  return Adopt(pid, std::move(parent_end));
}

void RunForkServer(int control_fd, const TaskRegistry& registry,
                   WorkerSetup setup) {
  prctl(PR_SET_NAME, "jobd-forkserver");
  // It lives exactly as long as its control socket: terminal and service
  // signals meant for the daemon are ignored.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) signal(sig, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sig_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sig_fd < 0) _exit(1);

  absl::flat_hash_set<pid_t> children;
  for (;;) {
    pollfd fds[2] = {{.fd = control_fd, .events = POLLIN},
                     {.fd = sig_fd, .events = POLLIN}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(sig_fd, &info, sizeof(info)) == sizeof(info)) {
      }
      ReapChildren(control_fd, children);
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      internal::ForkRequest request;
      std::vector<UniqueFd> unexpected_fds;
      const ReadResult r = RecvPacket(control_fd, request, unexpected_fds);
      if (r == ReadResult::kData) {
        Spawn(control_fd, request, registry, setup, children);
      } else if (r == ReadResult::kEof ||
                 (r == ReadResult::kError && errno != EBADMSG)) {
        break;  // The daemon is gone or closed us.
      }
    }
  }
  // Take the workers down with us: the daemon that fed them is gone.
  for (pid_t pid : children) kill(-pid, SIGKILL);
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  _exit(0);
}

void RunForkServerIfInvoked(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != kForkServerFlag) return;
  const int fd = argc > 2 ? std::atoi(argv[2]) : -1;
  bool testing_tasks = false;
  std::vector<std::string> plugins;
  for (int i = 3; i < argc; ++i) {
    testing_tasks |= std::string_view(argv[i]) == "--testing-tasks";
    if (std::string_view(argv[i]) == "--plugin" && i + 1 < argc) {
      plugins.push_back(argv[++i]);
    }
  }
  TaskRegistry registry;
  if (fd < 0 ||
      !RegisterBuiltinTasks(registry, {.testing_tasks = testing_tasks}).ok()) {
    _exit(1);
  }
  // The daemon loaded the same plugins already; one that fails here (it
  // changed on disk meanwhile) leaves the pool without a fork server.
  if (absl::Status s = LoadPlugins(plugins, registry, /*log=*/false); !s.ok()) {
    std::fprintf(stderr, "jobd fork server: %s\n", s.ToString().c_str());
    _exit(1);
  }
  // The daemon's Python tasks, described again (the modules may have
  // changed on disk meanwhile: then this start fails like the plugins').
  const PythonTasksOptions python = PythonTasksOptionsFromArgs(argc, argv, 3);
  WorkerSetup setup;
  if (!python.empty()) {
    absl::StatusOr<std::vector<PythonTaskSpec>> specs =
        DescribePythonTasks("/proc/self/exe", python);
    absl::Status s =
        specs.ok() ? RegisterPythonTasks(*specs, registry) : specs.status();
    if (!s.ok()) {
      std::fprintf(stderr, "jobd fork server: %s\n", s.ToString().c_str());
      _exit(1);
    }
    setup = [python, specs = *std::move(specs)] {
      return StartPythonInWorker(python, specs);
    };
  }
  RunForkServer(fd, registry, std::move(setup));
}

}  // namespace jobd
