// SchedulerOptions: the scheduler's limits and timings, apart from the
// scheduler itself so that the configuration can name them without
// depending on it.
//
// Thread-safety: a plain value. Ownership: copied by whoever uses it.
#ifndef JOBD_SERVER_SCHEDULER_SCHEDULER_OPTIONS_H_
#define JOBD_SERVER_SCHEDULER_SCHEDULER_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "server/scheduler/key_limits.h"

namespace jobd {

struct SchedulerOptions {
  // Count jobs accepted and started per task and executor, ended per task,
  // executor, state and reason, run times per task and queue waits per
  // executor (TaskEnds(), for the metrics endpoint); off: admission, start
  // and Finish skip it.
  bool task_metrics = false;
  // Jobs waiting for a slot over all executors; beyond: rejected. (A job
  // that starts at once in a free slot never counts.)
  size_t max_queued = 100000;
  // Ended jobs are kept for GetJob/ListJobs this long, and at most this many.
  absl::Duration retention_ttl = absl::Hours(1);
  size_t max_retained = 100000;
  // Byte budgets (serialized sizes; 0: none). Live jobs' specs: beyond,
  // rejected. Retained jobs' specs and results or errors: beyond, the
  // oldest are forgotten first. With a journal that nears its cap (7/8 of
  // it in use, or writes failing for want of room), the oldest retained
  // jobs are forgotten too, so that new jobs need not wait for the TTL.
  uint64_t max_live_bytes = uint64_t{128} << 20;
  uint64_t max_retained_bytes = uint64_t{128} << 20;
  // A result larger than this is not retained (0: all are): the job's
  // terminal event and the callers waiting for it then get it; the job, its
  // journal row and whoever asks later only that it was dropped
  // (JobResult.dropped).
  uint64_t max_retained_result_bytes = 0;
  // Events kept for WatchJobs resume.
  size_t event_log_size = 262144;
  // With a journal, a job starts only once its claim (a journal record that
  // it may have begun) is durable, so a crash can never make an at-most-once
  // job run twice. Jobs shorter than a commit are claimed ahead of free
  // slots so that the slots need not wait for commits: as many as the
  // commits take to run (Little's law, twice over), at most this many per
  // executor; none for jobs longer than a commit. A crash fails the claimed
  // ones LOST_ON_RESTART (they may have begun).
  size_t start_window = 4096;
  // How often expired jobs are swept.
  absl::Duration sweep_interval = absl::Seconds(1);
  // The gRPC message limit (--max-message-bytes; fixed at start). Every Job
  // and JobEvent must fit one message: a job whose result with its spec
  // would not (workers/executor.h: kMessageEnvelopeBytes) fails
  // RESULT_TOO_LARGE instead,
  // at its end or when restored. 0: no limit.
  size_t max_message_bytes = 16 << 20;
  // Job output (job_output.h): bytes kept per job (its tail) and for all
  // jobs together.
  size_t output_bytes_per_job = 1 << 20;
  uint64_t max_output_bytes = uint64_t{64} << 20;
  // Limits by concurrency key (key_limits.h): --key-limit, --key-rate,
  // --default-key-limit. Fixed at start; SetKeyLimit changes them live.
  KeyLimitOptions key_limits;
  // Fair share between callers (fair_queue.h): within a priority, each
  // caller's weight (--caller-weight NAME=W, 1 to 1000); 1 for a caller
  // not named. Live on reload.
  std::map<std::string, uint32_t> caller_weights;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_SCHEDULER_OPTIONS_H_
