// The Scheduler's side of cluster-wide idempotency keys (scheduler.h;
// server/jobs/key_claim.h, server/cluster/key_claims.h).
//
// A job admitted with an idempotency key while the hook is claiming
// (Redis up) is *held*: journaled and QUEUED, out of every lane, its
// ACCEPTED not yet sent to its submitter (held in claiming_ with the
// submitter's sink). Once the hook has claimed the key in Redis:
//  - won (or the claim could not be made: the key stays this node's), the
//    job goes on as any new job (starts, queues or is shared), and its
//    submitter gets its ACCEPTED;
//  - lost to another node's job, this job becomes that job's *mirror*: its
//    submitter gets ACCEPTED with duplicate set and the other job's id
//    (AliasSink rewrites the id of every event it gets), and the mirror
//    waits, as a published shared job does, for the other job's end to
//    come back through this node's results stream (EndShared), or ends at
//    once if the other job had ended.
// At restore every live keyed job of this node is held again and claimed
// again (a kill between its journal insert and its claim).
#include <utility>

#include "server/jobs/job_id.h"
#include "server/scheduler/scheduler.h"

namespace jobd {
namespace {

// Forwards events with another job id: a mirror's events, as its
// submitter sees them (the id of the job that holds the key).
class AliasSink : public EventSink {
 public:
  AliasSink(std::shared_ptr<EventSink> inner, uint64_t alias,
            std::string_view node)
      : inner_(std::move(inner)), alias_(alias), node_(InternJobIdNode(node)) {}
  bool Deliver(const Event& event, uint64_t tag) override {
    Event renamed = event;
    renamed.job_id = alias_;
    renamed.node = node_;
    return inner_->Deliver(renamed, tag);
  }
  void Flush() override { inner_->Flush(); }

 private:
  const std::shared_ptr<EventSink> inner_;
  const uint64_t alias_;
  const uint16_t node_;
};

}  // namespace

void Scheduler::SetKeyClaims(KeyClaimHook* hook) {
  absl::MutexLock lock(&mu_);
  key_claims_ = hook;
}

bool Scheduler::Claimable(const NewJob& job) const {
  // In-memory jobs have no durable row to claim after; delayed and
  // dependent ones keep their keys here (docs/SCALE-OUT.md).
  return key_claims_ != nullptr && !job.foreign && journal_ != nullptr &&
         !job.spec->idempotency_key().empty() && !job.spec->in_memory() &&
         key_claims_->Claiming();
}

void Scheduler::HoldForClaim(Job& job, Job::Sub sub, After& after) {
  claiming_[job.id] = std::move(sub);
  KeyClaim claim;
  claim.id = job.id;
  claim.create_ns = absl::ToUnixNanos(job.create_time);
  claim.owner = *job.owner;
  claim.key = job.spec->idempotency_key();
  claim.ticket = std::max(after.ticket, journal_->ticket());
  key_claims_->Claim(std::move(claim));
}

void Scheduler::AnswerAccepted(Job& job, std::shared_ptr<EventSink> sink,
                               uint64_t tag, uint32_t mask, bool duplicate,
                               After& after) {
  Event accepted;
  accepted.sequence = job.last_sequence;
  accepted.job_id = job.id;
  accepted.type = v1::EVENT_TYPE_ACCEPTED;
  accepted.time = clock_.Now();
  accepted.executor = job.executor;
  accepted.duplicate = duplicate;
  accepted.set_task(job.spec.task(), job.spec.body());
  accepted.ticket = events_.TicketOf(job.last_sequence);
  if ((mask & EventBit(accepted.type)) && sink->Deliver(accepted, tag)) {
    after.flush.push_back(sink);
  }
  if (job.end != nullptr) {
    if (sink->Deliver(events_.EndOf(job), tag)) after.flush.push_back(sink);
  } else {
    job.subscribers.push_back({std::move(sink), tag, mask});
  }
}

bool Scheduler::ReleaseClaim(Job& job, After& after) {
  auto it = claiming_.find(job.id);
  if (it == claiming_.end()) return false;
  Job::Sub sub = std::move(it->second);
  claiming_.erase(it);
  if (sub.sink != nullptr) {
    AnswerAccepted(job, std::move(sub.sink), sub.tag, sub.mask,
                   /*duplicate=*/false, after);
  }
  return true;
}

std::shared_ptr<const JobEnd> Scheduler::ClaimWon(uint64_t id,
                                                  int64_t create_ns) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    if (job == nullptr || absl::ToUnixNanos(job->create_time) != create_ns) {
      return nullptr;
    }
    if (!claiming_.contains(id)) {
      // Ended while held (cancelled, expired): the claim records its end.
      return IsTerminal(job->state) ? job->end : nullptr;
    }
    ReleaseClaim(*job, after);
    if (key_claims_ != nullptr) {
      job->subscribers.push_back(
          {key_claims_->ClaimedEnds(), id, kTerminalEvents});
    }
    // As a new job: starts, is shared, or queues.
    const v1::Executor kind = job->executor;
    const Lane& lane = lanes_[kind];
    const bool starts_now =
        lane.executor() != nullptr && !draining_ && lane.FreeSlots() > 0;
    const v1::JobSpec& spec = *job->spec;
    if (!starts_now && work_share_ != nullptr && work_share_->Sharing() &&
        spec.concurrency_key().empty() && spec.depends_on_size() == 0) {
      job->cluster = Job::kOutbox;
      JournalState(*job);
      after.ticket = std::max(after.ticket, journal_->ticket());
      ShareJob(*job, after);
    } else if (Enqueue(*job, clock_.Now(), /*journal=*/true, after)) {
      Dispatch(kind, after);
    }
  }
  after.Run(journal_);
  return nullptr;
}

bool Scheduler::ClaimLost(uint64_t id, int64_t create_ns, uint64_t other_id,
                          std::string_view other_node,
                          std::shared_ptr<JobEnd> other_end, uint64_t* ticket) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    auto it = claiming_.find(id);
    if (job == nullptr || it == claiming_.end() ||
        absl::ToUnixNanos(job->create_time) != create_ns) {
      return false;  // Ended while held: its end stands.
    }
    Job::Sub sub = std::move(it->second);
    claiming_.erase(it);
    // The key is the other job's: a later submit here claims it again (and
    // learns that job's id), rather than finding this mirror.
    table_.DropKey(*job);
    if (other_end == nullptr) {
      // Waits for the other job's end, as a published job does.
      job->cluster = Job::kPublished;
      JournalState(*job);
      ShareJob(*job, after);
    }
    if (sub.sink != nullptr) {
      AnswerAccepted(
          *job, std::make_shared<AliasSink>(sub.sink, other_id, other_node),
          sub.tag, sub.mask, /*duplicate=*/true, after);
    }
    if (other_end != nullptr) Finish(*job, std::move(other_end), after);
    if (ticket != nullptr && journal_ != nullptr) *ticket = journal_->ticket();
  }
  after.Run(journal_);
  return true;
}

}  // namespace jobd
