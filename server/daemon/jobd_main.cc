// jobd: the daemon's entry point. What only a process can do, in order:
// become a replacement fork server if asked to (fork_server.h), block the
// signals it waits for, parse the configuration, set up logging and the
// process's limits, fork the helpers while it has one thread (the process
// pool's fork server and the guardian), start the daemon
// (server/daemon/daemon.h), print where it listens, then wait for signals:
//   SIGHUP          reload what can change live
//   SIGINT/SIGTERM  drain: stop accepting -> running jobs finish within
//                   --shutdown-grace -> the rest are cancelled (reason
//                   SHUTDOWN) and reported -> streams flushed -> exit 0
//   SIGCHLD         if the guardian died: drain, exit 1
// Exit status: 0, 1 (could not start; or stopped to be restarted), 2 (bad
// configuration).
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "server/config/config.h"
#include "server/daemon/daemon.h"
#include "server/daemon/systemd.h"
#include "server/frontend/listener.h"
#include "server/frontend/request_errors.h"
#include "spdlog/spdlog.h"
#include "workers/os/fd_limit.h"
#include "workers/process/fork_server.h"
#include "workers/python/python_tasks.h"
#include "workers/tasks/io_tasks.h"

// jemalloc's options (the MALLOC_CONF environment variable overrides them;
// without jemalloc, as under sanitizers, nothing reads this): one arena per
// CPU instead of four, so that memory one thread frees is reused by the
// next allocations on its CPU. The daemon then peaks ~9% lower with 100k
// waiting jobs, at the same throughput (bench/README.md "reactor").
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "percpu_arena:percpu";
// jemalloc's control interface; null when another allocator is linked.
int mallctl(const char* name, void* oldp, size_t* oldlenp, void* newp,
            size_t newlen) __attribute__((weak));
}

namespace jobd {
namespace {

constexpr int kExitConfig = 2;
constexpr int kExitStartup = 1;
// A listener stopped accepting for good: jobd drained and exited to be
// restarted (systemd's Restart=on-failure).
constexpr int kExitListenerDead = 1;

// jemalloc gives freed memory back to the system only while its arenas are
// in use, so a daemon that went idle after a burst (streams closed, jobs
// forgotten) kept it. Its background thread purges on a timer instead
// (dirty_decay_ms: within ~10-20 s). Started here, once the fork server is
// forked (a thread before that would be forked along), unless MALLOC_CONF
// says otherwise.
void StartAllocatorPurging() {
  if (mallctl == nullptr) return;  // Not jemalloc (sanitizer builds).
  const char* env = std::getenv("MALLOC_CONF");
  if (env != nullptr && std::strstr(env, "background_thread") != nullptr) {
    return;
  }
  bool enable = true;
  if (mallctl("background_thread", nullptr, nullptr, &enable, sizeof(enable)) !=
      0) {
    spdlog::warn(
        "jemalloc: cannot start its background thread; memory freed after a "
        "burst is given back to the system only as it allocates again");
  }
}

// What the whole process runs with: the log, lock checking, fds, and no
// privileges gained through exec.
void SetUpProcess(const DaemonConfig& config) {
  // Debian's absl tracks lock order for deadlock detection, at a cost that
  // grows with live mutexes; the unit tests keep it on for the same code.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  ConfigureLogging(config.log_level, config.log_format);
  InstallProtobufLogHandler();
  // Room for connections and exec'd programs' pipes: the hard limit is the
  // administrator's (LimitNOFILE=, ulimit -Hn), the soft one a default.
  if (absl::StatusOr<FdLimits> fds = RaiseFdLimit(); !fds.ok()) {
    spdlog::warn("file descriptors: {}", fds.status().ToString());
  } else {
    if (fds->soft != fds->previous_soft) {
      spdlog::info("file descriptors: soft limit raised from {} to {}",
                   fds->previous_soft, fds->soft);
    }
    if (fds->soft < 1024) {
      spdlog::warn(
          "file descriptors: the limit is {}: exec runs a program only "
          "with {} free and connections are taken only with {} free; "
          "raise LimitNOFILE= / ulimit -Hn",
          fds->soft, kExecKeepFree, kAcceptKeepFree);
    }
  }
  // Nothing jobd starts (workers, exec'd programs) may gain privileges
  // through a setuid or file-capability binary.
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

// The configuration as the command line and --config file say now (SIGHUP).
absl::StatusOr<DaemonConfig> ReadConfig(int argc, char** argv) {
  absl::StatusOr<ParsedArgs> parsed = ParseConfig(argc, argv);
  if (!parsed.ok()) return parsed.status();
  if (parsed->exit_now) {
    return absl::InvalidArgumentError("help or version requested");
  }
  return parsed->config;
}

// "jobctl", or its full path when it sits next to this binary (a build tree).
std::string JobctlCommand() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / "jobctl";
    if (std::filesystem::exists(beside, ec)) return beside.string();
  }
  return "jobctl";
}

// The ready banner on stdout: tests and scripts wait for the "try:" line.
void PrintBanner(const Daemon& daemon) {
  const std::string version(JobdVersion());
  std::printf("jobd %s ready (pid %d)\n", version.c_str(), getpid());
  for (const std::string& l : daemon.listening()) {
    std::printf("  listening on %s\n", l.c_str());
  }
  std::printf("  try: %s --address %s submit echo hello --wait\n",
              JobctlCommand().c_str(),
              daemon.listening().empty() ? "" : daemon.listening()[0].c_str());
  std::fflush(stdout);
}

int Run(int argc, char** argv) {
  // A replacement fork server started by a running jobd (fork_server.h).
  RunForkServerIfInvoked(argc, argv);
  // The child that tells the daemon its Python tasks (python_tasks.h).
  RunPythonDescribeIfInvoked(argc, argv);
  // Signals are taken synchronously by sigwait() below; block them before any
  // thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGCHLD);  // To notice the guardian's death.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<ParsedArgs> parsed = ParseConfig(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "jobd: %s\n",
                 std::string(parsed.status().message()).c_str());
    return kExitConfig;
  }
  if (parsed->exit_now) return parsed->exit_code;
  const DaemonConfig& config = parsed->config;
  SetUpProcess(config);
  if (absl::Status s = Daemon::CheckConfig(config); !s.ok()) {
    spdlog::critical("{}", std::string(s.message()));
    return kExitConfig;
  }

  // Still one thread: the only safe moment to fork.
  absl::StatusOr<DaemonDeps> deps = ForkHelpers(config);
  if (!deps.ok()) {
    spdlog::critical("{}", std::string(deps.status().message()));
    return kExitStartup;
  }
  deps->on_stop_request = [] { kill(getpid(), SIGTERM); };
  StartAllocatorPurging();  // A thread: after the fork.

  absl::StatusOr<std::unique_ptr<Daemon>> started =
      Daemon::Start(config, *std::move(deps));
  if (!started.ok()) {
    spdlog::critical("{}", std::string(started.status().message()));
    return absl::IsInvalidArgument(started.status()) ? kExitConfig
                                                     : kExitStartup;
  }
  std::unique_ptr<Daemon> daemon = *std::move(started);
  PrintBanner(*daemon);

  int exit_code = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      if (!daemon->GuardianExited()) continue;  // Another child.
      // Without it, exec's programs (and what they start) would no longer
      // die with jobd: stop, and let the supervisor start a fresh jobd.
      spdlog::critical(
          "the guardian process (pid {}) died; stopping (nothing jobd "
          "starts would die with it any more)",
          daemon->guardian_pid());
      exit_code = kExitStartup;
      break;
    }
    if (sig == SIGHUP) {
      daemon->Reload(ReadConfig(argc, argv));
      continue;
    }
    spdlog::info("{}: draining (grace {})", strsignal(sig),
                 absl::FormatDuration(daemon->config().shutdown_grace));
    break;
  }

  const DaemonStopped stopped = daemon->Stop();
  if (stopped.tasks_left_running) {
    // Their threads would hold up the daemon's destruction.
    spdlog::shutdown();
    std::fflush(nullptr);
    _exit(stopped.listener_dead ? kExitListenerDead : 0);
  }
  daemon->KeepServerForExit();
  daemon.reset();
  if (stopped.listener_dead) {
    spdlog::info(
        "jobd stopped (to be restarted: a listener stopped "
        "accepting)");
    return kExitListenerDead;
  }
  spdlog::info("jobd stopped");
  return exit_code;
}

}  // namespace
}  // namespace jobd

int main(int argc, char** argv) { return jobd::Run(argc, argv); }
