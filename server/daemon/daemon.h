// Daemon: the composition root. One whole jobd — journal, scheduler and
// executors, gRPC service, listeners, health, systemd notifier — started
// from a DaemonConfig in a process that may hold others: main() runs one,
// a test starts as many as it likes in its own process (a temp Unix socket,
// 127.0.0.1 port 0) and drives them through their sockets.
//
// What only a process can do stays in main() (server/daemon/jobd_main.cc):
// the signal mask and signal loop (SIGTERM/SIGINT -> Stop, SIGHUP ->
// Reload, SIGCHLD -> GuardianExited), logging, the fd limit, the
// allocator, and forking the helpers while the process has one thread
// (ForkHelpers: the fork server and the guardian), handed to Start.
//
// Life:  Start -> Reload* -> [RequestStop] -> Stop -> destroy.
// A stop is asked for by the Drain RPC or a listener that died for good
// (RequestStop: on_stop_request and WaitStopRequested see it); Stop is what
// SIGTERM does: health NOT_SERVING, running jobs get the shutdown grace, the
// rest are cancelled (or kept for the next start), streams are flushed, the
// journal written, the server and executors stopped, the socket removed.
//
// Without a guardian (a test) exec's programs run without its namespaces;
// without a fork server in DaemonDeps, a process pool gets one by executing
// config.process_pool.self_exe in fork-server mode, which is safe with
// threads but needs self_exe to be jobd's binary (not /proc/self/exe of a
// test).
//
// Thread-safety: Start from any thread, several at once (binding the
// socket under a process-wide umask is serialised inside). Reload, Stop
// and config() from one thread (the owner's); RequestStop,
// WaitStopRequested, GuardianExited, listening(), unix_socket() and
// tcp_port() from any thread.
// Ownership: the Daemon owns everything it starts and destroys it in the
// reverse order of construction: notifier, gRPC server, listener, service,
// scheduler (with the executors: the process pool ends its fork server and
// workers), journal, state-directory lock, tasks and their policies, and the
// guardian last.
//
//   absl::StatusOr<std::unique_ptr<Daemon>> d = Daemon::Start(config, {});
//   ... stub on (*d)->listening()[0] ...
//   DaemonStopped stopped = (*d)->Stop();
#ifndef JOBD_SERVER_DAEMON_DAEMON_H_
#define JOBD_SERVER_DAEMON_DAEMON_H_

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/config/config.h"
#include "server/daemon/reload.h"
#include "server/scheduler/clock.h"
#include "workers/os/guardian.h"
#include "workers/os/unique_fd.h"
#include "workers/process/fork_server.h"
#include "workers/python/python_tasks.h"
#include "workers/sdk/task_registry.h"

namespace grpc {
class HealthCheckServiceInterface;
class Server;
}  // namespace grpc

namespace jobd {

class Authenticator;
class Dashboard;
class ExecPolicy;
class HttpPolicy;
class Journal;
namespace callbacks {
class CallbackDispatcher;
}  // namespace callbacks
namespace cluster {
class ClusterNode;
}  // namespace cluster
class JobServiceImpl;
class Listener;
class MetricsServer;
class RpcStats;
class Scheduler;
class SystemdNotifier;
struct ExecSandbox;
struct Recovered;

// jobd's version ("0.1.0").
std::string_view JobdVersion();

// What the process gives a daemon: the helpers it forked while it had one
// thread, and how the daemon asks to be stopped.
struct DaemonDeps {
  // The process pool's fork server (used when config.process_pool.workers
  // > 0); see the preamble for a daemon without one.
  std::optional<ForkServerProcess> fork_server;
  // The guardian of exec's programs (workers/os/guardian.h); none: exec's
  // programs run without it.
  std::optional<Guardian> guardian;
  // This run's id (the guardian's); empty: a fresh one.
  std::string instance_id;
  // Called, from any thread and without blocking, when the daemon asks to
  // be stopped (Drain RPC, a listener dead for good); main() sends itself
  // SIGTERM. Null: only WaitStopRequested sees it.
  std::function<void()> on_stop_request;
  // The Python tasks ForkHelpers learned (workers/python/python_tasks.h);
  // none: Init learns them itself.
  std::optional<std::vector<PythonTaskSpec>> python_tasks;
};

// Forks the fork server (if `config` has process workers) and the guardian
// of a fresh run id. Only while the process has one thread.
absl::StatusOr<DaemonDeps> ForkHelpers(const DaemonConfig& config);

// How Stop went.
struct DaemonStopped {
  // A listener stopped accepting for good: jobd exits to be restarted.
  bool listener_dead = false;
  // Some tasks ignored cancellation: their threads still run, and
  // destroying the daemon waits for them (main() exits without).
  bool tasks_left_running = false;
};

class Daemon {
 public:
  // The checks that need no file and no process: authentication settings,
  // and a TCP listener beyond loopback only with TLS and authentication.
  // InvalidArgument naming the option.
  static absl::Status CheckConfig(const DaemonConfig& config);

  // Starts a daemon: returns once it accepts connections. Errors:
  // InvalidArgument when the configuration cannot run (main() exits 2),
  // another code when the start failed (exits 1); the message says what.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(DaemonConfig config,
                                                       DaemonDeps deps = {});
  ~Daemon();  // Stop() if not stopped yet.
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Where it listens: "unix:PATH" and/or "HOST:PORT" (the port picked when
  // port 0 was asked), in that order.
  const std::vector<std::string>& listening() const { return listening_; }
  const std::string& unix_socket() const { return unix_socket_; }  // or "".
  int tcp_port() const { return tcp_port_; }  // -1: no TCP listener.
  // The metrics endpoint's port; -1: none (--http-listen unset).
  int http_port() const { return http_port_; }
  // The configuration that runs (Reload changes it). Owner's thread.
  const DaemonConfig& config() const { return config_; }

  // Applies what can change live of `fresh` (server/daemon/reload.h) and
  // logs what it did; an error (the configuration did not parse) changes
  // nothing. systemd sees RELOADING=1, then READY=1. After Stop: nothing.
  ReloadResult Reload(const absl::StatusOr<DaemonConfig>& fresh);

  // Asks the owner to stop the daemon (DaemonDeps::on_stop_request);
  // idempotent, never blocks.
  void RequestStop();
  // Waits until a stop was requested or `deadline`; true if one was.
  bool WaitStopRequested(absl::Time deadline);

  // True once the guardian has exited (never without a guardian).
  bool GuardianExited() const;
  pid_t guardian_pid() const { return guardian_ ? guardian_->pid : 0; }

  // Drains and stops (see the preamble). Once; later calls return the
  // first answer.
  DaemonStopped Stop();
  // For a process about to exit, after Stop: the gRPC server, shut down,
  // is kept (reachable, never destroyed) instead of destroyed with the
  // daemon. Destroying the last gRPC object shuts the library down, which
  // joins gRPC's executor threads; one of them may be in the TCP backup
  // poller gRPC starts when a write to a client fills the socket (a big
  // result), which polls in rounds of 10 s and is woken by nothing at
  // shutdown, so a stop after such a write would take up to 10 s more.
  // The process exit ends those threads instead. The services the kept
  // server points to are destroyed with the daemon: safe, since Stop shut
  // it down (every call ended) and nothing calls them any more.
  void KeepServerForExit();

 private:
  explicit Daemon(DaemonConfig config);
  // The steps of Start, in order.
  absl::Status Init(DaemonDeps deps);
  absl::Status OpenJournal(Recovered& recovered);
  void BuildScheduler(Recovered recovered, absl::Time journal_start);
  absl::Status Serve();
  void OnListenerChange(const std::string& problem, bool dead);
  // Makes `specs` the registry's command tasks (all or none); an error
  // names the task and the line it was declared on.
  absl::StatusOr<TaskRegistry::GroupChange> InstallCommandTasks(
      const std::vector<CommandSpec>& specs);

  // The registry group of the config file's command tasks.
  static constexpr char kCommandTaskGroup[] = "the config file";
  DaemonConfig config_;  // What runs; Reload updates it.
  std::function<void()> on_stop_request_;
  // Members in order of construction; destroyed in reverse.
  std::optional<Guardian> guardian_;
  std::string instance_id_;
  std::unique_ptr<Authenticator> auth_;
  std::shared_ptr<ExecSandbox> exec_sandbox_;
  std::shared_ptr<ExecSandbox> command_sandbox_;  // exec's, with rlimits.
  std::shared_ptr<ExecPolicy> exec_policy_;
  std::shared_ptr<HttpPolicy> http_policy_;
  TaskRegistry registry_;
  // Until the process pool takes it.
  std::optional<ForkServerProcess> fork_server_;
  UniqueFd state_lock_;
  // Push callbacks; null when none are configured. Before the journal: its
  // durability callbacks (WhenDurable) reach the dispatcher until the
  // journal is gone.
  std::unique_ptr<callbacks::CallbackDispatcher> callbacks_;
  std::unique_ptr<Journal> journal_;
  RealClock clock_;
  std::unique_ptr<Scheduler> scheduler_;
  // Per-RPC counters (the frontend writes, the metrics endpoint reads);
  // null without --http-listen.
  std::unique_ptr<RpcStats> rpc_stats_;
  // Cluster mode (--cluster); null without it. Before the service, whose
  // GetStats reads it.
  std::unique_ptr<cluster::ClusterNode> cluster_;
  std::unique_ptr<JobServiceImpl> service_;
  // The journal's schedules, until the runner takes them (Serve).
  std::vector<std::pair<std::string, std::string>> recovered_schedules_;
  // After the service (its runs are validated as the service's specs are),
  // before the server (whose handlers use it).
  std::unique_ptr<schedules::ScheduleRunner> schedules_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<grpc::Server> server_;
  // Both null without --http-listen; the dashboard's routes are on the
  // metrics listener (which goes first).
  std::unique_ptr<Dashboard> dashboard_;
  std::unique_ptr<MetricsServer> metrics_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;  // The server's.
  std::unique_ptr<SystemdNotifier> notifier_;

  // Const once Start returns.
  std::vector<std::string> listening_;
  std::string unix_socket_;
  int tcp_port_ = -1;
  int http_port_ = -1;
  ino_t socket_inode_ = 0;
  bool started_ = false;  // Start succeeded: Stop has work to do.

  absl::Notification stop_requested_;
  std::atomic<bool> stop_request_sent_ = false;
  std::atomic<bool> listener_dead_ = false;
  absl::Mutex health_mu_;
  // Health follows the listeners until the drain, then stays NOT_SERVING.
  bool draining_ ABSL_GUARDED_BY(health_mu_) = false;
  std::optional<DaemonStopped> stopped_;  // Owner's thread.
};

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_DAEMON_H_
