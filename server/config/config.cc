#include "server/config/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>
#include <tuple>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "jobd/v1/default_address.h"
#include "server/config/callback_config.h"
#include "server/config/caller_weights.h"
#include "server/config/cluster_config.h"
#include "server/config/duration_flag.h"
#include "server/config/retry_options.h"
#include "server/config/toml_config.h"
#include "spdlog/fmt/fmt.h"
#include "workers/plugins/plugin_loader.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// A dotted Python module name: identifiers joined by dots.
bool IsModuleName(const std::string& name) {
  if (name.empty()) return false;
  bool start = true;
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '.') {
      if (start) return false;
      start = true;
      continue;
    }
    const bool alpha = std::isalpha(c) || c == '_' || c >= 0x80;
    if (!alpha && !(std::isdigit(c) && !start)) return false;
    start = false;
  }
  return !start;
}

// Checks --python-tasks and --python-path, makes the paths absolute and
// gives the modules the worker user.
absl::Status CheckPythonTasks(PythonTasksOptions& python,
                              const ProcessPoolOptions& pool) {
  for (const std::string& m : python.modules) {
    if (!IsModuleName(m)) {
      return absl::InvalidArgumentError(fmt::format(
          "--python-tasks: '{}' is not a Python module name (dotted "
          "identifiers, such as tasks or mypkg.tasks)",
          ClipUtf8(m, 256)));
    }
  }
  for (std::string& dir : python.paths) {
    std::error_code ec;
    if (dir.empty() || !std::filesystem::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(fmt::format(
          "--python-path: '{}' is not a directory", ClipUtf8(dir, 4096)));
    }
    dir = std::filesystem::absolute(dir, ec).lexically_normal().string();
  }
  if (!python.paths.empty() && python.modules.empty()) {
    return absl::InvalidArgumentError(
        "--python-path: given without --python-tasks");
  }
  if (!python.modules.empty() && pool.workers == 0) {
    return absl::InvalidArgumentError(
        "--python-tasks: Python tasks run only in the process pool, and "
        "--process-workers is 0");
  }
  python.run_as = pool.run_as;
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseDurationFlag(const std::string& text, const char* flag,
                               absl::Duration* out, bool allow_zero) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration() ||
      (!allow_zero && d == absl::ZeroDuration()) ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        fmt::format("--{}: '{}' is not a {}duration like 500ms, 10s or 1h",
                    flag, text, allow_zero ? "" : "positive "));
  }
  *out = d;
  return absl::OkStatus();
}

namespace {

// Parses --key-limit KEY=N and --key-rate KEY=R items into `out`.
absl::Status ParseKeyLimits(const std::vector<std::string>& limits,
                            const std::vector<std::string>& rates,
                            KeyLimitOptions& out) {
  for (const bool is_rate : {false, true}) {
    const char* flag = is_rate ? "key-rate" : "key-limit";
    for (const std::string& item : is_rate ? rates : limits) {
      const size_t eq = item.rfind('=');
      const std::string key = item.substr(0, eq);
      if (eq == std::string::npos || key.empty()) {
        return absl::InvalidArgumentError(fmt::format(
            "--{}: '{}' is not KEY={} (e.g. db=4)", flag, ClipUtf8(item, 200),
            is_rate ? "STARTS_PER_SECOND" : "MAX_RUNNING"));
      }
      if (absl::Status s = ValidateKey(key, fmt::format("--{}", flag));
          !s.ok()) {
        return s;
      }
      const std::string value = item.substr(eq + 1);
      KeyLimit& limit = out.keys[key];
      if (is_rate) {
        double rate = 0;
        if (!absl::SimpleAtod(value, &rate) || !(rate > 0) ||
            !(rate <= kMaxKeyRate)) {
          return absl::InvalidArgumentError(fmt::format(
              "--key-rate: '{}' for key '{}' is not a rate above 0 and at "
              "most {:g} starts per second",
              ClipUtf8(value, 64), key, kMaxKeyRate));
        }
        limit.rate = rate;
      } else {
        uint32_t n = 0;
        if (!absl::SimpleAtoi(value, &n) || n == 0) {
          return absl::InvalidArgumentError(fmt::format(
              "--key-limit: '{}' for key '{}' is not a number of jobs of at "
              "least 1",
              ClipUtf8(value, 64), key));
        }
        limit.max_running = n;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultStateDirectory() {
  if (const char* s = std::getenv("STATE_DIRECTORY"); s && *s) {
    const std::string dirs(s);  // Several are ':'-separated: the first.
    return dirs.substr(0, dirs.find(':'));
  }
  if (geteuid() == 0) return "/var/lib/jobd";
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) {
    return std::string(x) + "/jobd";
  }
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.local/state/jobd";
}

bool IsLoopbackAddress(const std::string& host_port) {
  std::string host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  in_addr v4{};
  in6_addr v6{};
  return host == "localhost" ||
         (inet_pton(AF_INET, host.c_str(), &v4) == 1 &&
          (ntohl(v4.s_addr) >> 24) == 127) ||
         (inet_pton(AF_INET6, host.c_str(), &v6) == 1 &&
          IN6_IS_ADDR_LOOPBACK(&v6));
}

namespace {

// The one rule for every TCP listener: beyond loopback, TLS and callers
// that authenticate; `option` names the listener's flag.
absl::Status CheckExposure(const char* option, const char* what,
                           const std::string& host_port, bool tls,
                           bool authenticated) {
  if (IsLoopbackAddress(host_port) || (tls && authenticated)) {
    return absl::OkStatus();
  }
  std::string missing;
  if (!tls) missing = "TLS (--tls-cert, --tls-key)";
  if (!authenticated) {
    if (!missing.empty()) missing += " and ";
    missing += "authentication (--auth-token or --tls-identity)";
  }
  return absl::InvalidArgumentError(fmt::format(
      "{}: refusing to listen on non-loopback address '{}' without {}: {}; "
      "use 127.0.0.1 or [::1], or configure both TLS and authentication",
      option, host_port, missing, what));
}

}  // namespace

absl::Status CheckTcpExposure(const std::string& host_port, bool tls,
                              bool authenticated) {
  return CheckExposure("--tcp", "whoever reaches it could run jobs", host_port,
                       tls, authenticated);
}

absl::Status CheckHttpExposure(const std::string& host_port, bool tls,
                               bool authenticated) {
  return CheckExposure("--http-listen",
                       "whoever reaches it could read the metrics and the "
                       "dashboard",
                       host_port, tls, authenticated);
}

absl::StatusOr<ParsedArgs> ParseConfig(int argc, char** argv) {
  ParsedArgs parsed;
  DaemonConfig& c = parsed.config;
  CLI::App app{
      "jobd: a job-execution daemon. Accepts jobs over gRPC and runs them in "
      "a pool of worker processes or on a thread pool, streaming their "
      "events back.",
      "jobd"};
  app.set_version_flag("--version", JOBD_VERSION);
  app.set_config("--config", "",
                 "Read settings from a TOML file (keys named like the long "
                 "flags; [[task]] tables declare command tasks)");
  auto command_tasks = std::make_shared<std::vector<CommandSpec>>();
  auto config_schedules = std::make_shared<
      std::vector<schedules::ScheduleRunner::ConfigSchedule>>();
  app.config_formatter(
      std::make_shared<TomlConfig>(command_tasks, config_schedules));
  app.allow_config_extras(false);  // A misspelt key is an error, not ignored.

  c.unix_socket = v1::DefaultSocketPath();
  c.tcp_address = v1::kDefaultTcpAddress;
  std::string retention_ttl = "1h", grace = "10s", cancel_grace = "500ms",
              kill_grace = "100ms", exec_kill_grace = "1s",
              ping_interval = "1s", ping_timeout = "5s", outage_grace = "2s",
              linger = "1ms", max_delay = "8760h", retry_initial = "1s",
              retry_max = "5m";
  uint32_t retry_attempts = 1;
  double retry_multiplier = 2.0;
  std::vector<std::string> task_retries;
  ConnectionOptions& conn = c.connections;
  auto text = [](absl::Duration d) { return absl::FormatDuration(d); };
  std::string idle = text(conn.idle_timeout), age = text(conn.max_age),
              age_grace = text(conn.max_age_grace),
              keepalive = text(conn.keepalive_time),
              keepalive_timeout = text(conn.keepalive_timeout),
              handshake = text(conn.handshake_timeout);
  ProcessPoolOptions& pool = c.process_pool;
  pool.workers =
      static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--unix-socket", c.unix_socket,
                 "Unix socket path to listen on; 'none' for no Unix socket")
      ->capture_default_str();
  app.add_option("--tcp", c.tcp_address,
                 "TCP host:port to listen on (port 0 picks one); 'none' for "
                 "no TCP listener")
      ->capture_default_str();
  app.add_option("--http-listen", c.http_listen,
                 "HOST:PORT of the Prometheus metrics endpoint (GET "
                 "/metrics) and the dashboard; HTTPS with --tls-cert; beyond "
                 "loopback only with TLS and authentication, as --tcp; port "
                 "0 picks one; empty: none")
      ->capture_default_str();
  app.add_option("--thread-workers", c.thread_workers,
                 "Threads of the thread-pool executor")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--process-workers", pool.workers,
                 "Worker processes of the process pool (default: the number "
                 "of cores); 0 disables the pool")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--max-jobs-per-worker", pool.max_jobs_per_worker,
                 "Replace a worker process after this many jobs "
                 "(maxtasksperchild); 0 = never")
      ->capture_default_str();
  app.add_option("--max-worker-rss", pool.max_worker_rss,
                 "Resident memory a worker may use (e.g. 512M, 2G), checked "
                 "while jobs run: over it, a busy worker is killed (its job "
                 "fails OUT_OF_MEMORY) and an idle one replaced; 0 = no limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--worker-rlimit-as", pool.max_address_space,
                 "RLIMIT_AS of each worker (e.g. 4G); allocations beyond fail "
                 "the job with OUT_OF_MEMORY; 0 = unlimited")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--worker-rlimit-cpu", pool.max_cpu_seconds,
                 "RLIMIT_CPU of each worker process, in CPU seconds over its "
                 "life; 0 = unlimited")
      ->capture_default_str();
  app.add_option("--worker-rlimit-nofile", pool.max_open_files,
                 "RLIMIT_NOFILE of each worker; 0 = inherited")
      ->capture_default_str();
  app.add_option("--cancel-grace", cancel_grace,
                 "A cancelled or timed-out process-pool job gets this long to "
                 "stop cooperatively before its worker gets SIGTERM")
      ->capture_default_str();
  app.add_option("--kill-grace", kill_grace,
                 "Time between SIGTERM and SIGKILL for such a worker")
      ->capture_default_str();
  app.add_option("--worker-ping-interval", ping_interval,
                 "How often each worker process (and spare) is asked whether "
                 "it is alive; 0 = never (e.g. to debug a worker in gdb)")
      ->capture_default_str();
  app.add_option("--worker-ping-timeout", ping_timeout,
                 "A worker that leaves a ping unanswered this long (stopped "
                 "by SIGSTOP, wedged) is killed and replaced: jobs it never "
                 "began go to another worker, a job it was running fails "
                 "WORKER_CRASHED")
      ->capture_default_str();
  app.add_option("--spare-workers", pool.spare_workers,
                 "Idle worker processes kept ready beside the pool: a slot "
                 "whose worker crashed or retired takes one at once")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--quarantine-after", pool.quarantine_after,
                 "Quarantine a task after it killed its worker this many "
                 "times in a row; 0 = never")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--max-chunk", pool.max_chunk,
                 "Largest chunk of jobs sent to a worker in one frame "
                 "(JobSpec.chunksize is capped to it)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--pipeline-depth", pool.pipeline_depth,
                 "Chunks (frames of jobs) a busy worker process may hold "
                 "queued behind the one it runs while the recent jobs are "
                 "short (under 2 ms on average), so it never waits for the "
                 "daemon between tiny jobs; 1 = one at a time")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--reactor-threads", c.reactor.threads,
                 "Event-loop threads of the coroutine reactor (async IO "
                 "tasks); 0 disables the reactor")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--reactor-max-jobs", c.reactor.max_jobs,
                 "Jobs running on the reactor at once; more wait in the queue")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  app.add_option("--reactor-blocking-threads", c.reactor.blocking_threads,
                 "Threads for the blocking calls of async tasks "
                 "(AsyncTaskContext::RunBlocking)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--exec-allow", c.exec.allow,
                 "Programs the exec task may run: absolute paths, "
                 "comma-separated; empty (the default) disables exec")
      ->delimiter(',');
  app.add_option("--exec-env-allow", c.exec.env_allow,
                 "Environment variables an exec job may set (its `env`): "
                 "names, comma-separated; empty (the default): none. A "
                 "program gets only PATH, JOBD_INSTANCE and these")
      ->delimiter(',');
  app.add_option("--http-allow", c.http_allow,
                 "Hosts, IP addresses and CIDR networks http.get may reach "
                 "although they are not public (loopback, private, "
                 "link-local, ...), comma-separated; empty (the default): "
                 "public addresses only")
      ->delimiter(',');
  app.add_option("--exec-kill-grace", exec_kill_grace,
                 "A cancelled or timed-out exec job's process group gets "
                 "SIGTERM, then SIGKILL this long after")
      ->capture_default_str();
  c.state_dir = DefaultStateDirectory();
  std::string durability = "batched";
  app.add_option("--state-dir", c.state_dir,
                 "Directory of the journal (jobd.db): $STATE_DIRECTORY, else "
                 "/var/lib/jobd (root) or $XDG_STATE_HOME/jobd")
      ->capture_default_str();
  app.add_option("--durability", durability,
                 "none: jobs live in memory only; batched: every job and "
                 "result is in the journal, fsynced in group commits, before "
                 "a client hears of it; every-commit: one fsynced "
                 "transaction per change")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "batched", "every-commit"}));
  app.add_option("--journal-max-bytes", c.journal_max_bytes,
                 "Largest journal file (e.g. 4G); past it new jobs are "
                 "refused as on a full disk; 0 = unlimited")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--journal-outage-grace", outage_grace,
                 "While the journal cannot write, how long an answer (GetJob, "
                 "CancelJob, a stream's events) waits for it before it fails "
                 "UNAVAILABLE")
      ->capture_default_str();
  app.add_option("--journal-linger", linger,
                 "How long an at-least-once job's accept may wait to share a "
                 "commit with its end (a job shorter than this takes one "
                 "commit); at most 100ms; 0 = commit it at once")
      ->capture_default_str();
  app.add_option("--auth-token", c.auth.tokens,
                 "A caller: NAME:ROLES:SHA256 of its bearer token (roles "
                 "submit, read, admin joined by +); repeatable")
      ->delimiter(',');
  app.add_option("--tls-identity", c.auth.tls_identities,
                 "A caller by its client certificate: CN-or-SAN:ROLES; "
                 "repeatable")
      ->delimiter(',');
  app.add_option("--unix-socket-auth", c.auth.unix_socket_auth,
                 "Callers on the Unix socket: trusted (the local admin) or "
                 "token (authenticate like everyone)")
      ->capture_default_str()
      ->check(CLI::IsMember({"trusted", "token"}));
  app.add_option("--unix-socket-group", c.unix_socket_group,
                 "Group allowed on the Unix socket (socket 0660, directory "
                 "0750); default: owner only");
  app.add_option("--tls-cert", c.tls_cert,
                 "PEM certificate chain for TLS on the TCP listener (files "
                 "are re-read when they change)");
  app.add_option("--tls-key", c.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", c.tls_client_ca,
                 "PEM CA bundle: clients must present a certificate it "
                 "signed (mTLS)");
  app.add_option("--worker-user", c.worker_user,
                 "Run every process started for a job (process-pool "
                 "workers, exec's programs) as this user (and its group); "
                 "jobd must run as root");
  app.add_option("--quota-max-live", c.service.quota_max_live,
                 "Unfinished jobs per caller that is not admin; 0 = no limit")
      ->capture_default_str();
  app.add_option("--quota-submit-rate", c.service.quota_submit_rate,
                 "Jobs per second a caller that is not admin may submit (one "
                 "second of burst); 0 = no limit")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--quota-max-bytes", c.service.quota_max_bytes,
                 "Bytes (e.g. 64M) the jobs of a caller that is not admin may "
                 "hold: the specs of its unfinished jobs and the specs and "
                 "results of its retained ones. Over it, its oldest retained "
                 "jobs are forgotten first; a job its unfinished ones would "
                 "take past it is refused; 0 = no limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-streams-per-caller", c.service.max_streams_per_caller,
                 "Submit and WatchJobs streams open at once per caller that "
                 "is not admin; 0 = no limit")
      ->capture_default_str();
  app.add_option("--max-streams", c.service.max_streams,
                 "Submit and WatchJobs streams open at once, all callers "
                 "(admin too); 0 = no limit")
      ->capture_default_str();
  app.add_option("--max-connections", conn.max_connections,
                 "Client connections open at once on the Unix socket and a "
                 "TCP listener without TLS; more are closed; 0 = no limit")
      ->capture_default_str();
  app.add_option("--max-connections-per-peer", conn.max_connections_per_peer,
                 "Connections open at once per client address (TCP) or user "
                 "(Unix socket); 0 = no limit")
      ->capture_default_str();
  app.add_option("--max-calls-per-connection", conn.max_calls_per_connection,
                 "Calls (HTTP/2 streams) open at once on one connection; 0 = "
                 "no limit")
      ->capture_default_str();
  app.add_option("--max-connection-idle", idle,
                 "Close a connection that has had no call for this long "
                 "(clients reconnect when they need to); 0 = never")
      ->capture_default_str();
  app.add_option("--max-connection-age", age,
                 "Ask a connection to go away at this age (its calls may "
                 "finish within --max-connection-age-grace); 0 = never")
      ->capture_default_str();
  app.add_option("--max-connection-age-grace", age_grace,
                 "After --max-connection-age, how long open calls (Submit "
                 "and WatchJobs streams too) may go on before the "
                 "connection is closed; 0 = until they end")
      ->capture_default_str();
  app.add_option("--keepalive-time", keepalive,
                 "While calls are open, ping a connection quiet for this "
                 "long; 0 = never")
      ->capture_default_str();
  app.add_option("--keepalive-timeout", keepalive_timeout,
                 "Close a connection whose ping is not answered within this")
      ->capture_default_str();
  app.add_option("--handshake-timeout", handshake,
                 "A new connection must complete its TLS handshake and "
                 "HTTP/2 setup within this")
      ->capture_default_str();
  app.add_option("--max-labels", c.service.spec.max_labels,
                 "Labels of one job at most")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{100000}));
  app.add_option("--max-label-bytes", c.service.spec.max_label_bytes,
                 "Longest label key or value")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--max-idempotency-key-bytes",
                 c.service.spec.max_idempotency_key_bytes,
                 "Longest idempotency key")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--max-value-depth", c.service.spec.max_value_depth,
                 "Deepest nesting of lists and objects in args/kwargs")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--max-args-bytes", c.service.spec.max_args_bytes,
                 "Largest args + kwargs of one job (serialized)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{64}, size_t{1} << 30));
  SpecLimits& spec_limits = c.service.spec;
  std::string in_memory_jobs = "allow";
  app.add_option("--in-memory-jobs", in_memory_jobs,
                 "allow: a spec may ask to stay out of the journal "
                 "(spec.in_memory: faster, lost at a crash); forbid: every "
                 "job is journaled, such specs are refused")
      ->capture_default_str()
      ->check(CLI::IsMember({"allow", "forbid"}));
  app.add_option("--max-dependencies", spec_limits.max_dependencies,
                 "Most jobs one job may depend on (spec.depends_on)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{100000}));
  app.add_option("--retry-max-attempts-limit", spec_limits.max_attempts_limit,
                 "Most runs (the first and its retries) a job may ask for "
                 "(spec.retry.max_attempts)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--max-delay", max_delay,
                 "Longest delay (spec.delay, or spec.not_before from now) "
                 "and retry backoff a job may ask for")
      ->capture_default_str();
  app.add_option("--retry-attempts", retry_attempts,
                 "Default runs of a job whose spec sets no "
                 "retry.max_attempts (1: no retries)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--retry-initial-backoff", retry_initial,
                 "Default backoff ceiling before the first retry")
      ->capture_default_str();
  app.add_option("--retry-max-backoff", retry_max,
                 "Default cap of the backoff ceiling")
      ->capture_default_str();
  app.add_option("--retry-backoff-multiplier", retry_multiplier,
                 "Default growth of the backoff ceiling per attempt")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  app.add_option("--task-retries", task_retries,
                 "TASK=N: TASK's jobs are retried up to N times after their "
                 "first run (over --retry-attempts); repeatable")
      ->capture_default_str();
  CallbackFlags callback_flags;
  ClusterFlags cluster_flags;
  AddClusterFlags(app, c.cluster, cluster_flags);
  AddCallbackFlags(app, c.callbacks, c.service.spec.callback_allowed_prefixes,
                   c.callback_secret_file, callback_flags);
  app.add_option("--max-queued", c.scheduler.max_queued,
                 "Jobs queued (not running) at most; beyond, submits are "
                 "rejected with RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{100000000}));
  app.add_option("--retention-ttl", retention_ttl,
                 "How long ended jobs stay retrievable")
      ->capture_default_str();
  app.add_option("--max-retained", c.scheduler.max_retained,
                 "Ended jobs retained at most (oldest dropped first)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{100000000}));
  app.add_option("--max-live-bytes", c.scheduler.max_live_bytes,
                 "Bytes (e.g. 128M) of the specs of unfinished jobs at most; "
                 "beyond, submits are rejected with RESOURCE_EXHAUSTED; 0 = "
                 "no limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-retained-bytes", c.scheduler.max_retained_bytes,
                 "Bytes (e.g. 128M) of the specs and results of ended jobs "
                 "retained at most (oldest dropped first); 0 = no limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-retained-result-bytes",
                 c.scheduler.max_retained_result_bytes,
                 "Results larger than this (e.g. 1M) are not retained: they "
                 "go out with the job's end to the streams open then, and "
                 "the job keeps only that it was dropped; 0 = keep all")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--output-bytes-per-job", c.scheduler.output_bytes_per_job,
                 "Bytes (e.g. 1M) of a job's output (its programs' stdout "
                 "and stderr, its log lines) kept for jobctl logs: beyond, "
                 "the oldest go first; 0 = none kept")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--max-output-bytes", c.scheduler.max_output_bytes,
                 "Bytes (e.g. 64M) of job output kept for all jobs together: "
                 "beyond, ended jobs' output goes first, oldest first")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--stream-buffer-bytes", c.service.stream_buffer_bytes,
                 "Bytes (e.g. 32M) of events a stream holds for a client "
                 "that does not read them: a Submit stream stops taking jobs "
                 "past it and is ended past twice it, a WatchJobs stream is "
                 "ended past it; 0 = no limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--total-stream-buffer-bytes",
                 c.service.total_stream_buffer_bytes,
                 "Bytes (e.g. 128M) of events all streams together hold for "
                 "their clients: past it, streams holding more than their "
                 "share are treated as over --stream-buffer-bytes; 0 = no "
                 "limit")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--event-log-size", c.scheduler.event_log_size,
                 "Events kept for WatchJobs resume")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{100000000}));
  app.add_option("--max-payload-bytes", c.service.spec.max_payload_bytes,
                 "Largest job payload accepted")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{1} << 30));
  app.add_option("--max-jobs-per-request", c.service.max_jobs_per_request,
                 "Most jobs in one SubmitRequest message")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  app.add_option("--default-window", c.service.default_window,
                 "Submit-stream window (jobs in flight) when a client asks 0")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000000u));
  app.add_option("--max-window", c.service.max_window,
                 "Largest Submit-stream window a client may ask for")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000000u));
  app.add_option("--max-message-bytes", c.service.max_message_bytes,
                 "Largest gRPC message received or sent")
      ->capture_default_str()
      ->check(CLI::Range(size_t{4096}, size_t{1} << 30));
  std::vector<std::string> key_limits, key_rates;
  app.add_option("--key-limit", key_limits,
                 "KEY=N: at most N jobs with concurrency key KEY run at once "
                 "(over all executors); repeatable")
      ->allow_extra_args(false);
  app.add_option("--key-rate", key_rates,
                 "KEY=R: jobs with concurrency key KEY start at most R times "
                 "per second (a burst of a tenth of a second); repeatable")
      ->allow_extra_args(false);
  std::vector<std::string> caller_weights;
  app.add_option("--caller-weight", caller_weights,
                 "NAME=W: within a priority, caller NAME gets W shares of the "
                 "starts against 1 for a caller not named (1 to 1000); "
                 "repeatable")
      ->allow_extra_args(false);
  app.add_option("--default-key-limit",
                 c.scheduler.key_limits.default_max_running,
                 "At most this many jobs of any other concurrency key run at "
                 "once; 0 = no limit")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1000000000u));
  app.add_option("--shutdown-grace", grace,
                 "On SIGTERM/SIGINT: how long running jobs may finish before "
                 "they are cancelled")
      ->capture_default_str();
  app.add_option("--max-schedules", c.max_schedules,
                 "Periodic schedules jobd holds at once (README: Schedules)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  app.add_flag("--testing-tasks", c.testing_tasks,
               "Register tasks that exist to test failure handling (crash)");
  std::vector<std::string> plugin_files;
  app.add_option("--plugin", plugin_files,
                 "A task plugin (a shared object built against jobd's SDK) to "
                 "load at start; repeatable")
      ->allow_extra_args(false);
  app.add_option("--plugin-dir", c.plugin_dir,
                 "Load every *.so file of this directory as a task plugin, "
                 "in name order, after the --plugin ones");
  app.add_option("--python-tasks", c.python_tasks.modules,
                 "A Python module whose @jobd.task functions become tasks, "
                 "run by the process pool's workers; repeatable")
      ->allow_extra_args(false);
  app.add_option("--python-path", c.python_tasks.paths,
                 "A directory put first on the Python task modules' sys.path; "
                 "repeatable")
      ->allow_extra_args(false);
  app.add_option("--log-level", c.log_level,
                 "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--log-format", c.log_format,
                 "text (journald-friendly under systemd) or json (one JSON "
                 "object per line; job lines carry job_id, task, executor, "
                 "caller and trace_id as members)")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    parsed.exit_now = true;
    parsed.exit_code = app.exit(e);
    return parsed;
  } catch (const CLI::CallForVersion& e) {
    parsed.exit_now = true;
    parsed.exit_code = app.exit(e);
    return parsed;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  c.command_tasks = std::move(*command_tasks);
  c.schedules = std::move(*config_schedules);
  if (c.log_format != "text" && c.log_format != "json") {
    return absl::InvalidArgumentError(
        fmt::format("--log-format: '{}' is not text or json", c.log_format));
  }
  if (c.unix_socket == "none") c.unix_socket.clear();
  if (!c.http_listen.empty()) {
    if (c.http_listen.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(fmt::format(
          "--http-listen: '{}' is not host:port (e.g. 127.0.0.1:9464)",
          c.http_listen));
    }
  }
  if (c.tcp_address == "none") c.tcp_address.clear();
  if (c.unix_socket.empty() && c.tcp_address.empty()) {
    return absl::InvalidArgumentError(
        "--unix-socket and --tcp are both 'none': nothing to listen on");
  }
  if (!c.unix_socket.empty() && c.unix_socket[0] != '/') {
    return absl::InvalidArgumentError(fmt::format(
        "--unix-socket: '{}' is not an absolute path", c.unix_socket));
  }
  if (!c.tcp_address.empty() && c.tcp_address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "--tcp: '{}' is not host:port (e.g. 127.0.0.1:7531)", c.tcp_address));
  }
  c.scheduler.max_message_bytes = c.service.max_message_bytes;
  if (c.scheduler.max_live_bytes > 0 &&
      c.scheduler.max_live_bytes < c.service.spec.max_payload_bytes) {
    return absl::InvalidArgumentError(
        "--max-live-bytes: smaller than --max-payload-bytes (a job with the "
        "largest payload could never be accepted)");
  }
  if (c.scheduler.output_bytes_per_job > c.scheduler.max_output_bytes) {
    return absl::InvalidArgumentError(
        "--output-bytes-per-job: larger than --max-output-bytes");
  }
  if (c.service.default_window > c.service.max_window) {
    return absl::InvalidArgumentError(
        "--default-window: larger than --max-window");
  }
  absl::Status s = ParseDurationFlag(retention_ttl, "retention-ttl",
                                     &c.scheduler.retention_ttl, true);
  if (!s.ok()) return s;
  s = ParseDurationFlag(grace, "shutdown-grace", &c.shutdown_grace, true);
  if (!s.ok()) return s;
  s = ParseDurationFlag(cancel_grace, "cancel-grace", &pool.cancel_grace, true);
  if (!s.ok()) return s;
  s = ParseDurationFlag(kill_grace, "kill-grace", &pool.kill_grace, true);
  if (!s.ok()) return s;
  s = ParseDurationFlag(exec_kill_grace, "exec-kill-grace", &c.exec.kill_grace,
                        true);
  if (!s.ok()) return s;
  for (auto [value, flag, out, zero] :
       {std::tuple(&idle, "max-connection-idle", &conn.idle_timeout, true),
        std::tuple(&age, "max-connection-age", &conn.max_age, true),
        std::tuple(&age_grace, "max-connection-age-grace", &conn.max_age_grace,
                   true),
        std::tuple(&keepalive, "keepalive-time", &conn.keepalive_time, true),
        std::tuple(&keepalive_timeout, "keepalive-timeout",
                   &conn.keepalive_timeout, false),
        std::tuple(&handshake, "handshake-timeout", &conn.handshake_timeout,
                   false),
        std::tuple(&ping_interval, "worker-ping-interval", &pool.ping_interval,
                   true),
        std::tuple(&ping_timeout, "worker-ping-timeout", &pool.ping_timeout,
                   false),
        std::tuple(&outage_grace, "journal-outage-grace",
                   &c.journal_outage_grace, true),
        std::tuple(&linger, "journal-linger", &c.journal_linger, true)}) {
    s = ParseDurationFlag(*value, flag, out, zero);
    if (!s.ok()) return s;
  }
  if (c.journal_linger > absl::Milliseconds(100)) {
    return absl::InvalidArgumentError(
        fmt::format("--journal-linger: '{}' is longer than 100ms", linger));
  }
  if (absl::Status r =
          ApplyRetryOptions(max_delay, retry_attempts, retry_initial, retry_max,
                            retry_multiplier, task_retries, spec_limits);
      !r.ok()) {
    return r;
  }
  // A [[task]]'s own retries, under --task-retries (which wins).
  for (const CommandSpec& task : c.command_tasks) {
    if (!task.retries.has_value()) continue;
    if (*task.retries >= spec_limits.max_attempts_limit) {
      return absl::InvalidArgumentError(fmt::format(
          "[[task]] '{}': retries = {} makes more runs than "
          "--retry-max-attempts-limit ({})",
          task.name, *task.retries, spec_limits.max_attempts_limit));
    }
    spec_limits.task_retries.try_emplace(task.name, *task.retries + 1);
  }
  for (const std::string& program : c.exec.allow) {
    if (program.empty() || program[0] != '/' ||
        access(program.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "--exec-allow: '{}' is not an absolute path to an executable file",
          program));
    }
  }
  for (const std::string& name : c.exec.env_allow) {
    const std::string problem = ExecEnvNameProblem(name);
    if (!problem.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "--exec-env-allow: '{}' {}", ClipUtf8(name, 128), problem));
    }
  }
  if (absl::Status s = FinishClusterConfig(cluster_flags, c.cluster); !s.ok()) {
    return s;
  }
  spec_limits.remote_dependencies = c.cluster.enabled();
  if (absl::Status cb = FinishCallbackConfig(
          callback_flags, c.service.spec.callback_allowed_prefixes,
          c.callback_secret_file, c.callbacks);
      !cb.ok()) {
    return cb;
  }
  if (absl::Status s =
          ParseKeyLimits(key_limits, key_rates, c.scheduler.key_limits);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ParseCallerWeights(caller_weights, c.scheduler.caller_weights);
      !s.ok()) {
    return s;
  }
  if (absl::StatusOr<AddressPolicy> http = AddressPolicy::Parse(c.http_allow);
      !http.ok()) {
    return http.status();
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both or neither");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca: needs --tls-cert and --tls-key (mTLS is TLS)");
  }
  for (const std::string& file : {c.tls_cert, c.tls_key, c.tls_client_ca}) {
    if (!file.empty() && access(file.c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(
          fmt::format("TLS file {}: {}", file, std::strerror(errno)));
    }
  }
  if (!c.worker_user.empty()) {
    const struct passwd* pw = getpwnam(c.worker_user.c_str());
    if (pw == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("--worker-user: no user '{}'", c.worker_user));
    }
    if (geteuid() != 0) {
      return absl::InvalidArgumentError(
          "--worker-user: jobd must run as root to switch its workers' user");
    }
    if (pw->pw_uid == 0) {
      return absl::InvalidArgumentError(
          "--worker-user: that is root; name an unprivileged user");
    }
    pool.run_as = std::make_pair(pw->pw_uid, pw->pw_gid);
  }
  absl::StatusOr<std::unique_ptr<Authenticator>> authenticator =
      Authenticator::Create(c.auth);
  if (!authenticator.ok()) return authenticator.status();
  // Beyond loopback, --tcp's rule (Daemon::CheckConfig checks --tcp): the
  // metrics listener serves HTTPS with --tls-cert and checks the same
  // callers.
  if (!c.http_listen.empty()) {
    if (absl::Status s = CheckHttpExposure(c.http_listen, !c.tls_cert.empty(),
                                           (*authenticator)->required());
        !s.ok()) {
      return s;
    }
  }
  spec_limits.allow_in_memory = in_memory_jobs == "allow";
  c.durability = durability == "none"      ? Durability::kNone
                 : durability == "batched" ? Durability::kBatched
                                           : Durability::kEveryCommit;
  if (c.durability != Durability::kNone &&
      (c.state_dir.empty() || c.state_dir[0] != '/')) {
    return absl::InvalidArgumentError(
        fmt::format("--state-dir: '{}' is not an absolute path", c.state_dir));
  }
  if (c.testing_tasks) pool.fork_server_args.push_back("--testing-tasks");
  for (const std::string& file : plugin_files) {
    if (file.empty()) {
      return absl::InvalidArgumentError("--plugin: an empty path");
    }
    std::error_code ec;
    c.plugins.push_back(std::filesystem::absolute(file, ec).string());
  }
  if (!c.plugin_dir.empty()) {
    absl::StatusOr<std::vector<std::string>> in_dir =
        ListPluginDirectory(c.plugin_dir);
    if (!in_dir.ok()) {
      return absl::InvalidArgumentError(fmt::format(
          "--plugin-dir: {}", std::string(in_dir.status().message())));
    }
    c.plugins.insert(c.plugins.end(), in_dir->begin(), in_dir->end());
  }
  // A file named twice (by --plugin and in --plugin-dir, or through a
  // link) is loaded once, where it first appears.
  {
    std::vector<std::string> seen, unique;
    for (const std::string& plugin : c.plugins) {
      std::error_code ec;
      std::string real = std::filesystem::weakly_canonical(plugin, ec).string();
      if (ec) real = plugin;
      if (std::find(seen.begin(), seen.end(), real) != seen.end()) continue;
      seen.push_back(std::move(real));
      unique.push_back(plugin);
    }
    c.plugins = std::move(unique);
  }
  // The fork server loads the same set (RunForkServerIfInvoked).
  for (const std::string& plugin : c.plugins) {
    pool.fork_server_args.push_back("--plugin");
    pool.fork_server_args.push_back(plugin);
  }
  if (absl::Status s = CheckPythonTasks(c.python_tasks, pool); !s.ok()) {
    return s;
  }
  for (std::string& arg : c.python_tasks.ToArgs()) {
    pool.fork_server_args.push_back(std::move(arg));
  }
  return parsed;
}

}  // namespace jobd
