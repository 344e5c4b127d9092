// The Scheduler's side of cluster mode's work sharing (scheduler.h;
// server/jobs/work_share.h, server/cluster/work_sharing.h).
//
// A job admitted here that cannot start now (it would queue) and that
// nothing ties to this node (no concurrency key, no dependencies) is
// *shared*: it stays QUEUED here, out of every lane, journaled with its
// place in the outbox (JobRecord::kOutbox, then kPublished once Redis
// acknowledged it), and the hook publishes it. Its end comes back from
// the node that ran it (EndShared) and ends it here: the terminal event
// reaches its Submit stream and waiters as a local job's does; its start
// and progress come as notes (SharedRunning): STARTED and PROGRESS here,
// and it shows RUNNING (JobRecord::ShownState) while staying QUEUED. Its start
// and total deadlines, and Cancel, act here as for any queued job, and the
// hook withdraws it from the cluster (Withdraw: a run elsewhere is
// stopped; its late end is dropped).
//
// A job taken from Redis to run here (NewJob::foreign) is an ordinary job
// of this scheduler that is never journaled (Redis's pending entry is its
// record: after a crash of this node another one takes it over) and never
// shared again. A draining or stopping node hands back those that have not
// begun (and the at-least-once ones, begun or not): the cluster gives them
// to another node at once, rather than after this node's lease.
#include <algorithm>
#include <limits>

#include "server/jobs/proto_time.h"
#include "server/scheduler/retry_policy.h"
#include "server/scheduler/scheduler.h"

namespace jobd {

void Scheduler::SetWorkShare(WorkShareHook* hook) {
  absl::MutexLock lock(&mu_);
  work_share_ = hook;
}

bool Scheduler::Shareable(const NewJob& job) const {
  const v1::JobSpec& spec = *job.spec;
  // An in-memory job stays here: the outbox is the journal.
  return !job.foreign && work_share_ != nullptr && !spec.in_memory() &&
         spec.concurrency_key().empty() && spec.depends_on_size() == 0 &&
         work_share_->Sharing();
}

void Scheduler::ShareJob(Job& job, After& after) {
  ++shared_;
  // Its start and total deadlines are kept here, as a queued job's.
  const v1::JobSpec& spec = *job.spec;
  const absl::Time due = FirstDue(spec, job.create_time);
  const absl::Time deadline =
      std::min(StartExpiry(spec, due), TotalExpiry(spec, due));
  if (deadline != absl::InfiniteFuture() && job.timeout_timer == 0) {
    const uint64_t id = job.id;
    job.timeout_timer =
        timers_.Schedule(deadline, [this, id] { OnQueuedDeadline(id); });
  }
  if (job.cluster != Job::kOutbox) return;
  SharedJob shared;
  shared.id = job.id;
  shared.create_ns = absl::ToUnixNanos(job.create_time);
  shared.owner = *job.owner;
  job.spec.AppendWholeTo(&shared.spec);
  shared.ticket = after.ticket;
  work_share_->Publish(std::move(shared));
}

bool Scheduler::MayHandBack(const Job& job) const {
  return job.cluster == Job::kForeign && work_share_ != nullptr &&
         !IsTerminal(job.state) &&
         (job.attempts == 0 ||
          job.spec->delivery() == v1::DELIVERY_AT_LEAST_ONCE);
}

void Scheduler::HandBack(Job& job, After& after) {
  work_share_->HandBack(job.id);  // Before its end reaches the hook's sink.
  Abort(job, CancelReason::kShutdown,
        MakeError(v1::JOB_STATE_CANCELLED, absl::StatusCode::kUnavailable,
                  v1::ERROR_REASON_SHUTDOWN,
                  "handed back to the cluster: this node is draining or "
                  "stopping; another node runs it"),
        after);
}

bool Scheduler::MarkPublished(uint64_t id, int64_t create_ns) {
  absl::MutexLock lock(&mu_);
  Job* job = table_.Find(id);
  if (job == nullptr || job->cluster != Job::kOutbox ||
      IsTerminal(job->state) ||
      absl::ToUnixNanos(job->create_time) != create_ns) {
    return false;
  }
  job->cluster = Job::kPublished;
  JournalState(*job);
  return true;
}

Scheduler::Job* Scheduler::LiveShared(uint64_t id, int64_t create_ns) {
  Job* job = table_.Find(id);
  if (job == nullptr ||
      (job->cluster != Job::kOutbox && job->cluster != Job::kPublished) ||
      IsTerminal(job->state) ||
      absl::ToUnixNanos(job->create_time) != create_ns) {
    return nullptr;
  }
  return job;
}

void Scheduler::StartedElsewhere(Job& job, absl::Time start_time,
                                 After& after) {
  if (job.start_time != absl::InfinitePast() ||
      start_time == absl::InfinitePast()) {
    return;  // Started already (the first start heard of counts).
  }
  job.start_time = start_time;
  Event e;
  e.type = v1::EVENT_TYPE_STARTED;
  Emit(job, std::move(e), after);
}

bool Scheduler::EndShared(uint64_t id, int64_t create_ns,
                          std::shared_ptr<JobEnd> end, absl::Time start_time,
                          uint64_t* ticket) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = LiveShared(id, create_ns);
    if (job == nullptr) return false;
    StartedElsewhere(*job, start_time, after);  // Committed with its end.
    Finish(*job, std::move(end), after);
    if (ticket != nullptr)
      *ticket = journal_ != nullptr ? journal_->ticket() : 0;
  }
  after.Run(journal_);
  return true;
}

bool Scheduler::SharedRunning(uint64_t id, int64_t create_ns,
                              absl::Time start_time,
                              std::shared_ptr<const v1::Progress> progress) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = LiveShared(id, create_ns);
    if (job == nullptr) return false;
    StartedElsewhere(*job, start_time, after);
    if (progress != nullptr) Progressed(*job, std::move(progress), after);
  }
  after.Run(journal_);
  return true;
}

std::vector<SharedJob> Scheduler::Outbox() const {
  std::vector<SharedJob> out;
  absl::MutexLock lock(&mu_);
  for (uint64_t id : table_.LiveIds()) {
    const Job* job = table_.Find(id);
    if (job == nullptr || job->cluster != Job::kOutbox ||
        IsTerminal(job->state)) {
      continue;
    }
    SharedJob& shared = out.emplace_back();
    shared.id = job->id;
    shared.create_ns = absl::ToUnixNanos(job->create_time);
    shared.owner = *job->owner;
    job->spec.AppendWholeTo(&shared.spec);
  }
  return out;
}

int Scheduler::IdleSlots() const {
  absl::MutexLock lock(&mu_);
  if (draining_ || stopped_) return 0;
  // A node takes work only if a job of any executor would start at once:
  // what it takes runs now rather than queueing here.
  int idle = std::numeric_limits<int>::max();
  bool any = false;
  for (const Lane& lane : lanes_) {
    if (lane.executor() == nullptr) continue;
    any = true;
    idle = std::min(idle, lane.FreeSlots());
  }
  return any ? idle : 0;
}

size_t Scheduler::shared_jobs() const {
  absl::MutexLock lock(&mu_);
  return shared_;
}

}  // namespace jobd
