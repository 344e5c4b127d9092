// jobd: the daemon's entry point. Parses config, builds the task registry,
// forks the process pool's fork server (before any thread exists), builds the
// scheduler, executors and gRPC server, prints where it listens, then waits
// for SIGINT/SIGTERM and shuts down gracefully:
//   stop accepting -> running jobs finish within --shutdown-grace -> the rest
//   are cancelled (reason SHUTDOWN) and reported -> streams flushed -> exit 0.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/config/config.h"
#include "server/daemon/leftovers.h"
#include "server/daemon/private_dir.h"
#include "server/daemon/reload.h"
#include "server/daemon/systemd.h"
#include "server/frontend/auth.h"
#include "server/frontend/listener.h"
#include "server/frontend/request_errors.h"
#include "server/frontend/service.h"
#include "server/journal/journal.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/spdlog.h"
#include "workers/os/fd_limit.h"
#include "workers/os/guardian.h"
#include "workers/os/unique_fd.h"
#include "workers/process/fork_server.h"
#include "workers/process/process_pool.h"
#include "workers/reactor/reactor.h"
#include "workers/tasks/builtin_tasks.h"
#include "workers/threads/thread_pool.h"

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
// How often TLS certificate files are checked for a change.
constexpr unsigned int kTlsRefreshSeconds = 5;

// True if something accepts connections on the Unix socket at `path`.
bool SocketInUse(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool in_use =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return in_use;
}

// Makes the socket's directory private (server/private_dir.h) and clears
// the way for the socket: only a stale socket is removed, never a symbolic
// link or any other file found in its place.
absl::Status PrepareUnixSocket(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        fmt::format("--unix-socket: path longer than {} bytes: {}",
                    sizeof(sockaddr_un::sun_path) - 1, path));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (absl::Status s = EnsurePrivateDirectory(dir, 0700, "--unix-socket");
      !s.ok()) {
    return s;
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(fmt::format(
        "--unix-socket: cannot inspect {}: {}", path, std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(fmt::format(
        "--unix-socket: {} exists and is not a socket ({}); jobd replaces "
        "only a stale socket: remove it if it is not needed, or choose "
        "another path",
        path,
        S_ISLNK(st.st_mode)   ? "a symbolic link"
        : S_ISDIR(st.st_mode) ? "a directory"
        : S_ISREG(st.st_mode) ? "a regular file"
                              : "a special file"));
  }
  if (SocketInUse(path)) {
    return absl::AlreadyExistsError(fmt::format(
        "another process (a running jobd?) is listening on {}", path));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {  // A dead daemon's.
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket: cannot remove the stale socket {}: {}",
                    path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The TCP listener's credentials: TLS (mTLS with a client CA) whose files
// are re-read when they change, or plaintext.
std::shared_ptr<grpc::ServerCredentials> TcpCredentials(
    const DaemonConfig& config) {
  if (config.tls_cert.empty()) return grpc::InsecureServerCredentials();
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          config.tls_key, config.tls_cert, config.tls_client_ca,
          kTlsRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!config.tls_client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

// Opens the Unix socket to `group` (socket 0660, directory 0750).
absl::Status ShareUnixSocket(const std::string& path,
                             const std::string& group) {
  const struct group* g = getgrnam(group.c_str());
  if (g == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("--unix-socket-group: no group '{}'", group));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0 ||
      chmod(path.c_str(), 0660) != 0 ||
      chown(dir.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0 ||
      chmod(dir.c_str(), 0750) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket-group {}: cannot hand {} to it: {}", group,
                    path, strerror(errno)));
  }
  return absl::OkStatus();
}

// Takes an exclusive lock on STATE_DIR/jobd.lock for as long as the fd
// lives: one daemon per journal.
absl::StatusOr<UniqueFd> LockStateDirectory(const std::string& dir) {
  if (absl::Status s = EnsurePrivateDirectory(dir, 0700, "--state-dir");
      !s.ok()) {
    return s;
  }
  chmod(dir.c_str(), 0700);  // Jobs' specs and results: owner only.
  const std::string path = dir + "/jobd.lock";
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(
        fmt::format("--state-dir: cannot open {}: {}", path, strerror(errno)));
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::AlreadyExistsError(fmt::format(
        "another jobd uses the state directory {} (its lock {} is held)", dir,
        path));
  }
  return fd;
}

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

// The STATUS= line for systemd (and the watchdog's probe of the scheduler).
std::string StatusLine(const Scheduler& scheduler) {
  const v1::GetStatsResponse s = scheduler.GetStats();
  uint64_t queued = 0, busy = 0;
  for (const v1::ExecutorStats& e : s.executors()) {
    queued += e.queued();
    busy += e.busy();
  }
  return fmt::format(
      "{} live ({} queued, {} slots busy); {} done, {} failed, {} cancelled{}",
      s.live(), queued, busy, s.succeeded(), s.failed(), s.cancelled(),
      s.draining() ? "; draining" : "");
}

// SIGHUP: reads the configuration again and applies what can change live.
void Reload(int argc, char** argv, DaemonConfig& config, Scheduler& scheduler,
            JobServiceImpl& service, ExecPolicy& exec, HttpPolicy& http,
            Authenticator& auth) {
  absl::StatusOr<ParsedArgs> parsed = ParseConfig(argc, argv);
  if (!parsed.ok() || parsed->exit_now) {
    spdlog::error(
        "SIGHUP: the configuration does not parse ({}); nothing "
        "changed",
        parsed.ok() ? "help or version requested"
                    : std::string(parsed.status().message()));
    return;
  }
  const ReloadResult r =
      ApplyConfig(config, parsed->config, scheduler, service, exec, http, auth);
  if (!r.refused.empty()) {
    spdlog::error("SIGHUP: refused {}", absl::StrJoin(r.refused, "; "));
  }
  if (r.applied.empty() && r.needs_restart.empty() && r.refused.empty()) {
    spdlog::info("SIGHUP: configuration reloaded; nothing changed");
  }
  if (!r.applied.empty()) {
    spdlog::info("SIGHUP: configuration reloaded; applied {}",
                 absl::StrJoin(r.applied, ", "));
  }
  if (!r.needs_restart.empty()) {
    spdlog::warn("SIGHUP: not applied, these need a restart: {}",
                 absl::StrJoin(r.needs_restart, ", "));
  }
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

int Run(int argc, char** argv) {
  // A replacement fork server started by a running jobd (fork_server.h).
  RunForkServerIfInvoked(argc, argv);
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
  DaemonConfig config = parsed->config;  // What runs; SIGHUP updates it.

  // Debian's absl tracks lock order for deadlock detection, at a cost that
  // grows with live mutexes; the unit tests keep it on for the same code.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  ConfigureLogging(config.log_level);
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

  absl::StatusOr<std::unique_ptr<Authenticator>> auth =
      Authenticator::Create(config.auth);
  if (!auth.ok()) {  // ParseConfig checked it: not expected.
    spdlog::critical("{}", std::string(auth.status().message()));
    return kExitConfig;
  }
  Authenticator& authenticator = **auth;
  if (!config.tcp_address.empty()) {
    if (absl::Status s =
            CheckTcpExposure(config.tcp_address, !config.tls_cert.empty(),
                             authenticator.required());
        !s.ok()) {
      spdlog::critical("{}", std::string(s.message()));
      return kExitConfig;
    }
  }

  // Before anything else is touched: a socket directory another user could
  // change is refused, so is a second daemon on the same socket.
  if (!config.unix_socket.empty()) {
    if (absl::Status s = PrepareUnixSocket(config.unix_socket); !s.ok()) {
      spdlog::critical("{}", std::string(s.message()));
      return kExitStartup;
    }
  }

  if (geteuid() == 0 && config.worker_user.empty()) {
    spdlog::warn(
        "jobd runs as root without --worker-user: every job's process "
        "(exec's programs, process-pool workers) runs as root and can read "
        "the journal (every caller's jobs), jobd's environment and any file "
        "of this machine; set --worker-user (README: Security)");
  }

  // This run's id, in every program exec starts: how the guardian and the
  // next start find them (workers/guardian.h, server/leftovers.h).
  const std::string instance_id = NewInstanceId();
  auto exec_sandbox = std::make_shared<ExecSandbox>();
  exec_sandbox->instance_env = std::string(kInstanceEnv) + "=" + instance_id;
  exec_sandbox->run_as = config.process_pool.run_as;

  TaskRegistry registry;
  auto exec_policy = std::make_shared<ExecPolicy>(config.exec);
  auto http_policy = std::make_shared<HttpPolicy>(
      *AddressPolicy::Parse(config.http_allow));  // ParseConfig checked it.
  if (absl::Status s = RegisterBuiltinTasks(
          registry, {.testing_tasks = config.testing_tasks,
                     .exec = exec_policy,
                     .exec_sandbox = exec_sandbox,
                     .http = http_policy,
                     .max_message_bytes = config.service.max_message_bytes});
      !s.ok()) {
    spdlog::critical("registering built-in tasks: {}", s.ToString());
    return kExitStartup;
  }

  // Still one thread: the only safe moment to fork.
  std::optional<ForkServerProcess> fork_server;
  if (config.process_pool.workers > 0) {
    absl::StatusOr<ForkServerProcess> started = ForkForkServer(registry);
    if (!started.ok()) {
      spdlog::critical("starting the fork server: {}",
                       started.status().ToString());
      return kExitStartup;
    }
    fork_server = *std::move(started);
  }
  // Still one thread: the guardian, which takes exec's programs down with
  // jobd whatever kills it.
  absl::StatusOr<Guardian> guardian = StartGuardian(instance_id);
  if (!guardian.ok()) {
    spdlog::critical("starting the guardian process: {}",
                     guardian.status().ToString());
    return kExitStartup;
  }
  exec_sandbox->pid_ns_fd = guardian->pid_ns.get();
  exec_sandbox->mount_ns_fd = guardian->mount_ns.get();
  exec_sandbox->notify_fd = guardian->notify.get();
  if (guardian->pid_ns.valid()) {
    spdlog::info(
        "guardian pid {}: exec's programs run in its PID namespace and die "
        "with jobd",
        guardian->pid);
  } else {
    spdlog::info(
        "guardian pid {}: no PID namespace (jobd is not root): a process an "
        "exec program leaves behind outside its process group lives until "
        "jobd stops (README: Security)",
        guardian->pid);
  }
  std::vector<pid_t> helpers = {guardian->pid};
  if (fork_server.has_value()) helpers.push_back(fork_server->pid);

  StartAllocatorPurging();  // A thread: after the fork.

  // The journal, after the fork (its writer is a thread). One daemon per
  // state directory: a second one would write under the first.
  std::unique_ptr<Journal> journal;
  Recovered recovered;
  UniqueFd state_lock;
  const absl::Time journal_start = absl::Now();
  if (config.durability != Durability::kNone) {
    absl::StatusOr<UniqueFd> lock = LockStateDirectory(config.state_dir);
    if (!lock.ok()) {
      spdlog::critical("{}", std::string(lock.status().message()));
      return kExitStartup;
    }
    state_lock = *std::move(lock);
    // What the previous run here left running dies before its jobs are
    // re-run or failed.
    if (absl::StatusOr<int> killed = KillLeftovers(config.state_dir);
        !killed.ok()) {
      spdlog::error("cleaning up after the previous run: {}",
                    killed.status().ToString());
    } else if (*killed > 0) {
      spdlog::warn("killed {} process(es) the previous jobd left running",
                   *killed);
    }
    if (absl::Status s = RecordRun(config.state_dir, instance_id, helpers);
        !s.ok()) {
      spdlog::critical("{}", std::string(s.message()));
      return kExitStartup;
    }
    absl::StatusOr<std::unique_ptr<Journal>> opened =
        Journal::Open({.path = config.state_dir + "/jobd.db",
                       .durability = config.durability,
                       .max_bytes = config.journal_max_bytes,
                       .outage_grace = config.journal_outage_grace},
                      &recovered);
    if (!opened.ok()) {
      spdlog::critical("journal: {}", std::string(opened.status().message()));
      return kExitStartup;
    }
    journal = *std::move(opened);
    if (!recovered.moved_aside.empty()) {
      spdlog::error(
          "journal: the old journal was moved aside to {}; starting with an "
          "empty one (its jobs are not restored)",
          recovered.moved_aside);
    }
  }

  RealClock clock;
  Scheduler scheduler(config.scheduler, clock, journal.get());
  scheduler.AddExecutor(std::make_unique<ThreadPoolExecutor>(
      config.thread_workers, scheduler.listener_for(v1::EXECUTOR_THREAD)));
  if (fork_server.has_value()) {
    scheduler.AddExecutor(std::make_unique<ProcessPoolExecutor>(
        config.process_pool, *std::move(fork_server),
        scheduler.listener_for(v1::EXECUTOR_PROCESS)));
  }
  if (config.reactor.threads > 0) {
    scheduler.AddExecutor(std::make_unique<ReactorExecutor>(
        config.reactor, scheduler.listener_for(v1::EXECUTOR_REACTOR)));
  }

  if (journal != nullptr) {
    const size_t rows = recovered.rows.size();
    const absl::Time read = absl::Now();
    const RestoreSummary r = scheduler.Restore(std::move(recovered), registry);
    const absl::Time restored = absl::Now();
    spdlog::info(
        "journal {}/jobd.db ({}): {} job(s) restored in {} (read {}, "
        "rebuilt {}): {} queued, {} re-run (at-least-once), {} lost "
        "(LOST_ON_RESTART), {} unrunnable, {} unreadable, {} retained",
        config.state_dir, DurabilityName(config.durability), rows,
        absl::FormatDuration(restored - journal_start),
        absl::FormatDuration(read - journal_start),
        absl::FormatDuration(restored - read), r.queued, r.rerun, r.lost,
        r.unrunnable, r.unreadable, r.retained);
  }

  JobServiceImpl service(scheduler, registry, authenticator, config.service,
                         JOBD_VERSION, [] { kill(getpid(), SIGTERM); });
  // grpc.health.v1 (SERVING until the drain) and server reflection, so that
  // grpcurl and load balancers can find their way.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(config.service.max_message_bytes));
  builder.SetMaxSendMessageSize(
      static_cast<int>(config.service.max_message_bytes));
  builder.RegisterService(&service);
  ApplyConnectionOptions(config.connections, builder);
  {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(ParseErrorInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  std::vector<std::string> listening;
  // jobd accepts on its plaintext listeners itself (server/listener.h); a
  // TLS listener is gRPC's.
  const bool tls = !config.tls_cert.empty();
  int tcp_port = -1;
  if (!config.tcp_address.empty() && tls) {
    builder.AddListeningPort(config.tcp_address, TcpCredentials(config),
                             &tcp_port);
  }
  const mode_t old_umask = umask(0077);  // Socket: owner only.
  absl::StatusOr<std::unique_ptr<Listener>> opened = Listener::Open(
      config.unix_socket, tls ? std::string() : config.tcp_address,
      config.connections);
  if (!opened.ok()) {
    umask(old_umask);
    spdlog::critical("{}", std::string(opened.status().message()));
    return kExitStartup;
  }
  std::unique_ptr<Listener> listener = *std::move(opened);
  if (!tls && !config.tcp_address.empty()) tcp_port = listener->tcp_port();
  service.SetPeerNames(
      [&listener](std::string_view peer) { return listener->PeerName(peer); });
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr || (!config.tcp_address.empty() && tcp_port <= 0)) {
    spdlog::critical(
        "could not start the gRPC server on {} (address in use or invalid?)",
        absl::StrJoin({config.unix_socket, config.tcp_address}, " and "));
    return kExitStartup;
  }
  if (!config.unix_socket.empty() && !config.unix_socket_group.empty()) {
    if (absl::Status s =
            ShareUnixSocket(config.unix_socket, config.unix_socket_group);
        !s.ok()) {
      spdlog::critical("{}", std::string(s.message()));
      server->Shutdown();
      return kExitConfig;
    }
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(v1::JobService::service_full_name(), true);
  // The health service follows the listeners (NOT_SERVING while jobd cannot
  // accept connections) until the drain; a listener dead for good drains
  // jobd so that it is restarted.
  absl::Mutex health_mu;
  bool draining = false;  // Guarded by health_mu.
  std::atomic<bool> listener_dead = false;
  if (tls) {
    listener->WatchGrpcListener(
        config.tcp_address.substr(0, config.tcp_address.rfind(':')), tcp_port);
  }
  listener->Start(server.get(), [&](const std::string& problem, bool dead) {
    {
      absl::MutexLock lock(&health_mu);
      if (!draining) {
        health->SetServingStatus(problem.empty());
        health->SetServingStatus(v1::JobService::service_full_name(),
                                 problem.empty());
      }
    }
    if (dead && !listener_dead.exchange(true)) kill(getpid(), SIGTERM);
  });
  ino_t socket_inode = 0;
  if (struct stat st{}; !config.unix_socket.empty() &&
                        stat(config.unix_socket.c_str(), &st) == 0) {
    socket_inode = st.st_ino;
  }
  std::string try_address;
  if (!config.unix_socket.empty()) {
    listening.push_back("unix:" + config.unix_socket);
    try_address = listening.back();
  }
  if (!config.tcp_address.empty()) {
    const std::string host =
        config.tcp_address.substr(0, config.tcp_address.rfind(':'));
    listening.push_back(fmt::format("{}:{}", host, tcp_port));
    if (try_address.empty()) try_address = listening.back();
  }
  // The ready banner on stdout: tests and scripts wait for the "try:" line.
  std::printf("jobd %s ready (pid %d)\n", JOBD_VERSION, getpid());
  for (const std::string& l : listening)
    std::printf("  listening on %s\n", l.c_str());
  std::printf("  try: %s --address %s submit echo hello --wait\n",
              JobctlCommand().c_str(), try_address.c_str());
  std::fflush(stdout);
  spdlog::info(
      "jobd {} serving on {} with {} thread worker(s), {} worker "
      "process(es) and {} reactor loop(s); exec {}",
      JOBD_VERSION, absl::StrJoin(listening, ", "), config.thread_workers,
      config.process_pool.workers, config.reactor.threads,
      config.exec.allow.empty()
          ? "disabled"
          : "allows " + absl::StrJoin(config.exec.allow, ", "));

  SystemdNotifier notifier([&scheduler] { return StatusLine(scheduler); },
                           [&listener] { return listener->Problem(); });
  notifier.Ready();

  int exit_code = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      pollfd p{.fd = guardian->pidfd.get(), .events = POLLIN};
      if (poll(&p, 1, 0) <= 0) continue;  // Another child.
      // Without it, exec's programs (and what they start) would no longer
      // die with jobd: stop, and let the supervisor start a fresh jobd.
      spdlog::critical(
          "the guardian process (pid {}) died; stopping (nothing jobd "
          "starts would die with it any more)",
          guardian->pid);
      exit_code = kExitStartup;
      break;
    }
    if (sig == SIGHUP) {
      notifier.Reloading();
      Reload(argc, argv, config, scheduler, service, *exec_policy, *http_policy,
             authenticator);
      notifier.Ready();
      continue;
    }
    spdlog::info("{}: draining (grace {})", strsignal(sig),
                 absl::FormatDuration(config.shutdown_grace));
    break;
  }

  notifier.Stopping();
  {
    absl::MutexLock lock(&health_mu);
    draining = true;
    health->SetServingStatus(false);
    health->SetServingStatus(v1::JobService::service_full_name(), false);
  }
  scheduler.BeginDrain();
  if (!scheduler.WaitNoneRunning(absl::Now() + config.shutdown_grace)) {
    spdlog::warn("grace period over with jobs still running");
  }
  auto [cancelled, kept] = scheduler.EndForShutdown();
  if (kept > 0) {
    spdlog::info("kept {} unfinished job(s) in the journal for the next start",
                 kept);
  }
  if (!cancelled.empty()) {
    constexpr size_t kShown = 20;
    std::vector<uint64_t> shown(
        cancelled.begin(),
        cancelled.begin() + std::min(kShown, cancelled.size()));
    spdlog::warn("cancelled {} unfinished job(s) at shutdown: {}{}",
                 cancelled.size(), absl::StrJoin(shown, ", "),
                 cancelled.size() > kShown ? ", ..." : "");
  }
  service.CloseStreams();
  // Answers and events wait for the journal; if it cannot write, they are
  // given up (UNAVAILABLE to their callers) so that the server can stop.
  if (journal != nullptr && !journal->Flush(absl::Now() + absl::Seconds(5))) {
    spdlog::error(
        "journal: cannot write; stopping without recording the "
        "last changes (their callers are told UNAVAILABLE)");
    journal->Abandon();
  }
  listener->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  notifier.Stop();
  if (!scheduler.StopExecutors(absl::Now() + absl::Seconds(2))) {
    spdlog::error("some tasks ignored cancellation; exiting without them");
    if (journal != nullptr && !journal->Flush(absl::Now() + absl::Seconds(5))) {
      spdlog::error("journal: not everything was written before exit");
    }
    spdlog::shutdown();
    std::fflush(nullptr);
    _exit(listener_dead ? kExitListenerDead : 0);
  }
  // Remove our socket, but not one a newer jobd has bound at the same path.
  struct stat now_st {};
  if (socket_inode != 0 && stat(config.unix_socket.c_str(), &now_st) == 0 &&
      now_st.st_ino == socket_inode) {
    unlink(config.unix_socket.c_str());
  }
  if (listener_dead) {
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
