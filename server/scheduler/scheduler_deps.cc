// The Scheduler's job dependencies (JobSpec.depends_on): resolving them at
// admission and at restore, releasing dependants as their dependencies
// end, and failing or cancelling them down the graph (scheduler.h,
// dependencies.h).
//
// A dependant is WAITING, held in the Dependencies part (not the Waiting
// set). Its journal row says WAITING with its due time (create time plus
// any delay); what it waits for is not stored: at restore it is computed
// again from its spec's depends_on and the jobs restored
// (ResolveDependencies), so that a dependency that ended before or during
// the restart (e.g. LOST_ON_RESTART) releases or fails it then.
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "server/jobs/dependency_results.h"
#include "server/jobs/job_id.h"
#include "server/scheduler/retry_policy.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"
#include "workers/executor/executor.h"
#include "workers/sdk/task_registry.h"
#include "workers/sdk/utf8.h"

namespace jobd {

std::shared_ptr<JobEnd> Scheduler::DependencyEnd(const v1::JobSpec& spec,
                                                 uint64_t dependency,
                                                 v1::JobState state,
                                                 v1::ErrorReason reason) {
  if (state == v1::JOB_STATE_SUCCEEDED) return nullptr;
  const std::string why =
      reason == v1::ERROR_REASON_UNSPECIFIED
          ? std::string()
          : fmt::format(" ({})",
                        std::string(absl::StripPrefix(
                            v1::ErrorReason_Name(reason), "ERROR_REASON_")));
  if (state == v1::JOB_STATE_CANCELLED) {
    // Cancelling a job cancels its waiting dependants, whatever their
    // policy (a shutdown's cancellation passes on as SHUTDOWN).
    return MakeError(
        v1::JOB_STATE_CANCELLED, absl::StatusCode::kCancelled,
        reason == v1::ERROR_REASON_SHUTDOWN ? v1::ERROR_REASON_SHUTDOWN
                                            : v1::ERROR_REASON_CANCELLED,
        fmt::format("job {}, which it depends on, was cancelled{}; it never "
                    "ran",
                    dependency, why));
  }
  if (spec.dependency_policy() == v1::DEPENDENCY_POLICY_ALL_ENDED) {
    return nullptr;
  }
  return MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kFailedPrecondition,
                   v1::ERROR_REASON_DEPENDENCY_FAILED,
                   fmt::format("job {}, which it depends on, ended {}{}; it "
                               "never ran",
                               dependency,
                               std::string(absl::StripPrefix(
                                   v1::JobState_Name(state), "JOB_STATE_")),
                               why));
}

absl::Status Scheduler::ResolveDependencies(const v1::JobSpec& spec,
                                            const std::string& owner,
                                            std::vector<uint64_t>& unmet,
                                            std::shared_ptr<JobEnd>& end) {
  unmet.clear();
  end = nullptr;
  for (int i = 0; i < spec.depends_on_size(); ++i) {
    const uint64_t id = OwnJobNumber(spec.depends_on(i));
    const Job* dependency = id != 0 ? table_.Find(id) : nullptr;
    if (dependency == nullptr || *dependency->owner != owner) {
      return absl::InvalidArgumentError(
          fmt::format("spec.depends_on[{}]: job {} is unknown or forgotten", i,
                      ClipUtf8(spec.depends_on(i), 64)));
    }
    if (!IsTerminal(dependency->state)) {
      if (journal_ != nullptr && !spec.in_memory() &&
          dependency->spec->in_memory()) {
        return absl::InvalidArgumentError(fmt::format(
            "spec.depends_on[{}]: job {} is in memory (spec.in_memory) and "
            "has not ended: a journaled job cannot wait for it (a restart "
            "would lose it); make this job in-memory too",
            i, id));
      }
      unmet.push_back(id);
      continue;
    }
    if (end == nullptr) {  // Ended already: resolved now.
      end = DependencyEnd(spec, id, dependency->state,
                          dependency->end != nullptr
                              ? dependency->end->error().reason()
                              : v1::ERROR_REASON_UNSPECIFIED);
    }
  }
  std::sort(unmet.begin(), unmet.end());
  unmet.erase(std::unique(unmet.begin(), unmet.end()), unmet.end());
  return absl::OkStatus();
}

void Scheduler::DependencyEnded(uint64_t id, v1::JobState state,
                                v1::ErrorReason reason, After& after) {
  if (!deps_.HasDependants(id)) return;
  ended_dependencies_.push_back({id, state, reason});
  // Ending a dependant here ends its own dependants: a queue, not a
  // recursion (a chain of 10,000 fails in one loop, not 10,000 frames).
  if (!releasing_) ReleaseDependants(after);
}

void Scheduler::ReleaseDependants(After& after) {
  releasing_ = true;
  std::array<bool, 4> touched = {false, false, false, false};
  const absl::Time now = clock_.Now();
  while (!ended_dependencies_.empty()) {
    const EndedDependency ended = ended_dependencies_.front();
    ended_dependencies_.pop_front();
    for (uint64_t dependant : deps_.TakeDependants(ended.id)) {
      Job* job = table_.Find(dependant);
      if (job == nullptr || IsTerminal(job->state)) {
        deps_.Remove(dependant);
        continue;
      }
      if (std::shared_ptr<JobEnd> end =
              DependencyEnd(*job->spec, ended.id, ended.state, ended.reason)) {
        deps_.Remove(dependant);
        Finish(*job, std::move(end), after);  // Queues its own dependants.
        continue;
      }
      if (!deps_.Met(dependant)) continue;
      if (DependenciesMet(*job, now, after)) touched[job->executor] = true;
    }
  }
  releasing_ = false;
  for (int i = 0; i < 4; ++i) {
    if (touched[i]) Dispatch(static_cast<v1::Executor>(i), after);
  }
}

bool Scheduler::DependenciesMet(Job& job, absl::Time now, After& after) {
  if (!PassDependencyResults(job, after)) return false;
  // A delay too: it waits for its time as well (its record holds it).
  if (absl::Time(job.finish_time) > now) {
    Wait(job, job.finish_time);
    return false;
  }
  return Enqueue(job, now, /*journal=*/true, after);
}

bool Scheduler::PassDependencyResults(Job& job, After& after) {
  if (!AwaitsDependencyResults(*job.spec)) return true;
  const v1::JobSpec& spec = *job.spec;
  auto fail = [&](absl::StatusCode code, v1::ErrorReason reason,
                  std::string why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Finish(job, MakeError(v1::JOB_STATE_FAILED, code, reason, std::move(why)),
           after);
    return false;
  };
  std::vector<google::protobuf::Value> results(spec.depends_on_size());
  for (int i = 0; i < spec.depends_on_size(); ++i) {
    const uint64_t id = OwnJobNumber(spec.depends_on(i));
    const Job* dependency = id != 0 ? table_.Find(id) : nullptr;
    if (dependency == nullptr || *dependency->owner != *job.owner ||
        dependency->end == nullptr) {
      return fail(
          absl::StatusCode::kFailedPrecondition,
          v1::ERROR_REASON_DEPENDENCY_FAILED,
          fmt::format("spec.dependency_results: job {} (depends_on[{}]) "
                      "is no longer retained, so its result cannot be "
                      "passed; it never ran",
                      ClipUtf8(spec.depends_on(i), 64), i));
    }
    if (dependency->state != v1::JOB_STATE_SUCCEEDED) {
      results[i].set_null_value(google::protobuf::NULL_VALUE);
      continue;
    }
    const v1::JobResult& result = dependency->end->result();
    if (result.dropped()) {
      return fail(absl::StatusCode::kFailedPrecondition,
                  v1::ERROR_REASON_DEPENDENCY_FAILED,
                  fmt::format("spec.dependency_results: the result of job {} "
                              "was larger than jobd retains "
                              "(max-retained-result-bytes), so it cannot be "
                              "passed; it never ran",
                              id));
    }
    if (result.has_batch()) {  // A batch's results: its JSON array.
      if (!google::protobuf::util::JsonStringToMessage(result.batch().results(),
                                                       &results[i])
               .ok()) {
        results[i].Clear();
      }
    } else {
      results[i] = result.value();
    }
    if (results[i].kind_case() == google::protobuf::Value::KIND_NOT_SET) {
      results[i].set_null_value(google::protobuf::NULL_VALUE);  // No value.
    }
  }
  const TaskDef& task = *job.spec.task();
  StoredSpec stored(WithDependencyResults(spec, std::move(results)), task);
  // Its size, cached from here on as at admission (SpecBytes reads it
  // back): as kept, without its task name.
  const size_t bytes = stored->ByteSizeLong();
  const size_t limit = options_.max_message_bytes;
  if (limit > 0 && bytes + kMessageEnvelopeBytes > limit) {
    return fail(absl::StatusCode::kFailedPrecondition,
                v1::ERROR_REASON_DEPENDENCY_FAILED,
                fmt::format("spec.dependency_results: with its dependencies' "
                            "results its spec takes {} bytes, too large for "
                            "one message (max-message-bytes {}); it never ran",
                            bytes, limit));
  }
  absl::StatusOr<TaskArgs> bound = TaskRegistry::Bind(task, stored.body());
  absl::Status checked = bound.status();
  if (checked.ok() && task.validate) checked = task.validate(*bound);
  if (!checked.ok()) {
    return fail(checked.code(), v1::ERROR_REASON_INVALID_INPUT,
                fmt::format("spec.dependency_results: task '{}' refused its "
                            "dependencies' results: {}; it never ran",
                            task.name, std::string(checked.message())));
  }
  table_.CountEnded(job);  // Its bytes as they were.
  job.spec = std::move(stored);
  job.run = std::make_shared<Job::RunState>(*std::move(bound));
  table_.CountLive(job);
  JournalState(job, /*insert=*/true);  // Its spec changed: written whole.
  return true;
}

}  // namespace jobd
