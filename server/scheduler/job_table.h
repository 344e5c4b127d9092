// JobTable: the scheduler's job records by id (ordered, so ListJobs pages
// without sorting), by idempotency key (per owner), and what each owner's
// jobs hold (OwnerUsage, for the per-caller quotas), with the totals of
// the live jobs. It stores; it decides nothing (admission is the
// Scheduler's, forgetting ended jobs Retention's).
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_,
// called only with it held.
// Ownership: owns the records and the interned owner names (stable
// pointers, one per caller ever seen).
#ifndef JOBD_SERVER_SCHEDULER_JOB_TABLE_H_
#define JOBD_SERVER_SCHEDULER_JOB_TABLE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/container/node_hash_set.h"
#include "server/scheduler/job_record.h"

namespace jobd {

// What one owner's jobs hold (OwnerQuota).
struct OwnerUsage {
  size_t live = 0;              // Jobs not ended.
  uint64_t live_bytes = 0;      // Their specs.
  uint64_t retained_bytes = 0;  // Specs and ends of its retained jobs.
  uint64_t max_bytes = 0;       // OwnerQuota::max_bytes, as last given.
  std::deque<uint64_t> ended;   // Its retained jobs, in end order.
};

class JobTable {
 public:
  using Map = absl::btree_map<uint64_t, std::unique_ptr<JobRecord>>;

  // The id the next new job gets.
  uint64_t NextId() { return next_id_++; }
  // Ids up to `id` were handed out before (a restart): none is given again.
  void SkipIdsThrough(uint64_t id) {
    if (id >= next_id_) next_id_ = id + 1;
  }
  // Adds `job` (its id from NextId, or restored: ids carry on after it)
  // and its idempotency key, if its spec has one (not a foreign job's).
  JobRecord& Add(std::unique_ptr<JobRecord> job);
  // Forgets a job and its idempotency key.
  void Erase(uint64_t id);
  // Forgets the job's idempotency key (if it still names the job): the
  // key is found elsewhere (a mirror of another node's job).
  void DropKey(const JobRecord& job);

  JobRecord* Find(uint64_t id) const;
  // The job if it exists and belongs to `owner` (any, if empty).
  JobRecord* FindOwned(uint64_t id, std::string_view owner) const;
  // The job `owner` submitted with idempotency key `key`, if any.
  JobRecord* FindByKey(const std::string& owner, std::string_view key) const;
  const Map& jobs() const { return jobs_; }
  // Ids of the jobs not ended, in id order (collected first: ending one
  // may make retention forget others).
  std::vector<uint64_t> LiveIds() const;

  // Owner names, interned: stable pointers, as many as callers ever seen.
  const std::string* Intern(std::string_view owner);
  OwnerUsage& usage(const std::string* owner) { return usage_[owner]; }

  // A job becomes live (admitted or restored) or ends: counts its spec.
  void CountLive(const JobRecord& job);
  void CountEnded(const JobRecord& job);
  size_t live() const { return live_; }
  uint64_t live_bytes() const { return live_bytes_; }

 private:
  Map jobs_;
  absl::flat_hash_map<std::string, uint64_t> idempotency_;
  absl::node_hash_set<std::string> owners_;
  absl::node_hash_map<const std::string*, OwnerUsage> usage_;
  uint64_t next_id_ = 1;
  size_t live_ = 0;          // Jobs not ended.
  uint64_t live_bytes_ = 0;  // Their specs.
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_JOB_TABLE_H_
