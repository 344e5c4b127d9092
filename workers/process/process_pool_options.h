// ProcessPoolOptions: the process pool's size, limits and timings
// (workers/process/process_pool.h), apart so that the configuration can
// name them without the pool's private protocol.
#ifndef JOBD_WORKERS_PROCESS_PROCESS_POOL_OPTIONS_H_
#define JOBD_WORKERS_PROCESS_PROCESS_POOL_OPTIONS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace jobd {

// Frames are queued at busy workers only while the pool's recent jobs
// average less than this: above it the round trip the queue hides is small,
// and a job queued behind a long one could wait while another worker idles.
inline constexpr absl::Duration kPipelineJobTime = absl::Milliseconds(2);

struct ProcessPoolOptions {
  int workers = 2;
  uint64_t max_jobs_per_worker = 0;  // 0: never recycle for job count.
  uint64_t max_worker_rss = 0;       // Bytes; 0: unlimited.
  uint64_t max_address_space = 0;    // RLIMIT_AS bytes; 0: unlimited.
  uint64_t max_cpu_seconds = 0;      // RLIMIT_CPU per worker; 0: unlimited.
  uint64_t max_open_files = 0;       // RLIMIT_NOFILE; 0: inherited.
  // Run workers as this user and group (jobd must be root); unset: as jobd.
  std::optional<std::pair<uid_t, gid_t>> run_as;
  absl::Duration cancel_grace = absl::Milliseconds(500);  // -> SIGTERM.
  absl::Duration kill_grace = absl::Milliseconds(100);    // -> SIGKILL.
  // Idle workers kept forked and ready beside the slots: a slot whose worker
  // dies or retires takes one at once instead of waiting for a fork.
  int spare_workers = 1;
  int quarantine_after = 3;  // Worker kills in a row; 0: never quarantine.
  int max_chunk = 1024;      // Largest chunk the scheduler may form.
  // Chunks a worker may hold at once while the pool's jobs are short (the
  // one it runs and those queued behind it), so that it never waits for the
  // daemon between tiny jobs; 1: one at a time. Longer jobs go to a worker
  // only when it is free (kPipelineJobTime).
  int pipeline_depth = 4;
  absl::Duration rss_check_interval = absl::Milliseconds(100);
  // Liveness check of every worker and spare: a ping this often (zero: no
  // pings), and how long one may stay unanswered before the worker is
  // killed and replaced.
  absl::Duration ping_interval = absl::Seconds(1);
  absl::Duration ping_timeout = absl::Seconds(5);
  // How to start a replacement fork server: this binary and the arguments
  // after the fork-server flag (e.g. --testing-tasks).
  std::string self_exe = "/proc/self/exe";
  std::vector<std::string> fork_server_args;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_PROCESS_POOL_OPTIONS_H_
