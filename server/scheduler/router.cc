#include "server/scheduler/router.h"

#include <algorithm>

#include "spdlog/fmt/fmt.h"

namespace jobd {

void Router::SetEnabled(v1::Executor executor, bool enabled) {
  enabled_.at(executor) = enabled;
}

bool Router::enabled(v1::Executor executor) const {
  return executor > 0 && executor < static_cast<int>(enabled_.size()) &&
         enabled_[executor];
}

v1::Executor Router::Preferred(const TaskDef& task, v1::JobKind kind) const {
  if (kind == v1::JOB_KIND_AUTO) {
    const double ratio = CpuRatio(task);
    auto it = measures_.find(&task);
    if (ratio < 0) {
      kind = task.default_kind;
    } else if (it->second.wall_s < kTinyJobSeconds) {
      kind = v1::JOB_KIND_IO_BOUND;
    } else {
      kind = ratio >= kCpuBoundRatio ? v1::JOB_KIND_CPU_BOUND
                                     : v1::JOB_KIND_IO_BOUND;
    }
  }
  if (kind == v1::JOB_KIND_CPU_BOUND && task.has_sync()) {
    return v1::EXECUTOR_PROCESS;
  }
  // IO-bound: the reactor for async tasks, threads for sync ones.
  return task.has_async() ? v1::EXECUTOR_REACTOR : v1::EXECUTOR_THREAD;
}

absl::StatusOr<v1::Executor> Router::Route(const TaskDef& task,
                                           v1::JobKind kind,
                                           v1::Executor requested) const {
  if (task.needs_isolation) {
    if (!enabled(v1::EXECUTOR_PROCESS)) {
      return absl::FailedPreconditionError(fmt::format(
          "spec.task: task '{}' runs only in the process pool, which is not "
          "enabled in this daemon",
          task.name));
    }
    if (requested != v1::EXECUTOR_UNSPECIFIED &&
        requested != v1::EXECUTOR_PROCESS) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.executor: task '{}' runs only on EXECUTOR_PROCESS", task.name));
    }
    return v1::EXECUTOR_PROCESS;
  }
  if (task.holds_pool_slot) {
    // A program of its own, waited for on the reactor: a CPU-bound one is
    // queued on the process pool's lane and holds one of its slots while
    // it runs (Lane::set_guest); an IO-bound one is the reactor's alone.
    if (!enabled(v1::EXECUTOR_REACTOR)) {
      return absl::FailedPreconditionError(fmt::format(
          "spec.task: task '{}' runs its program from the reactor, which is "
          "not enabled in this daemon (--reactor-threads 0)",
          task.name));
    }
    if (requested == v1::EXECUTOR_THREAD) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.executor: task '{}' runs a program: EXECUTOR_PROCESS (a "
          "process-pool slot) or EXECUTOR_REACTOR",
          task.name));
    }
    v1::JobKind k = kind == v1::JOB_KIND_AUTO ? task.default_kind : kind;
    if (requested == v1::EXECUTOR_PROCESS) k = v1::JOB_KIND_CPU_BOUND;
    if (requested == v1::EXECUTOR_REACTOR) k = v1::JOB_KIND_IO_BOUND;
    if (k != v1::JOB_KIND_CPU_BOUND) return v1::EXECUTOR_REACTOR;
    if (!enabled(v1::EXECUTOR_PROCESS)) {
      return absl::FailedPreconditionError(fmt::format(
          "spec.kind: task '{}' is CPU-bound: its program holds a process-pool "
          "slot while it runs, and this daemon has no process pool "
          "(--process-workers 0); submit it as JOB_KIND_IO_BOUND to run it "
          "without that bound",
          task.name));
    }
    return v1::EXECUTOR_PROCESS;
  }
  if (!task.has_sync()) {  // Async only: the reactor or nothing.
    if (requested != v1::EXECUTOR_UNSPECIFIED &&
        requested != v1::EXECUTOR_REACTOR) {
      return absl::InvalidArgumentError(
          fmt::format("spec.executor: task '{}' is async only and runs only on "
                      "EXECUTOR_REACTOR",
                      task.name));
    }
    if (!enabled(v1::EXECUTOR_REACTOR)) {
      return absl::FailedPreconditionError(fmt::format(
          "spec.task: task '{}' runs only on the reactor, which is not "
          "enabled in this daemon (--reactor-threads 0)",
          task.name));
    }
    return v1::EXECUTOR_REACTOR;
  }
  if (requested != v1::EXECUTOR_UNSPECIFIED) {
    if (requested == v1::EXECUTOR_REACTOR && !task.has_async()) {
      return absl::InvalidArgumentError(fmt::format(
          "spec.executor: task '{}' has no async implementation and cannot "
          "run on EXECUTOR_REACTOR",
          task.name));
    }
    if (!enabled(requested)) {
      return absl::FailedPreconditionError(
          fmt::format("spec.executor: {} is not enabled in this daemon",
                      v1::Executor_Name(requested)));
    }
    return requested;
  }
  const v1::Executor preferred = Preferred(task, kind);
  return enabled(preferred) ? preferred : v1::EXECUTOR_THREAD;
}

void Router::Record(const TaskDef& task, absl::Duration cpu,
                    absl::Duration wall, absl::Duration cpu_wait) {
  const double wall_s = absl::ToDoubleSeconds(wall);
  // Unmeasured CPU (the reactor's jobs share their thread), or an AUTO run
  // that skipped measuring its wait: nothing to learn.
  if (wall_s <= 0 || cpu < absl::ZeroDuration() ||
      cpu_wait < absl::ZeroDuration()) {
    return;
  }
  const double wanted_s = absl::ToDoubleSeconds(
      std::clamp(wall - cpu_wait, absl::ZeroDuration(), wall));
  if (wanted_s <= 0) return;  // It only waited.
  const double ratio =
      std::clamp(absl::ToDoubleSeconds(cpu) / wanted_s, 0.0, 1.0);
  Measure& m = measures_[&task];
  constexpr double kAlpha = 0.2;
  if (m.samples == 0) {
    m.ratio = ratio;
    m.wall_s = wall_s;
  } else {
    m.ratio += kAlpha * (ratio - m.ratio);
    m.wall_s += kAlpha * (wall_s - m.wall_s);
  }
  ++m.samples;
}

bool Router::SampleCpuWait(const TaskDef& task) {
  const uint64_t offer = measures_[&task].wait_offers++;
  return offer < 4 * kMinSamples || offer % kCpuWaitSampling == 0;
}

double Router::CpuRatio(const TaskDef& task) const {
  auto it = measures_.find(&task);
  if (it == measures_.end() || it->second.samples < kMinSamples) return -1;
  return it->second.ratio;
}

}  // namespace jobd
