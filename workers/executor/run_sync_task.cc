#include "workers/executor/run_sync_task.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <new>

#include "absl/strings/str_cat.h"

namespace jobd {

namespace {

absl::Duration ThreadCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

// How long the calling thread has waited, runnable, for a CPU (the second
// field of /proc/thread-self/schedstat); zero if the kernel does not say.
// One pread of a file each thread keeps open.
absl::Duration ThreadCpuWaitTime() {
  struct Schedstat {
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    ~Schedstat() {
      if (fd >= 0) close(fd);
    }
  };
  thread_local Schedstat stat;
  char buf[96];
  const ssize_t n = stat.fd < 0 ? -1 : pread(stat.fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return absl::ZeroDuration();
  buf[n] = '\0';
  unsigned long long run_ns = 0, wait_ns = 0;
  if (std::sscanf(buf, "%llu %llu", &run_ns, &wait_ns) != 2) {
    return absl::ZeroDuration();
  }
  return absl::Nanoseconds(static_cast<int64_t>(wait_ns));
}

}  // namespace

JobOutcome RunSyncTask(const JobRun& run, const ProgressFn& progress,
                       JobClock* clock, OutputFn output) {
  JobOutcome outcome;
  const bool auto_kind =
      run.spec != nullptr && run.spec->kind() == v1::JOB_KIND_AUTO;
  // The CPU a run used only teaches AUTO's router (Router::Record), and
  // reading a thread's CPU clock is a system call: other runs skip it.
  const bool measure_cpu = auto_kind;
  const absl::Duration kNotMeasured = -absl::Nanoseconds(1);
  const bool chained = clock != nullptr && clock->fresh;
  absl::Duration cpu0;
  if (measure_cpu) {
    // The last job's end, if it read the clock.
    cpu0 = chained && clock->cpu >= absl::ZeroDuration() ? clock->cpu
                                                         : ThreadCpuTime();
  }
  const absl::Time wall0 = chained ? clock->wall : absl::Now();
  const bool measure_wait = auto_kind && run.measure_cpu_wait;
  const absl::Duration wait0 =
      measure_wait ? ThreadCpuWaitTime() : absl::ZeroDuration();
  TaskContext ctx(*run.args, *run.cancel, run.deadline, progress,
                  std::move(output));
  absl::StatusOr<TaskOutput> result;
  bool out_of_memory = false;
  try {
    result = run.task->run(ctx);
  } catch (const std::bad_alloc& e) {
    out_of_memory = true;
    result = absl::ResourceExhaustedError(absl::StrCat(
        "out of memory: the task's allocation failed (", e.what(), ")"));
  } catch (const std::exception& e) {
    result = absl::InternalError(
        absl::StrCat("task threw an exception: ", e.what()));
  } catch (...) {
    result = absl::InternalError("task threw a non-standard exception");
  }
  const absl::Duration cpu1 = measure_cpu ? ThreadCpuTime() : kNotMeasured;
  const absl::Time wall1 = absl::Now();
  outcome.cpu_time = measure_cpu ? cpu1 - cpu0 : kNotMeasured;
  outcome.wall_time = wall1 - wall0;
  if (measure_wait) {
    outcome.cpu_wait_time = ThreadCpuWaitTime() - wait0;
  } else if (auto_kind) {
    outcome.cpu_wait_time = kNotMeasured;
  }
  if (clock != nullptr) *clock = {.fresh = true, .cpu = cpu1, .wall = wall1};
  if (result.ok()) {
    outcome.output = *std::move(result);
    return outcome;
  }
  SetOutcomeError(outcome, result.status(), *run.cancel, out_of_memory);
  return outcome;
}

JobOutcome RunSyncTask(const JobRun& run, ExecutorListener& listener,
                       JobClock* clock) {
  const uint64_t id = run.job_id;
  return RunSyncTask(
      run,
      [&listener, id](double fraction, std::string_view message) {
        listener.OnJobProgress(id, fraction, message);
      },
      clock,
      [&listener, id](v1::OutputStream stream, std::string_view bytes) {
        listener.OnJobOutput(id, stream, bytes);
      });
}

std::vector<FinishedJob> RunTrivialTasks(std::span<const JobRun> runs,
                                         ExecutorListener& listener) {
  std::vector<FinishedJob> finished;
  finished.reserve(runs.size());
  JobClock clock;
  for (const JobRun& run : runs) {
    JobOutcome outcome = RunSyncTask(run, listener, &clock);
    outcome.frees_slot = false;
    finished.push_back({.job_id = run.job_id, .outcome = std::move(outcome)});
  }
  return finished;
}

}  // namespace jobd
