// Live configuration reload (SIGHUP): compares the configuration jobd runs
// with the one just read again (flags and --config file) and applies what
// can change while jobs run:
//   --log-level, --thread-workers, --reactor-max-jobs, --max-queued,
//   --retention-ttl, --max-retained, --max-payload-bytes,
//   --max-jobs-per-request, --default-window, --max-window, --exec-allow,
//   --exec-env-allow, --exec-kill-grace, --http-allow, --shutdown-grace,
//   --auth-token,
//   --tls-identity,
//   --unix-socket-auth, --quota-max-live, --quota-submit-rate,
//   --max-streams-per-caller, --max-streams, --max-labels, --max-label-bytes,
//   --max-idempotency-key-bytes, --max-value-depth, --max-args-bytes,
//   --max-live-bytes, --max-retained-bytes, --max-retained-result-bytes,
//   --output-bytes-per-job, --max-output-bytes,
//   --quota-max-bytes,
//   --stream-buffer-bytes, --total-stream-buffer-bytes (the last two for
//   streams opened after the reload)
// (TLS certificate files are re-read when they change, without a reload.)
// The config file's command tasks ([[task]]) are replaced by Daemon::Reload
// itself (the registry is the daemon's), all or none.
// New callers that would leave a TCP listener beyond loopback without
// authentication are refused (ReloadResult::refused), the old ones kept.
// Anything else that differs (listeners, the process pool and its limits,
// reactor threads, the state directory, durability, ...) is reported as
// needing a restart and left as it was.
//
// Thread-safety: call from one thread (main's signal loop); the targets are
// thread-safe.
#ifndef JOBD_SERVER_DAEMON_RELOAD_H_
#define JOBD_SERVER_DAEMON_RELOAD_H_

#include <string>
#include <vector>

#include "server/config/config.h"
#include "server/frontend/service.h"
#include "server/scheduler/scheduler.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {

struct ReloadResult {
  std::vector<std::string> applied;        // "--max-queued: 100000 -> 50".
  std::vector<std::string> needs_restart;  // "--process-workers: 2 -> 4".
  std::vector<std::string> refused;        // Not applied, and why.
};

// Applies `fresh` over `current` (which is updated to what now runs).
ReloadResult ApplyConfig(DaemonConfig& current, const DaemonConfig& fresh,
                         Scheduler& scheduler, JobServiceImpl& service,
                         ExecPolicy& exec, HttpPolicy& http,
                         Authenticator& auth);

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_RELOAD_H_
