#include "server/daemon/daemon.h"

#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/callbacks/dispatcher.h"
#include "server/cluster/cluster_node.h"
#include "server/daemon/daemon_files.h"
#include "server/daemon/leftovers.h"
#include "server/daemon/systemd.h"
#include "server/dashboard/dashboard.h"
#include "server/frontend/auth.h"
#include "server/frontend/listener.h"
#include "server/frontend/request_errors.h"
#include "server/frontend/rpc_interceptor.h"
#include "server/frontend/service.h"
#include "server/jobs/job_id.h"
#include "server/journal/journal.h"
#include "server/metrics/exposition.h"
#include "server/metrics/metrics_server.h"
#include "server/scheduler/scheduler.h"
#include "server/schedules/runner.h"
#include "server/telemetry/rpc_stats.h"
#include "spdlog/spdlog.h"
#include "workers/plugins/plugin_loader.h"
#include "workers/process/process_pool.h"
#include "workers/reactor/reactor.h"
#include "workers/tasks/builtin_tasks.h"
#include "workers/tasks/command_task.h"
#include "workers/tasks/io_tasks.h"
#include "workers/threads/thread_pool.h"

namespace jobd {
namespace {

// How often TLS certificate files are checked for a change.
constexpr unsigned int kTlsRefreshSeconds = 5;

// Start binds the Unix socket under a umask of its own: one at a time.
ABSL_CONST_INIT absl::Mutex start_mu(absl::kConstInit);

// A failure of Start: the configuration cannot run (main() exits 2), or the
// start failed (exits 1).
absl::Status ConfigError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}
absl::Status StartError(absl::string_view message) {
  return absl::FailedPreconditionError(message);
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

// The host part of "host:port".
std::string HostOf(const std::string& host_port) {
  return host_port.substr(0, host_port.rfind(':'));
}

}  // namespace

std::string_view JobdVersion() { return JOBD_VERSION; }

absl::StatusOr<DaemonDeps> ForkHelpers(const DaemonConfig& config) {
  DaemonDeps deps;
  deps.instance_id = NewInstanceId();
  if (config.process_pool.workers > 0) {
    // The fork server's tasks, as a replacement one has them
    // (RunForkServerIfInvoked): the pool runs no task that reads the
    // daemon's policies (exec and http.get run on the reactor).
    TaskRegistry registry;
    if (absl::Status s = RegisterBuiltinTasks(
            registry, {.testing_tasks = config.testing_tasks});
        !s.ok()) {
      return absl::InternalError("registering built-in tasks: " + s.ToString());
    }
    // Loaded before the fork, so the workers have them too; the daemon
    // loads the same files into its own registry (Init).
    if (absl::Status s = LoadPlugins(config.plugins, registry, /*log=*/false);
        !s.ok()) {
      return s;
    }
    // Python tasks: learned from a child (Python never starts in this
    // process); each worker starts its own interpreter after the fork.
    WorkerSetup setup;
    if (!config.python_tasks.empty()) {
      absl::StatusOr<std::vector<PythonTaskSpec>> specs = DescribePythonTasks(
          config.process_pool.self_exe, config.python_tasks);
      if (!specs.ok()) return specs.status();
      if (absl::Status s = RegisterPythonTasks(*specs, registry); !s.ok()) {
        return s;
      }
      setup = [python = config.python_tasks, specs = *specs] {
        return StartPythonInWorker(python, specs);
      };
      deps.python_tasks = *std::move(specs);
    }
    absl::StatusOr<ForkServerProcess> started =
        ForkForkServer(registry, std::move(setup));
    if (!started.ok()) {
      return absl::InternalError("starting the fork server: " +
                                 started.status().ToString());
    }
    deps.fork_server = *std::move(started);
  }
  // The guardian, which takes exec's programs down with jobd whatever
  // kills it.
  absl::StatusOr<Guardian> guardian = StartGuardian(deps.instance_id);
  if (!guardian.ok()) {
    return absl::InternalError("starting the guardian process: " +
                               guardian.status().ToString());
  }
  deps.guardian = *std::move(guardian);
  return deps;
}

absl::Status Daemon::CheckConfig(const DaemonConfig& config) {
  absl::StatusOr<std::unique_ptr<Authenticator>> auth =
      Authenticator::Create(config.auth);
  if (!auth.ok()) return ConfigError(auth.status().message());
  if (!config.tcp_address.empty()) {
    if (absl::Status s = CheckTcpExposure(
            config.tcp_address, !config.tls_cert.empty(), (*auth)->required());
        !s.ok()) {
      return ConfigError(s.message());
    }
  }
  if (!config.http_listen.empty()) {
    if (absl::Status s = CheckHttpExposure(
            config.http_listen, !config.tls_cert.empty(), (*auth)->required());
        !s.ok()) {
      return ConfigError(s.message());
    }
  }
  return absl::OkStatus();
}

Daemon::Daemon(DaemonConfig config) : config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(DaemonConfig config,
                                                      DaemonDeps deps) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(config)));
  if (absl::Status s = d->Init(std::move(deps)); !s.ok()) return s;
  return d;
}

absl::Status Daemon::Init(DaemonDeps deps) {
  on_stop_request_ = std::move(deps.on_stop_request);
  guardian_ = std::move(deps.guardian);
  fork_server_ = std::move(deps.fork_server);
  instance_id_ =
      deps.instance_id.empty() ? NewInstanceId() : std::move(deps.instance_id);
  const DaemonConfig& config = config_;

  if (absl::Status s = CheckConfig(config); !s.ok()) return s;
  auth_ = *Authenticator::Create(config.auth);  // CheckConfig checked it.

  // Before anything else is touched: a socket directory another user could
  // change is refused, so is a second daemon on the same socket.
  if (!config.unix_socket.empty()) {
    if (absl::Status s = PrepareUnixSocket(config.unix_socket); !s.ok()) {
      return StartError(s.message());
    }
  }
  if (geteuid() == 0 && config.worker_user.empty()) {
    spdlog::warn(
        "jobd runs as root without --worker-user: every job's process "
        "(exec's programs, process-pool workers) runs as root and can read "
        "the journal (every caller's jobs), jobd's environment and any file "
        "of this machine; set --worker-user (README: Security)");
  }

  // This run's id is in every program exec starts: how the guardian and
  // the next start find them (workers/os/guardian.h, leftovers.h).
  exec_sandbox_ = std::make_shared<ExecSandbox>();
  exec_sandbox_->instance_env = std::string(kInstanceEnv) + "=" + instance_id_;
  exec_sandbox_->run_as = config.process_pool.run_as;
  if (guardian_.has_value()) {
    exec_sandbox_->pid_ns_fd = guardian_->pid_ns.get();
    exec_sandbox_->mount_ns_fd = guardian_->mount_ns.get();
    exec_sandbox_->notify_fd = guardian_->notify.get();
    if (guardian_->pid_ns.valid()) {
      spdlog::info(
          "guardian pid {}: exec's programs run in its PID namespace and die "
          "with jobd",
          guardian_->pid);
    } else {
      spdlog::info(
          "guardian pid {}: no PID namespace (jobd is not root): a process "
          "an exec program leaves behind outside its process group lives "
          "until jobd stops (README: Security)",
          guardian_->pid);
    }
  }
  exec_policy_ = std::make_shared<ExecPolicy>(config.exec);
  http_policy_ = std::make_shared<HttpPolicy>(
      *AddressPolicy::Parse(config.http_allow));  // ParseConfig checked it.
  if (absl::Status s = RegisterBuiltinTasks(
          registry_, {.testing_tasks = config.testing_tasks,
                      .exec = exec_policy_,
                      .exec_sandbox = exec_sandbox_,
                      .http = http_policy_,
                      .max_message_bytes = config.service.max_message_bytes});
      !s.ok()) {
    return StartError(std::string("registering built-in tasks: ") +
                      s.ToString());
  }
  // Logged once: the fork server's copy, if ForkHelpers loaded one, was not.
  if (absl::Status s = LoadPlugins(config.plugins, registry_,
                                   /*log=*/true);
      !s.ok()) {
    return StartError(s.message());
  }
  if (!config.python_tasks.empty()) {
    if (!deps.python_tasks.has_value()) {
      absl::StatusOr<std::vector<PythonTaskSpec>> specs = DescribePythonTasks(
          config.process_pool.self_exe, config.python_tasks);
      if (!specs.ok()) return StartError(specs.status().message());
      deps.python_tasks = *std::move(specs);
    }
    if (absl::Status s = RegisterPythonTasks(*deps.python_tasks, registry_);
        !s.ok()) {
      return StartError(s.message());
    }
    std::vector<std::string> names;
    for (const PythonTaskSpec& t : *deps.python_tasks) names.push_back(t.name);
    spdlog::info("python tasks from {}: {} task(s): {}",
                 absl::StrJoin(config.python_tasks.modules, ", "), names.size(),
                 absl::StrJoin(names, ", "));
  }
  // Command tasks run in exec's sandbox, with the workers' rlimits.
  command_sandbox_ = std::make_shared<ExecSandbox>(*exec_sandbox_);
  command_sandbox_->max_address_space = config.process_pool.max_address_space;
  command_sandbox_->max_cpu_seconds = config.process_pool.max_cpu_seconds;
  command_sandbox_->max_open_files = config.process_pool.max_open_files;
  if (absl::StatusOr<TaskRegistry::GroupChange> tasks =
          InstallCommandTasks(config.command_tasks);
      !tasks.ok()) {
    return StartError(absl::StrCat("--config: ", tasks.status().message()));
  } else if (!tasks->added.empty()) {
    spdlog::info("command tasks from the config file: {}",
                 absl::StrJoin(tasks->added, ", "));
  }
  // A daemon in a process that has threads already (a test) starts its
  // fork server by executing jobd in fork-server mode: safe with threads.
  if (config.process_pool.workers > 0 && !fork_server_.has_value()) {
    absl::StatusOr<ForkServerProcess> spawned = SpawnForkServer(
        config.process_pool.self_exe, config.process_pool.fork_server_args);
    if (!spawned.ok()) {
      return StartError("starting the fork server: " +
                        spawned.status().ToString());
    }
    fork_server_ = *std::move(spawned);
  }

  const absl::Time journal_start = absl::Now();
  Recovered recovered;
  if (absl::Status s = OpenJournal(recovered); !s.ok()) return s;
  BuildScheduler(std::move(recovered), journal_start);
  return Serve();
}

absl::Status Daemon::OpenJournal(Recovered& recovered) {
  const DaemonConfig& config = config_;
  if (config.durability == Durability::kNone) return absl::OkStatus();
  // After the fork (its writer is a thread). One daemon per state
  // directory: a second one would write under the first.
  absl::StatusOr<UniqueFd> lock = LockStateDirectory(config.state_dir);
  if (!lock.ok()) return StartError(lock.status().message());
  state_lock_ = *std::move(lock);
  // What the previous run here left running dies before its jobs are re-run
  // or failed.
  if (absl::StatusOr<int> killed = KillLeftovers(config.state_dir);
      !killed.ok()) {
    spdlog::error("cleaning up after the previous run: {}",
                  killed.status().ToString());
  } else if (*killed > 0) {
    spdlog::warn("killed {} process(es) the previous jobd left running",
                 *killed);
  }
  std::vector<pid_t> helpers;
  if (guardian_.has_value()) helpers.push_back(guardian_->pid);
  if (fork_server_.has_value()) helpers.push_back(fork_server_->pid);
  if (absl::Status s = RecordRun(config.state_dir, instance_id_, helpers);
      !s.ok()) {
    return StartError(s.message());
  }
  absl::StatusOr<std::unique_ptr<Journal>> opened =
      Journal::Open({.path = config.state_dir + "/jobd.db",
                     .durability = config.durability,
                     .max_bytes = config.journal_max_bytes,
                     .outage_grace = config.journal_outage_grace,
                     .linger = config.journal_linger},
                    &recovered);
  if (!opened.ok()) {
    return StartError("journal: " + std::string(opened.status().message()));
  }
  journal_ = *std::move(opened);
  if (!recovered.moved_aside.empty()) {
    spdlog::error(
        "journal: the old journal was moved aside to {}; starting with an "
        "empty one (its jobs are not restored)",
        recovered.moved_aside);
  }
  return absl::OkStatus();
}

void Daemon::BuildScheduler(Recovered recovered, absl::Time journal_start) {
  const DaemonConfig& config = config_;
  SchedulerOptions options = config.scheduler;
  // The per-task counters cost a few increments per job under the
  // scheduler's lock: only for the metrics endpoint.
  options.task_metrics = !config.http_listen.empty();
  scheduler_ =
      std::make_unique<Scheduler>(std::move(options), clock_, journal_.get());
  Scheduler& scheduler = *scheduler_;
  scheduler.AddExecutor(std::make_unique<ThreadPoolExecutor>(
      config.thread_workers, scheduler.listener_for(v1::EXECUTOR_THREAD)));
  if (fork_server_.has_value()) {
    scheduler.AddExecutor(std::make_unique<ProcessPoolExecutor>(
        config.process_pool, *std::move(fork_server_),
        scheduler.listener_for(v1::EXECUTOR_PROCESS)));
    fork_server_.reset();
  }
  if (config.reactor.threads > 0) {
    scheduler.AddExecutor(std::make_unique<ReactorExecutor>(
        config.reactor, scheduler.listener_for(v1::EXECUTOR_REACTOR)));
  }
  // Push callbacks: with a key (--callback-secret-file). Those the journal
  // holds pending go out again, before the restored jobs can end more.
  if (!config.callbacks.secret.empty()) {
    callbacks_ = std::make_unique<callbacks::CallbackDispatcher>(
        config.callbacks, journal_.get());
    callbacks_->Restore(std::move(recovered.callbacks));
    scheduler.SetCallbackHook(callbacks_.get());
  } else if (const size_t pending = std::count_if(
                 recovered.callbacks.begin(), recovered.callbacks.end(),
                 [](const CallbackRecord& r) {
                   return r.state == v1::CALLBACK_STATE_PENDING;
                 });
             pending > 0) {
    spdlog::warn(
        "callbacks: {} pending in the journal, kept there until "
        "--callback-secret-file and --callback-allowed-prefixes are set again",
        pending);
  }
  // Cluster mode (built before the restore, which hands shared jobs back
  // to work sharing; started below, once the service exists).
  if (config.cluster.enabled()) {
    // Ids name this node from now on ("42@node-a": server/jobs/job_id.h).
    SetJobIdNode(config.cluster.node_name);
    cluster_ = std::make_unique<cluster::ClusterNode>(config.cluster);
    cluster_->ShareWork(
        scheduler,
        [this](v1::JobSpec spec) {
          return ValidateSpec(std::move(spec), registry_,
                              service_->limits().spec);
        },
        config.scheduler.retention_ttl);
  }
  if (journal_ == nullptr) return;
  recovered_schedules_ = std::move(recovered.schedules);
  const size_t rows = recovered.rows.size();
  const absl::Time read = absl::Now();
  const RestoreSummary r = scheduler.Restore(std::move(recovered), registry_);
  const absl::Time restored = absl::Now();
  spdlog::info(
      "journal {}/jobd.db ({}): {} job(s) restored in {} (read {}, "
      "rebuilt {}): {} queued, {} waiting, {} re-run (at-least-once), {} "
      "lost (LOST_ON_RESTART), {} expired, {} unrunnable, {} unreadable, {} "
      "retained",
      config.state_dir, DurabilityName(config.durability), rows,
      absl::FormatDuration(restored - journal_start),
      absl::FormatDuration(read - journal_start),
      absl::FormatDuration(restored - read), r.queued, r.waiting, r.rerun,
      r.lost, r.expired, r.unrunnable, r.unreadable, r.retained);
}

absl::Status Daemon::Serve() {
  const DaemonConfig& config = config_;
  if (!config.http_listen.empty()) {
    // Rendered at scrape time from what GetStats knows: nothing on the job
    // path counts for it but the per-task counters, the journal's commit
    // histograms and the per-RPC counters (server/metrics/).
    rpc_stats_ = std::make_unique<RpcStats>(JobServiceMethods());
    dashboard_ = std::make_unique<Dashboard>(
        *scheduler_, *auth_,
        DashboardOptions{.version = std::string(JobdVersion())});
    absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
        MetricsServer::Start(
            config.http_listen,
            MetricsServerOptions{.tls_cert = config.tls_cert,
                                 .tls_key = config.tls_key,
                                 .tls_client_ca = config.tls_client_ca,
                                 .auth = auth_.get()},
            [this] {
              MetricsSources sources{.stats = scheduler_->GetStats(),
                                     .tasks = scheduler_->TaskEnds(),
                                     .rpcs = rpc_stats_->Snapshot()};
              if (journal_ != nullptr) sources.journal = journal_->commits();
              return RenderMetrics(sources);
            },
            [this](httplib::Server& s) { dashboard_->AddRoutes(s); });
    if (!metrics.ok()) return StartError(metrics.status().message());
    metrics_ = *std::move(metrics);
    dashboard_->Start();
    http_port_ = metrics_->port();
    const char* scheme = metrics_->tls() ? "https" : "http";
    spdlog::info("metrics on {}://{}:{}/metrics, dashboard on {}://{}:{}/{}",
                 scheme, HostOf(config.http_listen), http_port_, scheme,
                 HostOf(config.http_listen), http_port_,
                 auth_->required() ? " (authentication on)" : "");
  }
  service_ = std::make_unique<JobServiceImpl>(
      *scheduler_, registry_, *auth_, config.service, std::string(JOBD_VERSION),
      [this] { RequestStop(); });
  // Periodic schedules: each run is validated as a Submit's spec is.
  schedules_ = std::make_unique<schedules::ScheduleRunner>(
      *scheduler_, journal_.get(), clock_,
      [this](v1::JobSpec spec) {
        return ValidateSpec(std::move(spec), registry_,
                            service_->limits().spec);
      },
      schedules::RunnerOptions{.max_schedules = config.max_schedules});
  schedules_->Restore(recovered_schedules_);
  recovered_schedules_.clear();
  for (const absl::Status& s : schedules_->ApplyConfig(config.schedules)) {
    spdlog::error("config: {} (that schedule is left out)",
                  std::string(s.message()));
  }
  schedules_->Start();
  service_->SetSchedules(schedules_.get());
  // Cluster mode: its own thread and Redis connections; Redis may be down
  // now (the node keeps trying). Nothing of it exists without --cluster.
  if (cluster_ != nullptr) {
    cluster_->Start();
    service_->SetStatsExtension(
        [node = cluster_.get()](v1::GetStatsResponse& stats) {
          node->AddStats(stats);
        });
    service_->SetRemoteJobs(cluster_->remote_jobs());
  }
  // grpc.health.v1 (SERVING until the drain) and server reflection, so that
  // grpcurl and load balancers can find their way. Both are process-wide
  // switches, set for every server built from now on.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(config.service.max_message_bytes));
  builder.SetMaxSendMessageSize(
      static_cast<int>(config.service.max_message_bytes));
  builder.RegisterService(service_.get());
  ApplyConnectionOptions(config.connections, builder);
  {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(ParseErrorInterceptorFactory());
    // After it: what it makes of a request that does not parse is counted.
    if (rpc_stats_ != nullptr) {
      interceptors.push_back(RpcStatsInterceptorFactory(*rpc_stats_));
    }
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  // jobd accepts on its plaintext listeners itself (frontend/listener.h); a
  // TLS listener is gRPC's.
  const bool tls = !config.tls_cert.empty();
  if (!config.tcp_address.empty() && tls) {
    builder.AddListeningPort(config.tcp_address, TcpCredentials(config),
                             &tcp_port_);
  }
  {
    absl::MutexLock start_lock(&start_mu);
    const mode_t old_umask = umask(0077);  // Socket: owner only.
    absl::StatusOr<std::unique_ptr<Listener>> opened = Listener::Open(
        config.unix_socket, tls ? std::string() : config.tcp_address,
        config.connections);
    if (!opened.ok()) {
      umask(old_umask);
      return StartError(opened.status().message());
    }
    listener_ = *std::move(opened);
    if (!tls && !config.tcp_address.empty()) tcp_port_ = listener_->tcp_port();
    service_->SetPeerNames([listener = listener_.get()](std::string_view peer) {
      return listener->PeerName(peer);
    });
    server_ = builder.BuildAndStart();
    umask(old_umask);
  }
  if (server_ == nullptr || (!config.tcp_address.empty() && tcp_port_ <= 0)) {
    return StartError(fmt::format(
        "could not start the gRPC server on {} (address in use or invalid?)",
        absl::StrJoin({config.unix_socket, config.tcp_address}, " and ")));
  }
  if (!config.unix_socket.empty() && !config.unix_socket_group.empty()) {
    if (absl::Status s =
            ShareUnixSocket(config.unix_socket, config.unix_socket_group);
        !s.ok()) {
      server_->Shutdown();
      return ConfigError(s.message());
    }
  }
  health_ = server_->GetHealthCheckService();
  health_->SetServingStatus(true);
  health_->SetServingStatus(v1::JobService::service_full_name(), true);
  // The health service follows the listeners (NOT_SERVING while jobd cannot
  // accept connections) until the drain; a listener dead for good drains
  // jobd so that it is restarted.
  if (tls) listener_->WatchGrpcListener(HostOf(config.tcp_address), tcp_port_);
  listener_->Start(server_.get(),
                   [this](const std::string& problem, bool dead) {
                     OnListenerChange(problem, dead);
                   });
  unix_socket_ = config.unix_socket;
  socket_inode_ = SocketInode(unix_socket_);
  if (!unix_socket_.empty()) listening_.push_back("unix:" + unix_socket_);
  if (!config.tcp_address.empty()) {
    listening_.push_back(
        fmt::format("{}:{}", HostOf(config.tcp_address), tcp_port_));
  }
  spdlog::info(
      "jobd {} serving on {} with {} thread worker(s), {} worker "
      "process(es) and {} reactor loop(s); exec {}",
      JOBD_VERSION, absl::StrJoin(listening_, ", "), config.thread_workers,
      config.process_pool.workers, config.reactor.threads,
      config.exec.allow.empty()
          ? "disabled"
          : "allows " + absl::StrJoin(config.exec.allow, ", "));
  notifier_ = std::make_unique<SystemdNotifier>(
      [this] { return StatusLine(*scheduler_); },
      [this] { return listener_->Problem(); });
  notifier_->Ready();
  started_ = true;
  return absl::OkStatus();
}

void Daemon::OnListenerChange(const std::string& problem, bool dead) {
  {
    absl::MutexLock lock(&health_mu_);
    if (!draining_) {
      health_->SetServingStatus(problem.empty());
      health_->SetServingStatus(v1::JobService::service_full_name(),
                                problem.empty());
    }
  }
  if (dead && !listener_dead_.exchange(true)) RequestStop();
}

absl::StatusOr<TaskRegistry::GroupChange> Daemon::InstallCommandTasks(
    const std::vector<CommandSpec>& specs) {
  std::vector<std::pair<TaskDef, std::string>> defs;
  for (const CommandSpec& spec : specs) {
    absl::StatusOr<TaskDef> def =
        CommandTask(std::make_shared<const CommandSpec>(spec), exec_policy_,
                    command_sandbox_);
    if (!def.ok()) return def.status();
    defs.emplace_back(*std::move(def), spec.Fingerprint());
  }
  absl::StatusOr<TaskRegistry::GroupChange> change =
      registry_.SetGroup(kCommandTaskGroup, std::move(defs));
  if (!change.ok()) {
    // Say where the refused task was declared.
    for (const CommandSpec& spec : specs) {
      const std::string named = absl::StrCat("task '", spec.name, "'");
      absl::string_view message = change.status().message();
      if (absl::ConsumePrefix(&message, named)) {
        absl::ConsumePrefix(&message, ": ");
        return absl::InvalidArgumentError(
            absl::StrCat(named, " (", spec.origin, "): ", message));
      }
    }
  }
  return change;
}

ReloadResult Daemon::Reload(const absl::StatusOr<DaemonConfig>& fresh) {
  ReloadResult r;
  if (!started_ || stopped_.has_value()) return r;
  notifier_->Reloading();
  if (!fresh.ok()) {
    spdlog::error(
        "SIGHUP: the configuration does not parse ({}); nothing "
        "changed",
        std::string(fresh.status().message()));
  } else {
    std::vector<CommandSpec> running_tasks = config_.command_tasks;
    r = ApplyConfig(config_, *fresh, *scheduler_, *service_, *exec_policy_,
                    *http_policy_, *auth_);
    // Command tasks: all of the new set or none of it. Jobs admitted before
    // finish on the definition they were admitted with (TaskRegistry).
    absl::StatusOr<TaskRegistry::GroupChange> tasks =
        InstallCommandTasks(fresh->command_tasks);
    if (!tasks.ok()) {
      config_.command_tasks = std::move(running_tasks);
      r.refused.push_back(
          absl::StrCat("the [[task]] tables (the old command tasks stay): ",
                       tasks.status().message()));
    } else {
      config_.command_tasks = fresh->command_tasks;
      for (const auto& [what, names] :
           {std::pair("added", &tasks->added),
            std::pair("changed", &tasks->changed),
            std::pair("removed", &tasks->removed)}) {
        if (!names->empty()) {
          r.applied.push_back(absl::StrCat("command tasks ", what, ": ",
                                           absl::StrJoin(*names, ", ")));
        }
      }
    }
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
  notifier_->Ready();
  return r;
}

void Daemon::RequestStop() {
  if (stop_request_sent_.exchange(true)) return;
  stop_requested_.Notify();
  if (on_stop_request_) on_stop_request_();
}

bool Daemon::WaitStopRequested(absl::Time deadline) {
  return stop_requested_.WaitForNotificationWithDeadline(deadline);
}

bool Daemon::GuardianExited() const {
  if (!guardian_.has_value()) return false;
  pollfd p{.fd = guardian_->pidfd.get(), .events = POLLIN};
  return poll(&p, 1, 0) > 0;
}

DaemonStopped Daemon::Stop() {
  if (stopped_.has_value()) return *stopped_;
  if (!started_) return {};
  DaemonStopped result;
  Scheduler& scheduler = *scheduler_;
  notifier_->Stopping();
  {
    absl::MutexLock lock(&health_mu_);
    draining_ = true;
    health_->SetServingStatus(false);
    health_->SetServingStatus(v1::JobService::service_full_name(), false);
  }
  schedules_->Stop();  // No run from now on.
  scheduler.BeginDrain();
  if (!scheduler.WaitNoneRunning(absl::Now() + config_.shutdown_grace)) {
    spdlog::warn("grace period over with jobs still running");
  }
  auto [cancelled, kept] = scheduler.EndForShutdown();
  // Other nodes' jobs handed back or ended here reach Redis before the
  // node leaves (else they wait for this node's lease to run out).
  if (cluster_ != nullptr &&
      !cluster_->Settle(absl::Now() + absl::Seconds(2))) {
    spdlog::warn(
        "cluster: some ends or handed-back jobs did not reach Redis; the "
        "other nodes reclaim them once this node's lease runs out");
  }
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
  service_->CloseStreams();
  // Answers and events wait for the journal; if it cannot write, they are
  // given up (UNAVAILABLE to their callers) so that the server can stop.
  if (journal_ != nullptr && !journal_->Flush(absl::Now() + absl::Seconds(5))) {
    spdlog::error(
        "journal: cannot write; stopping without recording the "
        "last changes (their callers are told UNAVAILABLE)");
    journal_->Abandon();
  }
  listener_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics_ != nullptr) metrics_->Stop();
  if (dashboard_ != nullptr) dashboard_->Stop();
  notifier_->Stop();
  // Its listening sockets close: a connection now is refused at once, not
  // left in a backlog nobody takes from (the daemon may live on in a test).
  listener_.reset();
  if (!scheduler.StopExecutors(absl::Now() + absl::Seconds(2))) {
    spdlog::error("some tasks ignored cancellation; exiting without them");
    if (journal_ != nullptr &&
        !journal_->Flush(absl::Now() + absl::Seconds(5))) {
      spdlog::error("journal: not everything was written before exit");
    }
    result.tasks_left_running = true;
  }
  // Pending callbacks stay in the journal for the next start.
  if (callbacks_ != nullptr) callbacks_->Stop();
  // Its lease is left to expire: the other nodes see it gone.
  if (cluster_ != nullptr) cluster_->Stop();
  // Our socket, but not one a newer jobd has bound at the same path.
  RemoveSocketIfSame(unix_socket_, socket_inode_);
  result.listener_dead = listener_dead_;
  stopped_ = result;
  return result;
}

void Daemon::KeepServerForExit() {
  if (!stopped_.has_value() || server_ == nullptr) return;
  // Never destroyed, and reachable (not a leak to LeakSanitizer).
  static auto* const kept = new std::vector<std::unique_ptr<grpc::Server>>();
  kept->push_back(std::move(server_));
}

Daemon::~Daemon() {
  if (started_) {
    Stop();
  } else if (server_ != nullptr) {
    server_->Shutdown();  // Start failed after the server was built.
  }
  // Start failed before the process pool took the fork server: it exits
  // once its control socket closes.
  if (fork_server_.has_value() && fork_server_->pid > 0) {
    fork_server_->control.reset();
    waitpid(fork_server_->pid, nullptr, 0);
  }
}

}  // namespace jobd
