// Router: decides which executor runs a job (DESIGN.md "Routing").
//
//   async-only task                -> reactor (error if disabled)
//   explicit executor in the spec -> that one (error if disabled/unsupported)
//   CPU_BOUND                     -> process pool (if the task is sync)
//   IO_BOUND                      -> reactor if the task is async, else threads
//   AUTO                          -> CPU or IO by the task's measured CPU/wall
//                                    ratio; its default kind until measured;
//                                    tiny tasks (mean wall < 1 ms) stay on
//                                    threads, where IPC costs more than work
// A task that holds a pool slot (a command task: TaskDef::holds_pool_slot)
// goes to the process pool's lane when CPU-bound (its default kind for
// AUTO; an error without a process pool) and to the reactor when IO-bound.
// Tasks that need isolation run only in the process pool (an error if it is
// not enabled). Otherwise a preferred executor that is not enabled falls back
// to the thread pool;
// the decision reported on the job is always the executor it really runs on.
//
// Thread-safety: none; the scheduler calls it under its lock
// (Scheduler::mu_).
// Ownership: a value member of the Scheduler; refers to tasks by name.
#ifndef JOBD_SERVER_SCHEDULER_ROUTER_H_
#define JOBD_SERVER_SCHEDULER_ROUTER_H_

#include <array>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "workers/sdk/task.h"

namespace jobd {

class Router {
 public:
  // Samples needed before AUTO trusts a task's measured ratio.
  static constexpr int kMinSamples = 3;
  // CPU/wall ratio at or above which a task counts as CPU-bound.
  static constexpr double kCpuBoundRatio = 0.5;
  // Mean run time below which a task is too small to ship to a process.
  static constexpr double kTinyJobSeconds = 0.001;

  void SetEnabled(v1::Executor executor, bool enabled);
  bool enabled(v1::Executor executor) const;

  // The executor for a job of `task` with the spec's kind and executor.
  // FailedPrecondition if an explicit executor is not enabled;
  // InvalidArgument if the task cannot run on it.
  absl::StatusOr<v1::Executor> Route(const TaskDef& task, v1::JobKind kind,
                                     v1::Executor requested) const;

  // Whether the next AUTO run of `task` should measure its run-queue wait
  // (JobRun::measure_cpu_wait): reading it costs two system calls, a lot
  // beside a tiny job, so AUTO learns from the first runs of a task and
  // then from one in kCpuWaitSampling.
  bool SampleCpuWait(const TaskDef& task);
  static constexpr int kCpuWaitSampling = 8;

  // Records one finished run of `task` (feeds AUTO): `cpu` used in `wall`,
  // of which `cpu_wait` spent waiting for a CPU taken by others (not held
  // against the task: a CPU hog on a busy machine is still a CPU hog). A
  // negative `cpu_wait` (an AUTO run that did not measure it) teaches
  // nothing.
  void Record(const TaskDef& task, absl::Duration cpu, absl::Duration wall,
              absl::Duration cpu_wait = absl::ZeroDuration());
  // The task's smoothed CPU/wall ratio, or a negative number if unmeasured.
  double CpuRatio(const TaskDef& task) const;

 private:
  struct Measure {
    double ratio = 0;  // Exponentially weighted moving averages.
    double wall_s = 0;
    int samples = 0;
    uint64_t wait_offers = 0;  // SampleCpuWait calls.
  };
  v1::Executor Preferred(const TaskDef& task, v1::JobKind kind) const;

  std::array<bool, 4> enabled_ = {false, false, true, false};  // THREAD on.
  absl::flat_hash_map<const TaskDef*, Measure> measures_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_ROUTER_H_
