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
//
// In cluster mode a dependency may be another node's job ("N@node"): it
// gets a key of its own in the graph (kRemoteDependency set), and its end
// is asked of its node (RemoteJobs::Get, a WaitJob of kRemoteRound, again
// until it ended; UNAVAILABLE: again after kRemoteRetry). Its end then
// releases, fails or cancels its dependants as a local job's does; a job
// its node does not know (or not for this owner) fails them
// DEPENDENCY_FAILED. It is followed while a job here waits for it, and
// again after a restart (resolved again from the spec). Its end as its
// node told it is kept for the dependants that take their dependencies'
// results (remote_results_) until they have them.
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
                                                 std::string_view dependency,
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
                                            std::shared_ptr<JobEnd>& end,
                                            bool restoring) {
  unmet.clear();
  end = nullptr;
  for (int i = 0; i < spec.depends_on_size(); ++i) {
    const uint64_t id = OwnJobNumber(spec.depends_on(i));
    if (id == 0) {
      absl::StatusOr<JobRef> ref = ParseJobRef(spec.depends_on(i), "");
      if (ref.ok() && !ref->here()) {  // Another node's: followed there.
        if (remote_ != nullptr) {
          unmet.push_back(RemoteDependencyKey(*ref, owner));
          continue;
        }
        const std::string why = fmt::format(
            "spec.depends_on[{}]: '{}' is a job of node '{}'; this node is "
            "not in a cluster",
            i, ClipUtf8(spec.depends_on(i), 64), ref->node);
        if (!restoring) return absl::InvalidArgumentError(why);
        // It was, when the job came: it cannot learn that job's end now.
        if (end == nullptr) {
          end = MakeError(
              v1::JOB_STATE_FAILED, absl::StatusCode::kFailedPrecondition,
              v1::ERROR_REASON_DEPENDENCY_FAILED, why + "; it never ran");
        }
        continue;
      }
    }
    const Job* dependency = id != 0 ? table_.Find(id) : nullptr;
    if (restoring && id != 0 && dependency == nullptr) {
      continue;  // Ended and released it; that record was lost.
    }
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
      end = DependencyEnd(spec, std::to_string(id), dependency->state,
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
      std::shared_ptr<JobEnd> end =
          !ended.unknown.empty()
              ? MakeError(v1::JOB_STATE_FAILED,
                          absl::StatusCode::kFailedPrecondition,
                          v1::ERROR_REASON_DEPENDENCY_FAILED, ended.unknown)
              : DependencyEnd(*job->spec, DependencyName(ended.id), ended.state,
                              ended.reason);
      if (end != nullptr) {
        deps_.Remove(dependant);
        Finish(*job, std::move(end), after);  // Queues its own dependants.
        continue;
      }
      if (ended.remote != nullptr && AwaitsDependencyResults(*job->spec)) {
        remote_results_[dependant].emplace_back(DependencyName(ended.id),
                                                ended.remote);
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

std::string Scheduler::DependencyName(uint64_t id) const {
  if ((id & kRemoteDependency) == 0) return std::to_string(id);
  auto it = remote_deps_.find(id);
  return it != remote_deps_.end() ? it->second.name : "(another node's)";
}

void Scheduler::SetRemoteJobs(std::shared_ptr<RemoteJobs> remote) {
  absl::MutexLock lock(&mu_);
  remote_ = std::move(remote);
}

uint64_t Scheduler::RemoteDependencyKey(const JobRef& ref,
                                        const std::string& owner) {
  std::string name = absl::StrCat(ref.number, "@", ref.node);
  auto [it, fresh] = remote_keys_.try_emplace(absl::StrCat(owner, "\n", name));
  if (fresh) {
    it->second = kRemoteDependency | ++next_remote_;
    remote_deps_.emplace(
        it->second,
        RemoteDependency{.ref = ref, .owner = owner, .name = std::move(name)});
    to_follow_.push_back(it->second);
  }
  return it->second;
}

void Scheduler::FollowNew() {
  std::vector<uint64_t> keys;
  {
    absl::MutexLock lock(&mu_);
    keys.swap(to_follow_);
  }
  for (uint64_t key : keys) FollowRemote(key);
}

void Scheduler::ForgetRemote(uint64_t key) {
  auto it = remote_deps_.find(key);
  if (it == remote_deps_.end()) return;
  remote_keys_.erase(absl::StrCat(it->second.owner, "\n", it->second.name));
  remote_deps_.erase(it);
  if (!deps_.AnyWaiting(key)) deps_.Drop(key);
}

void Scheduler::FollowRemote(uint64_t key) {
  std::shared_ptr<RemoteJobs> remote;
  JobRef ref;
  std::string owner;
  {
    absl::MutexLock lock(&mu_);
    auto it = remote_deps_.find(key);
    if (it == remote_deps_.end()) return;
    if (!deps_.AnyWaiting(key) || remote_ == nullptr) {
      // Nothing waits for it here any more (or cluster mode stopped).
      ForgetRemote(key);
      return;
    }
    remote = remote_;
    ref = it->second.ref;
    owner = it->second.owner;
  }
  const absl::Time now = absl::Now();
  remote->Get(ref, std::move(owner), now + kRemoteRound,
              now + kRemoteRound + RemoteJobs::kDefaultWait,
              [life = life_, key](absl::StatusOr<v1::Job> job) {
                IfAlive(life, [&](Scheduler& self) {
                  self.OnRemoteDependency(key, std::move(job));
                });
              });
}

void Scheduler::OnRemoteDependency(uint64_t key, absl::StatusOr<v1::Job> job) {
  if (job.ok() && !IsTerminal(job->state())) return FollowRemote(key);
  const absl::StatusCode code = job.status().code();
  if (!job.ok() && code != absl::StatusCode::kNotFound &&
      code != absl::StatusCode::kPermissionDenied &&
      code != absl::StatusCode::kInvalidArgument) {
    // Its node is out of reach for now (dead, Redis down): again soon.
    timers_.Schedule(clock_.Now() + kRemoteRetry,
                     [this, key] { FollowRemote(key); });
    return;
  }
  After after;
  {
    absl::MutexLock lock(&mu_);
    auto it = remote_deps_.find(key);
    if (it == remote_deps_.end()) return;
    if (deps_.HasDependants(key)) {
      if (job.ok()) {
        const v1::JobState state = job->state();
        const v1::ErrorReason reason = job->error().reason();
        ended_dependencies_.push_back(
            {key,
             state,
             reason,
             {},
             std::make_shared<const v1::Job>(*std::move(job))});
      } else {
        ended_dependencies_.push_back(
            {key, v1::JOB_STATE_FAILED, v1::ERROR_REASON_DEPENDENCY_FAILED,
             fmt::format("job {}, which it depends on, is unknown or "
                         "forgotten at node {} ({}); it never ran",
                         it->second.name, it->second.ref.node,
                         std::string(job.status().message()))});
      }
      if (!releasing_) ReleaseDependants(after);
    }
    ForgetRemote(key);
  }
  after.Run(journal_);
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
  // Other nodes' jobs' ends, as their nodes told them (ReleaseDependants).
  std::vector<std::pair<std::string, std::shared_ptr<const v1::Job>>> remote;
  if (auto it = remote_results_.find(job.id); it != remote_results_.end()) {
    remote = std::move(it->second);
    remote_results_.erase(it);
  }
  auto fail = [&](absl::StatusCode code, v1::ErrorReason reason,
                  std::string why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Finish(job, MakeError(v1::JOB_STATE_FAILED, code, reason, std::move(why)),
           after);
    return false;
  };
  std::vector<google::protobuf::Value> results(spec.depends_on_size());
  for (int i = 0; i < spec.depends_on_size(); ++i) {
    // Its state and result: this node's job's, or another node's.
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    const v1::JobResult* result = nullptr;
    std::string name;
    if (const uint64_t id = OwnJobNumber(spec.depends_on(i)); id != 0) {
      name = std::to_string(id);
      const Job* dependency = table_.Find(id);
      if (dependency != nullptr && *dependency->owner == *job.owner &&
          dependency->end != nullptr) {
        state = dependency->state;
        result = &dependency->end->result();
      }
    } else if (absl::StatusOr<JobRef> ref = ParseJobRef(spec.depends_on(i), "");
               ref.ok()) {
      name = absl::StrCat(ref->number, "@", ref->node);
      for (const auto& [remote_name, ended] : remote) {
        if (remote_name == name) {
          state = ended->state();
          result = &ended->result();
        }
      }
    }
    if (result == nullptr) {
      return fail(
          absl::StatusCode::kFailedPrecondition,
          v1::ERROR_REASON_DEPENDENCY_FAILED,
          fmt::format("spec.dependency_results: job {} (depends_on[{}]) "
                      "is no longer retained, so its result cannot be "
                      "passed; it never ran",
                      ClipUtf8(spec.depends_on(i), 64), i));
    }
    if (state != v1::JOB_STATE_SUCCEEDED) {
      results[i].set_null_value(google::protobuf::NULL_VALUE);
      continue;
    }
    if (result->dropped()) {
      return fail(absl::StatusCode::kFailedPrecondition,
                  v1::ERROR_REASON_DEPENDENCY_FAILED,
                  fmt::format("spec.dependency_results: the result of job {} "
                              "was larger than jobd retains "
                              "(max-retained-result-bytes), so it cannot be "
                              "passed; it never ran",
                              name));
    }
    if (result->has_batch()) {  // A batch's results: its JSON array.
      if (!google::protobuf::util::JsonStringToMessage(
               result->batch().results(), &results[i])
               .ok()) {
        results[i].Clear();
      }
    } else {
      results[i] = result->value();
    }
    if (results[i].kind_case() == google::protobuf::Value::KIND_NOT_SET) {
      results[i].set_null_value(google::protobuf::NULL_VALUE);  // No value.
    }
  }
  const TaskDef& task = *job.spec.task();
  StoredSpec stored(WithDependencyResults(spec, std::move(results)), task);
  // Its size as kept, without its task name.
  const size_t bytes = SpecBytes(*stored);
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
