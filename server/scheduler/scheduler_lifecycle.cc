// The Scheduler across the daemon's life: restore at start, live reload,
// drain and shutdown, retention sweeps (scheduler.h).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/jobs/dependency_results.h"
#include "server/scheduler/restore.h"
#include "server/scheduler/scheduler.h"

namespace jobd {

void Scheduler::CountRejected(uint64_t n) {
  absl::MutexLock lock(&mu_);
  rejected_ += n;
}

void Scheduler::SetLimits(const SchedulerOptions& options) {
  absl::MutexLock lock(&mu_);
  limits_.max_queued = options.max_queued;
  limits_.retention_ttl = options.retention_ttl;
  limits_.max_retained = options.max_retained;
  limits_.max_live_bytes = options.max_live_bytes;
  limits_.max_retained_bytes = options.max_retained_bytes;
  limits_.max_retained_result_bytes = options.max_retained_result_bytes;
  retention_.SetLimits({.ttl = options.retention_ttl,
                        .max_count = options.max_retained,
                        .max_bytes = options.max_retained_bytes});
  outputs_.SetLimits({.per_job_bytes = options.output_bytes_per_job,
                      .total_bytes = options.max_output_bytes});
  for (Lane& lane : lanes_) {
    lane.SetCallerWeights(CallerWeights(options.caller_weights));
  }
}

bool Scheduler::ResizeExecutor(v1::Executor kind, int slots) {
  After after;
  bool resized;
  {
    absl::MutexLock lock(&mu_);
    JobExecutor* executor = lanes_.at(kind).executor();
    resized = executor != nullptr && executor->Resize(slots);
    if (resized) Dispatch(kind, after);  // Grown: queued jobs may start.
  }
  after.Run(journal_);
  return resized;
}

void Scheduler::BeginDrain() {
  After after;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // Nothing queued starts here from now on: other nodes' jobs waiting
    // here go back to the cluster, for a node that runs them now.
    for (uint64_t id : table_.LiveIds()) {
      Job* job = table_.Find(id);
      if (job != nullptr && job->state != v1::JOB_STATE_RUNNING &&
          MayHandBack(*job)) {
        HandBack(*job, after);
      }
    }
  }
  after.Run(journal_);
}

bool Scheduler::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Scheduler::WaitNoneRunning(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

std::pair<std::vector<uint64_t>, size_t> Scheduler::EndForShutdown() {
  After after;
  std::vector<uint64_t> ended;
  size_t kept = 0;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t id : table_.LiveIds()) {
      // Live when listed; a dependant may have ended since with its
      // dependency (and been forgotten).
      Job* found = table_.Find(id);
      if (found == nullptr || IsTerminal(found->state)) continue;
      Job& job = *found;
      if (MayHandBack(job)) {
        HandBack(job, after);  // Another node runs it.
        continue;
      }
      // Another node's job that began here (at most once) ends: its end
      // goes back to its node.
      if (job.cluster != Job::kForeign &&
          KeptAtShutdown(job, journal_ != nullptr && !job.spec->in_memory())) {
        ++kept;
        if (job.gated) {
          // Claimed, never handed to its executor: queued again.
          job.gated = false;
          JournalState(job);
        }
        if (job.state == v1::JOB_STATE_RUNNING) {
          // Stopped here, queued for the next start; whatever its run
          // returns now is dropped (it is not RUNNING any more).
          job.run->cancel.Cancel(CancelReason::kShutdown);
          lanes_[job.executor].CancelRun(job.id);
          job.state = v1::JOB_STATE_QUEUED;
          --running_;
          JournalState(job);
        }
        continue;
      }
      ended.push_back(id);
      Abort(job, CancelReason::kShutdown, ShutdownEnd(), after);
    }
    kept_for_restart_ = journal_ != nullptr;
  }
  after.Run(journal_);
  return {ended, kept};
}

RestoreSummary Scheduler::Restore(Recovered recovered,
                                  const TaskRegistry& registry) {
  RestoreSummary summary;
  After after;
  {
    absl::MutexLock lock(&mu_);
    const Restorer restorer(registry, router_, vanished_tasks_,
                            options_.max_message_bytes);
    // 1. The records and the event log as they were.
    std::vector<LoggedEvent> log;
    std::vector<uint64_t> ended;
    // Jobs to fail in step 3, and why: their row could not be read back.
    absl::flat_hash_map<uint64_t, std::string> unreadable;
    for (JournalRow& row : recovered.rows) {
      Restorer::Revived revived =
          restorer.Revive(row, table_.Intern(row.owner), log);
      Job& job = table_.Add(std::move(revived.job));
      if (!revived.problem.empty()) {
        unreadable.emplace(job.id, std::move(revived.problem));
      }
      if (revived.rewrite) {
        ++summary.unreadable;
        JournalState(job);
      }
      if (job.end != nullptr) ended.push_back(job.id);
    }
    events_.Restore(std::move(log), recovered.last_sequence);
    table_.SkipIdsThrough(recovered.reserved_job_id);
    // 2. Ended jobs: retained in the order they ended.
    std::sort(ended.begin(), ended.end(),
              [this](uint64_t a, uint64_t b)
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    return absl::Time(table_.Find(a)->finish_time) <
                           absl::Time(table_.Find(b)->finish_time);
                  });
    for (uint64_t id : ended) retention_.Adopt(*table_.Find(id));
    summary.retained = ended.size();
    retention_.Sweep(clock_.Now());  // Restored beyond the limits or the TTL.
    // Keys' limits set through the API, before their jobs queue again.
    for (const KeyLimitRow& k : recovered.key_limits) {
      if (ValidateKey(k.key, "key").ok() && !k.key.empty()) {
        keys_.LoadRpc(k.key, {.max_running = k.max_running, .rate = k.rate});
      }
    }
    // 3. Live jobs: queued again (or waiting), or failed. Dependants
    // first find what they wait for again (scheduler_deps.cc), so that a
    // dependency failed below fails them too.
    const absl::Time now = clock_.Now();
    const std::vector<uint64_t> live = table_.LiveIds();
    absl::flat_hash_map<uint64_t, std::shared_ptr<JobEnd>> dependency_ends;
    for (uint64_t id : live) {
      Job& job = *table_.Find(id);
      table_.CountLive(job);
      if (job.state != v1::JOB_STATE_WAITING ||
          job.spec->depends_on_size() == 0 || unreadable.contains(id)) {
        continue;
      }
      std::vector<uint64_t> unmet;
      std::shared_ptr<JobEnd> end;
      absl::Status resolved = ResolveDependencies(*job.spec, *job.owner, unmet,
                                                  end, /*restoring=*/true);
      if (!resolved.ok()) {
        // Not a job id, or another caller's job (a forgotten one counts as
        // met: ResolveDependencies): not waited for.
        unmet.clear();
      }
      if (end != nullptr) {
        dependency_ends.emplace(id, std::move(end));
      } else {
        deps_.Add(id, unmet);
      }
    }
    // Dependants released or failed by what ends below: once all are back.
    releasing_ = true;
    for (uint64_t id : live) {
      // (Nothing cascades in this loop, releasing_ holds it back; a job
      // that ended anyway is skipped.)
      Job* found = table_.Find(id);
      if (found == nullptr || IsTerminal(found->state)) continue;
      Job& job = *found;
      const bool was_waiting = job.state == v1::JOB_STATE_WAITING;
      if ((job.cluster == Job::kOutbox || job.cluster == Job::kPublished) &&
          !unreadable.contains(id)) {
        if (work_share_ != nullptr) {
          // Shared with the cluster: it waits here for its end (one in
          // the outbox is published again: WorkSharing asks Outbox()).
          job.state = v1::JOB_STATE_QUEUED;
          const uint8_t place = job.cluster;
          job.cluster = Job::kPublished;  // ShareJob publishes no more.
          ShareJob(job, after);
          job.cluster = place;
          ++summary.queued;
          continue;
        }
        // Cluster mode is off now: it runs here (one that was published
        // may also run on a node of that cluster), from its start: a run
        // another node began is not this one.
        job.cluster = Job::kLocal;
        job.start_time = absl::InfinitePast();
        JournalState(job);
      }
      auto bad = unreadable.find(id);
      const Restorer::Verdict verdict = restorer.Judge(
          job, bad != unreadable.end() ? bad->second : std::string());
      job.state = v1::JOB_STATE_QUEUED;  // Never counted as running here.
      switch (verdict.fate) {
        case Restorer::Fate::kUnreadable:
          ++summary.unreadable;
          Finish(job, verdict.end, after);
          // Its row rewritten whole, unless retention forgot it at once.
          if (const Job* kept = table_.Find(id)) JournalState(*kept, true);
          continue;
        case Restorer::Fate::kUnrunnable:
          ++summary.unrunnable;
          Finish(job, verdict.end, after);
          continue;
        case Restorer::Fate::kLost:
          ++summary.lost;
          Finish(job, verdict.end, after);
          continue;
        case Restorer::Fate::kQueue:
        case Restorer::Fate::kRerun:
          break;
      }
      const bool rerun = verdict.fate == Restorer::Fate::kRerun;
      job.run = verdict.run;
      job.executor = verdict.executor;
      if (auto end = dependency_ends.find(id); end != dependency_ends.end()) {
        job.state = v1::JOB_STATE_WAITING;  // Never queued.
        Finish(job, end->second, after);
        continue;
      }
      if (deps_.Contains(id)) {
        ++summary.waiting;  // Its dependencies have not ended: it waits on.
        job.state = v1::JOB_STATE_WAITING;
        continue;
      }
      if (AwaitsDependencyResults(*job.spec)) {
        job.state = v1::JOB_STATE_WAITING;  // Never queued.
        if (!PassDependencyResults(job, after)) {
          ++summary.unrunnable;
          continue;
        }
        job.state = v1::JOB_STATE_QUEUED;
      }
      if (was_waiting && absl::Time(job.finish_time) > now) {
        ++summary.waiting;  // Its time has not come: it waits on.
        Wait(job, job.finish_time);
        continue;
      }
      // Keyed: its claim in the cluster is made again first (it may not
      // have been made: a kill after its insert; scheduler_claims.cc).
      if (key_claims_ != nullptr && Journaled(job) &&
          !job.spec->idempotency_key().empty()) {
        ++(rerun ? summary.rerun : summary.queued);
        HoldForClaim(job, {}, after);
        continue;
      }
      // Due, or queued: unless a deadline passed while jobd was down.
      if (!Enqueue(job, now, rerun || was_waiting, after)) {
        ++summary.expired;
        continue;
      }
      ++(rerun ? summary.rerun : summary.queued);
    }
    releasing_ = false;
    if (!ended_dependencies_.empty()) ReleaseDependants(after);
    for (int i = 0; i < 4; ++i) Dispatch(static_cast<v1::Executor>(i), after);
  }
  after.Run(journal_);
  FollowNew();  // Other nodes' jobs the restored ones depend on.
  return summary;
}

bool Scheduler::StopExecutors(absl::Time deadline) {
  std::vector<JobExecutor*> executors;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return true;
    stopped_ = true;
    draining_ = true;
    for (Lane& lane : lanes_) {
      if (lane.executor() != nullptr) executors.push_back(lane.executor());
    }
  }
  bool all = true;
  for (JobExecutor* e : executors) all = e->Shutdown(deadline) && all;
  return all;
}

void Scheduler::ScheduleSweep() {
  timers_.Schedule(clock_.Now() + options_.sweep_interval, [this] {
    SweepRetention();
    ScheduleSweep();
  });
}

void Scheduler::SweepRetention() {
  absl::MutexLock lock(&mu_);
  retention_.Sweep(clock_.Now());
}

}  // namespace jobd
