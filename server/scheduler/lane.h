// Lane: one executor and the jobs waiting for it: the priority queue, the
// picking of the next chunk, the slots in use, and (with a journal) the
// durable-start gate and its adaptive claim-ahead window.
//
// Queue: priority (highest first); within a priority, the callers' jobs
// interleaved by weighted fair queuing (fair_queue.h: a FIFO queue per
// caller, weights from --caller-weight), FIFO within a caller. With one
// caller (no authentication) that is FIFO within a priority. A job that
// ends while queued leaves a stale entry, skipped when reached, or dropped
// at once when stale entries outnumber live ones (Unqueue).
//
// Durable-start gate (journal only): a picked chunk is first claimed (its
// journal rows say its jobs may have begun, so a crash can never run an
// at-most-once job twice), then waits until that record is durable
// (Claim/TakeDurable), then for a slot. Claimed jobs stay QUEUED to
// clients until handed to the executor. To keep slots busy while claims
// wait for commits, a lane claims up to Window() jobs beyond its free
// slots: Little's law over the jobs' run time and the commit latency.
// At-least-once jobs skip the gate while a slot is free (SlotFree): a
// crash runs them again whether or not their start was durable.
//
// The Scheduler drives it (Scheduler::Dispatch): the lane says what is
// next; the scheduler turns jobs into runs and events.
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_,
// called only with it held. The executor itself is thread-safe.
// Ownership: owns its executor; refers to jobs by id (records are the
// JobTable's).
#ifndef JOBD_SERVER_SCHEDULER_LANE_H_
#define JOBD_SERVER_SCHEDULER_LANE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/scheduler/fair_queue.h"
#include "server/scheduler/job_record.h"
#include "workers/executor/executor.h"

namespace jobd {

class Lane {
 public:
  // ---- the executor ----
  void set_executor(std::unique_ptr<JobExecutor> executor) {
    executor_ = std::move(executor);
  }
  JobExecutor* executor() const { return executor_.get(); }  // Null: none.
  // The executor that runs this lane's jobs of tasks that hold a pool slot
  // (TaskDef::holds_pool_slot: the reactor, for the process pool's lane):
  // such a job travels alone, takes one of this lane's slots, and is
  // started, cancelled and reported by `guest` (not owned). Null: none.
  void set_guest(JobExecutor* guest) { guest_ = guest; }
  // Whether `id` runs on the guest (taken out by GuestReturned).
  bool RunsAsGuest(uint64_t id) const { return guests_.contains(id); }
  // A guest run of this lane ended: forgets it (Returned frees its slot).
  void GuestReturned(uint64_t id) { guests_.erase(id); }
  // Asks the executor running job `id` (the guest's or this lane's) to
  // stop it.
  void CancelRun(uint64_t id);
  int capacity() const { return executor_->capacity(); }

  // ---- the queue ----
  // Callers' weights (FairQueue), for the callers queued from now on and
  // those queued now.
  void SetCallerWeights(CallerWeights weights);
  // Queues job `id` of `caller` (interned: JobRecord::owner).
  void Push(int32_t priority, const std::string* caller, uint64_t id);
  // Puts `id` at the front of its caller's queue in its priority: a job
  // parked by its key (KeyLimits) that was granted it goes before the
  // jobs that passed it, and its caller is not charged twice for it.
  void PushFront(int32_t priority, const std::string* caller, uint64_t id);
  size_t queued() const { return queued_; }  // Live entries.
  // Queued job `id` ended (or is about to): its entry is stale from now
  // on. Drops the stale entries at once when they outnumber the live ones
  // (past 1024); `still_queued(id)` tells the live ones (`id` is not).
  void Unqueue(uint64_t id, absl::FunctionRef<bool(uint64_t)> still_queued);
  size_t stale() const { return stale_; }  // Stale entries in the queue.
  // Takes the next chunk off the queue: the head job of the highest
  // priority's caller whose turn it is, then (an executor with
  // max_chunk() > 1) that caller's queued jobs right behind it in the same
  // priority that also allow chunking (JobSpec::chunksize), as many as
  // the smallest chunksize among them allows. A job with a concurrency
  // key travels alone. `queued_job(id)` is the job
  // if it is still queued, else null (a stale entry: skipped). Empty when
  // the queue is.
  std::vector<JobRecord*> TakeChunk(
      absl::FunctionRef<JobRecord*(uint64_t)> queued_job);

  // ---- slots ----
  // Whether another chunk may be taken now: a free slot; with the gate,
  // also up to `window` claims ahead of the slots.
  bool HasRoom(int capacity, bool gate, size_t window) const;
  // Slots free for jobs not yet queued (admission: a job that will start
  // at once is not counted as queued).
  int FreeSlots() const;
  int busy() const { return busy_; }
  // Whether a chunk handed now gets a slot of `capacity` at once, ahead of
  // no claimed one.
  bool SlotFree(int capacity) const {
    return static_cast<size_t>(busy_) + gated_jobs_ <
           static_cast<size_t>(capacity);
  }
  // Hands `chunk` (one job or more) to the executor in one slot.
  void Hand(std::vector<JobRun> chunk);
  // A run returned (JobOutcome::frees_slot, wall_time for Window()).
  void Returned(const JobOutcome& outcome);

  // ---- the durable-start gate ----
  // Claims `chunk`: it waits for journal batch `ticket` to be durable.
  void Claim(std::vector<JobRun> chunk, uint64_t ticket);
  size_t claimed() const { return gated_jobs_; }  // Jobs claimed, not handed.
  // The oldest claimed chunk, if its ticket is up to `durable` and a slot
  // is free (of `capacity`).
  std::optional<std::vector<JobRun>> TakeDurable(int capacity,
                                                 uint64_t durable);
  // The ticket to be woken up at, when the oldest claim is not durable yet
  // and no wake-up is registered for it; 0 otherwise.
  uint64_t ArmGate(uint64_t durable);
  // How many jobs may be claimed beyond the free slots (of `capacity`),
  // given the journal's commit latency, at most `max` (start_window).
  size_t Window(int capacity, absl::Duration commit_latency, size_t max) const;
  absl::Duration run_time() const { return run_time_; }

  // ---- counters (GetStats) ----
  void CountEnd(v1::JobState state);
  uint64_t succeeded() const { return succeeded_; }
  uint64_t failed() const { return failed_; }
  uint64_t cancelled() const { return cancelled_; }

 private:
  // Drops the stale entries of the queue: all but those `still_queued`
  // says are, `gone` included.
  void Compact(uint64_t gone, absl::FunctionRef<bool(uint64_t)> still_queued);
  // priority (highest first) -> its callers' job ids; stale ids are
  // skipped.
  using Queue = absl::btree_map<int32_t, FairQueue, std::greater<int32_t>>;

  std::unique_ptr<JobExecutor> executor_;
  JobExecutor* guest_ = nullptr;
  absl::flat_hash_set<uint64_t> guests_;  // Jobs running on guest_.
  CallerWeights weights_;
  Queue queue_;
  size_t queued_ = 0;  // Live entries in `queue_`.
  size_t stale_ = 0;   // Entries of jobs that ended while queued.
  int busy_ = 0;       // Slots started (a job or a chunk), not yet returned.
  uint64_t succeeded_ = 0, failed_ = 0, cancelled_ = 0;
  struct Gated {
    std::vector<JobRun> chunk;
    uint64_t ticket = 0;
  };
  std::deque<Gated> gated_;  // Claimed chunks, in claim order.
  size_t gated_jobs_ = 0;
  uint64_t gate_armed_ = 0;  // A wake-up is registered up to this ticket.
  // Moving average of a job's run time here (0: none ran yet): with the
  // journal's commit latency it sizes the claim-ahead window.
  absl::Duration run_time_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_LANE_H_
