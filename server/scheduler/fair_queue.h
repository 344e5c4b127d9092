// FairQueue: the jobs of one (lane, priority), a FIFO queue per caller,
// and whose turn it is: weighted fair queuing between the callers, so that
// a caller who floods the queue cannot starve another (README: Fair share).
//
// Each caller with queued jobs (a flow) has a virtual time, its `pass`:
// the caller whose pass is lowest goes next (ties: the one queued first),
// and taking n of its jobs moves its pass on by n * kScale / weight. So
// over any stretch where callers stay queued, each gets starts in the
// ratio of its weight. The queue's virtual time (the pass of the latest
// pick) only grows; a caller that (re)joins starts at it, never below:
// a caller arriving late, or coming back after a pause, gets its share
// from then on and no burst of "saved up" turns. A caller whose queue
// empties keeps its pass (no queue: a few bytes) only while it is ahead
// of the virtual time, so that taking its one job the moment it is queued
// gains it nothing; it is dropped once the virtual time catches up, and
// everything is dropped with the queue once it is empty. Memory: one flow
// per caller with queued jobs, plus those few bytes for callers ahead.
//
// Cost: O(1) to queue a job of a caller that has a flow, O(log callers)
// to pick when several are queued. With a single caller queued (the case
// without authentication: everyone is "anonymous") no ordering is kept:
// it is a plain FIFO queue.
//
// Entries are job ids; whether one is still wanted is the visitor's to
// say (Take): a stale one (a job that ended while queued) is dropped
// without charging its caller.
//
// Thread-safety: none; a part of Lane, used under Scheduler::mu_.
// Ownership: refers to callers by their interned name (JobTable::Intern:
// stable pointers) and to jobs by id.
#ifndef JOBD_SERVER_SCHEDULER_FAIR_QUEUE_H_
#define JOBD_SERVER_SCHEDULER_FAIR_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"

namespace jobd {

// Callers' weights (--caller-weight NAME=W): 1 for a caller not named.
class CallerWeights {
 public:
  static constexpr uint32_t kMax = 1000;
  CallerWeights() = default;
  explicit CallerWeights(const std::map<std::string, uint32_t>& weights)
      : weights_(weights.begin(), weights.end()) {}
  uint32_t Of(const std::string& caller) const {
    if (weights_.empty()) return 1;
    auto it = weights_.find(caller);
    return it == weights_.end() ? 1 : it->second;
  }

 private:
  absl::flat_hash_map<std::string, uint32_t> weights_;
};

class FairQueue {
 public:
  using Caller = const std::string*;  // Interned.
  // Virtual time one job of a caller of weight 1 costs: divisible by
  // every weight up to 16, so small ratios are exact.
  static constexpr uint64_t kScale = 720720;

  FairQueue() = default;
  // Movable (flows are nodes: their addresses stay), not copyable.
  FairQueue(FairQueue&&) = default;
  FairQueue& operator=(FairQueue&&) = default;

  // Queues job `id` of `caller` (of `weight`, used if it has no flow yet)
  // at the back of its queue.
  void Push(Caller caller, uint32_t weight, uint64_t id);
  // Queues `id` at the front of its caller's queue: a job taken earlier
  // (and charged) that comes back (granted its concurrency key); its
  // caller gets that charge back, never below the virtual time.
  void PushFront(Caller caller, uint32_t weight, uint64_t id);
  bool empty() const { return entries_ == 0; }
  size_t size() const { return entries_; }  // Entries, stale ones too.

  // What Take's visitor says of the head of the chosen caller's queue.
  enum class Verdict {
    kSkip,      // A stale entry: drop it, offer the next.
    kTake,      // Take it, offer the next of the same caller.
    kTakeLast,  // Take it, and stop.
    kStop,      // Leave it queued, and stop.
  };
  // Offers the jobs of the caller whose turn it is to `visit`, in order,
  // until it stops or that caller's queue is empty; charges the caller
  // for those taken. When all it offered were skipped (none taken) and
  // it ran out, goes on with the next caller. Returns how many were
  // taken (0: nothing left but what `visit` stopped at, or empty).
  size_t Take(absl::FunctionRef<Verdict(uint64_t)> visit);

  // Drops the entries `drop` says are stale.
  void RemoveIf(absl::FunctionRef<bool(uint64_t)> drop);

  // Changes the weight of each caller with a flow (a reload).
  void Reweigh(const CallerWeights& weights);

  // Callers with queued entries, and those kept for being ahead.
  size_t active() const { return active_; }
  size_t flows() const { return flows_.size(); }
  // The queue's virtual time, and `caller`'s pass (0 if it has no flow):
  // for tests.
  uint64_t virtual_time() const { return vtime_; }
  uint64_t pass(Caller caller) const;
  // Entries queued per caller (stale ones too), for stats.
  template <typename F>
  void ForEachCaller(F f) const {
    for (const auto& [caller, flow] : flows_) {
      if (!flow.ids.empty()) f(caller, flow.ids.size());
    }
  }

 private:
  using Key = std::pair<uint64_t, uint64_t>;  // (pass, seq)
  struct Flow {
    Caller caller = nullptr;
    std::deque<uint64_t> ids;
    uint64_t pass = 0;
    uint64_t seq = 0;     // When it (re)joined: ties go to the earlier.
    uint64_t stride = 0;  // kScale / weight.
    bool active = false;  // Has entries: in order_ (or solo_).
  };

  Flow& FlowOf(Caller caller, uint32_t weight);
  // The flow's queue is no longer empty: it joins at the virtual time, or
  // at its pass less `refund` if that is later.
  void Activate(Flow& flow, uint64_t refund);
  // The flow's queue emptied: kept idle if ahead of the virtual time.
  void Deactivate(Flow& flow);
  // Moves `flow` (active, maybe just emptied) on by `n` jobs.
  void Charge(Flow& flow, size_t n);
  // Drops the idle flows the virtual time caught up with.
  void Reap();
  void Forget(Flow& flow);

  absl::node_hash_map<Caller, Flow> flows_;  // Stable addresses.
  // Active flows by (pass, seq) while two or more are active; with one,
  // it is solo_ and this is empty (no ordering to keep).
  absl::btree_map<Key, Flow*> order_;
  Flow* solo_ = nullptr;
  absl::btree_map<Key, Flow*> idle_;  // Flows without entries, ahead.
  Flow* last_ = nullptr;              // The flow of the latest Push.
  size_t active_ = 0;
  size_t entries_ = 0;
  uint64_t vtime_ = 0;
  uint64_t next_seq_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_FAIR_QUEUE_H_
