// DaemonConfig: every setting of jobd, from command-line flags and an
// optional config file (--config FILE, TOML: `key = value` lines named
// like the long flags, and [[task]] tables declaring command tasks:
// toml_config.h), flags winning over the file. Embedded defaults make
// `jobd` with no arguments a working local daemon.
//
// Thread-safety: a plain value; parsed once in main().
#ifndef JOBD_SERVER_CONFIG_CONFIG_H_
#define JOBD_SERVER_CONFIG_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/callbacks/dispatcher.h"
#include "server/cluster/cluster_options.h"
#include "server/frontend/auth.h"
#include "server/frontend/listener.h"
#include "server/frontend/service_limits.h"
#include "server/journal/journal_options.h"
#include "server/scheduler/scheduler_options.h"
#include "server/schedules/runner.h"
#include "workers/process/process_pool_options.h"
#include "workers/python/python_tasks.h"
#include "workers/reactor/reactor.h"
#include "workers/tasks/command_task.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {

struct DaemonConfig {
  std::string unix_socket;  // Empty: no Unix socket.
  std::string tcp_address;  // host:port; empty: no TCP listener.
  // host:port of the Prometheus metrics endpoint and the dashboard; empty:
  // none. HTTPS with tls_cert; beyond loopback only with TLS and
  // authentication (CheckHttpExposure).
  std::string http_listen;
  int thread_workers = 8;
  // process_pool.workers == 0 disables the process pool.
  ProcessPoolOptions process_pool;
  // reactor.threads == 0 disables the reactor (async-only tasks are then
  // rejected).
  ReactorOptions reactor;
  ExecOptions exec;
  // Hosts, IP addresses and CIDR networks http.get may reach beyond public
  // addresses (workers/address_policy.h); empty: public ones only.
  std::vector<std::string> http_allow;
  SchedulerOptions scheduler;
  // Where callbacks may go is service.spec.callback_allowed_prefixes.
  ServiceLimits service;
  // Push callbacks (server/callbacks): the dispatcher's options, its
  // secret read from callback_secret_file (never logged).
  callbacks::CallbackOptions callbacks;
  std::string callback_secret_file;
  // Cluster mode (server/cluster); off unless cluster.url is set.
  cluster::ClusterOptions cluster;
  ConnectionOptions connections;
  absl::Duration shutdown_grace = absl::Seconds(10);
  // Where the journal (jobd.db) lives; see DefaultStateDirectory().
  // Security (README: Security).
  AuthConfig auth;
  std::string unix_socket_group;  // Empty: the socket is owner-only.
  std::string tls_cert, tls_key;  // PEM files; both or neither.
  std::string tls_client_ca;      // PEM: require client certificates (mTLS).
  std::string worker_user;        // Empty: workers run as jobd's user.
  std::string state_dir;
  Durability durability = Durability::kBatched;
  uint64_t journal_max_bytes = uint64_t{4} << 30;
  absl::Duration journal_outage_grace = absl::Seconds(2);
  // JournalOptions::linger (server/journal/journal_options.h).
  absl::Duration journal_linger = absl::Milliseconds(1);
  bool testing_tasks = false;
  // Task plugins (workers/plugins/plugin_loader.h), loaded at start by the
  // daemon and its fork server: the --plugin files in the order given, then
  // --plugin-dir's *.so files in name order, as absolute paths.
  std::vector<std::string> plugins;
  std::string plugin_dir;  // Empty: none.
  // Python tasks (workers/python/python_tasks.h): --python-tasks modules,
  // --python-path directories (absolute), the worker user. Run only by the
  // process pool.
  PythonTasksOptions python_tasks;
  std::string log_level = "info";
  std::string log_format = "text";  // Or "json" (server/jobs/job_log.h).
  // The config file's [[task]] tables (server/config/toml_config.h),
  // checked but not yet registered (a name may be a built-in's).
  std::vector<CommandSpec> command_tasks;
  // Periodic schedules (server/schedules/runner.h): how many jobd holds at
  // most, and the config file's [[schedule]] tables.
  size_t max_schedules = 1000;
  std::vector<schedules::ScheduleRunner::ConfigSchedule> schedules;
};

// What ParseConfig decided.
struct ParsedArgs {
  DaemonConfig config;
  bool exit_now = false;  // --help / --version was handled.
  int exit_code = 0;
};

// $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/jobd for
// root, else $XDG_STATE_HOME/jobd, else ~/.local/state/jobd.
std::string DefaultStateDirectory();

// Parses flags (and --config). On bad input returns InvalidArgument with a
// message naming the flag or config key; prints help itself for --help.
absl::StatusOr<ParsedArgs> ParseConfig(int argc, char** argv);

// A TCP listener beyond loopback needs TLS and authentication (tokens or
// client identities): a job daemon runs code for whoever can submit. OK for
// loopback addresses (127.0.0.0/8, ::1, localhost) whatever the rest.
absl::Status CheckTcpExposure(const std::string& host_port, bool tls,
                              bool authenticated);

// Whether host_port's host is a loopback address (127.0.0.0/8, ::1,
// localhost).
bool IsLoopbackAddress(const std::string& host_port);
// The metrics listener (--http-listen, /metrics and the dashboard) follows
// CheckTcpExposure's rule: beyond loopback only with TLS (it serves HTTPS
// with --tls-cert) and authentication; the error names --http-listen.
absl::Status CheckHttpExposure(const std::string& host_port, bool tls,
                               bool authenticated);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_CONFIG_H_
