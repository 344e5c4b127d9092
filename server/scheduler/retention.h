// Retention: which ended jobs jobd keeps for GetJob, ListJobs and late
// watchers, and for how long. Ended jobs are retained in the order they
// ended and forgotten oldest first: past retention_ttl (at a sweep), past
// max_retained or max_retained_bytes (their specs and results or errors),
// past their owner's byte quota (OwnerQuota::max_bytes, with the owner's
// live jobs), and while the journal nears its cap (7/8 of it in use, or
// writes failing for want of room), so that new jobs need not wait for
// the TTL. Forgetting a job deletes its journal row and frees its
// idempotency key.
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_,
// called only with it held.
// Ownership: refers to the scheduler's JobTable (which it forgets jobs
// from) and to the journal (optional); both outlive it.
#ifndef JOBD_SERVER_SCHEDULER_RETENTION_H_
#define JOBD_SERVER_SCHEDULER_RETENTION_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>

#include "absl/time/time.h"
#include "server/journal/journal.h"
#include "server/scheduler/job_table.h"

namespace jobd {

class Retention {
 public:
  struct Limits {
    absl::Duration ttl = absl::Hours(1);  // SchedulerOptions::retention_ttl.
    size_t max_count = 100000;            // ::max_retained.
    uint64_t max_bytes = 0;               // ::max_retained_bytes; 0: none.
  };
  Retention(JobTable& table, Journal* journal, Limits limits);

  // Live reload: a lower limit applies at the next Sweep (or Retain).
  void SetLimits(Limits limits) { limits_ = limits; }
  // Called with each job it forgets, before the job leaves the table (what
  // else keeps something per job frees it there).
  void set_on_forget(std::function<void(const JobRecord& job)> fn) {
    on_forget_ = std::move(fn);
  }

  // `job` ended: it is retained (its spec and end count against the
  // budgets), then the oldest retained jobs are forgotten while over the
  // count or byte limits, and the oldest of its owner's while over its
  // quota. `job` itself may be forgotten by then.
  void Retain(const JobRecord& job);
  // Restore: `job` ended before the restart, and is retained as it was.
  // Call in end order; nothing is forgotten until Sweep.
  void Adopt(const JobRecord& job);
  // Forgets the retained jobs past the TTL at `now` or over the limits,
  // then relieves the journal (RelieveJournal).
  void Sweep(absl::Time now);
  // Forgets `usage`'s oldest retained jobs while what its jobs hold, plus
  // `more`, is over its max_bytes.
  void TrimOwner(OwnerUsage& usage, uint64_t more);
  // Forgets the oldest retained jobs while the journal nears its cap, or
  // fails for want of room (once per failed write: the journal retries
  // with the deletes first).
  void RelieveJournal();

  size_t retained() const { return retained_; }
  uint64_t retained_bytes() const { return retained_bytes_; }

 private:
  // Counts `job` as retained.
  void Add(const JobRecord& job, OwnerUsage& usage);
  // Forgets a retained job (and its journal row).
  void Evict(uint64_t id);
  // Forgets the oldest retained job; false if there is none.
  bool EvictOldest();

  JobTable& table_;
  Journal* const journal_;  // Optional.
  Limits limits_;
  std::function<void(const JobRecord& job)> on_forget_;
  // Retained jobs in end order; also ids of some forgotten by their
  // owner's quota (TrimOwner), skipped.
  std::deque<uint64_t> ended_;
  size_t retained_ = 0;
  uint64_t retained_bytes_ = 0;  // Specs and ends.
  // The journal's Usage::commits and ::write_errors when RelieveJournal
  // last acted on them.
  uint64_t relieved_at_commit_ = 0;
  uint64_t relieved_at_error_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_RETENTION_H_
