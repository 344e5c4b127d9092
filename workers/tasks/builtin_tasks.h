// The built-in tasks every jobd ships:
//   echo          returns its input (variadic)
//   sleep         sleeps `ms` milliseconds, honouring cancel; IO-bound; sync
//                 (threads) and async (reactor) implementations
//   primes.count  counts primes below `n` by trial division; CPU-bound
//   fail          fails with the given message
//   http.get      fetches a URL (reactor; workers/io_tasks.h)
//   exec          runs an allowlisted program (reactor; workers/io_tasks.h)
// and, only with testing tasks on (they exist to test failure handling):
//   crash         kills its worker process in a chosen way (process pool only)
//   burn          keeps a CPU busy for `ms`, though tagged IO-bound
//   log           writes `lines` log lines to the job's output (every
//                 executor: sync and timer forms)
//
// Thread-safety: the tasks are stateless; the registry rules apply.
#ifndef JOBD_WORKERS_TASKS_BUILTIN_TASKS_H_
#define JOBD_WORKERS_TASKS_BUILTIN_TASKS_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "workers/sdk/task_registry.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {

struct BuiltinTaskOptions {
  // Also register tasks that exist only to test failure handling (crash,
  // burn).
  bool testing_tasks = false;
  // exec's allowlist and kill grace (null or an empty allowlist: exec is
  // disabled).
  std::shared_ptr<const ExecPolicy> exec;
  // Where exec's programs run (null: no guardian, jobd's user).
  std::shared_ptr<const ExecSandbox> exec_sandbox;
  // Where http.get may connect (null: public addresses only).
  std::shared_ptr<const HttpPolicy> http;
  // The daemon's message limit (--max-message-bytes): http.get and exec
  // refuse limits whose result could not fit.
  size_t max_message_bytes = 16 << 20;
};

absl::Status RegisterBuiltinTasks(TaskRegistry& registry,
                                  const BuiltinTaskOptions& options);

// Number of primes p with lo <= p < hi, by trial division (the CPU-bound
// workload of the origin documents). Exposed for tests and benchmarks.
int64_t CountPrimesInRange(int64_t lo, int64_t hi);

}  // namespace jobd

#endif  // JOBD_WORKERS_TASKS_BUILTIN_TASKS_H_
