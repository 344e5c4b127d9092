#include "server/config.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "jobd/v1/default_address.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {
namespace {

// Parses a duration flag such as "10s", "500ms", "1h30m".
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
                 "Read settings from a TOML/INI file "
                 "(keys named like the long flags)");
  app.allow_config_extras(false);  // A misspelt key is an error, not ignored.

  c.unix_socket = v1::DefaultSocketPath();
  c.tcp_address = v1::kDefaultTcpAddress;
  std::string retention_ttl = "1h", grace = "10s", cancel_grace = "500ms",
              kill_grace = "100ms", exec_kill_grace = "1s";
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
  app.add_option("--shutdown-grace", grace,
                 "On SIGTERM/SIGINT: how long running jobs may finish before "
                 "they are cancelled")
      ->capture_default_str();
  app.add_flag("--testing-tasks", c.testing_tasks,
               "Register tasks that exist to test failure handling (crash)");
  app.add_option("--log-level", c.log_level,
                 "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "error", "critical", "off"}));

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
  if (c.unix_socket == "none") c.unix_socket.clear();
  if (c.tcp_address == "none") c.tcp_address.clear();
  if (c.unix_socket.empty() && c.tcp_address.empty()) {
    return absl::InvalidArgumentError(
        "--unix-socket and --tcp are both 'none': nothing to listen on");
  }
  if (!c.tcp_address.empty() && c.tcp_address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "--tcp: '{}' is not host:port (e.g. 127.0.0.1:7531)", c.tcp_address));
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
  for (const std::string& program : c.exec.allow) {
    if (program.empty() || program[0] != '/' ||
        access(program.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "--exec-allow: '{}' is not an absolute path to an executable file",
          program));
    }
  }
  c.durability = durability == "none"      ? Durability::kNone
                 : durability == "batched" ? Durability::kBatched
                                           : Durability::kEveryCommit;
  if (c.durability != Durability::kNone &&
      (c.state_dir.empty() || c.state_dir[0] != '/')) {
    return absl::InvalidArgumentError(
        fmt::format("--state-dir: '{}' is not an absolute path", c.state_dir));
  }
  if (c.testing_tasks) pool.fork_server_args.push_back("--testing-tasks");
  return parsed;
}

}  // namespace jobd
