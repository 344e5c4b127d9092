#include "server/scheduler/job_table.h"

#include <utility>

namespace jobd {

namespace {

// Idempotency keys are per owner: another caller's key finds nothing.
std::string IdempotencyKey(std::string_view owner, std::string_view key) {
  std::string k(owner);
  k.push_back('\0');
  k.append(key);
  return k;
}

}  // namespace

JobRecord& JobTable::Add(std::unique_ptr<JobRecord> job) {
  JobRecord& ref = *job;
  // A foreign job's key is its origin's (cluster mode).
  if (!ref.spec->idempotency_key().empty() &&
      ref.cluster != JobRecord::kForeign) {
    // Restored rows come by id: the newest job of a key keeps it.
    idempotency_[IdempotencyKey(*ref.owner, ref.spec->idempotency_key())] =
        ref.id;
  }
  if (ref.id >= next_id_) next_id_ = ref.id + 1;
  jobs_.emplace(ref.id, std::move(job));
  return ref;
}

void JobTable::Erase(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  DropKey(*it->second);
  jobs_.erase(it);
}

void JobTable::DropKey(const JobRecord& job) {
  const std::string& spec_key = job.spec->idempotency_key();
  if (spec_key.empty()) return;
  auto k = idempotency_.find(IdempotencyKey(*job.owner, spec_key));
  if (k != idempotency_.end() && k->second == job.id) idempotency_.erase(k);
}

JobRecord* JobTable::Find(uint64_t id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

JobRecord* JobTable::FindOwned(uint64_t id, std::string_view owner) const {
  JobRecord* job = Find(id);
  if (job == nullptr || (!owner.empty() && *job->owner != owner)) {
    return nullptr;
  }
  return job;
}

JobRecord* JobTable::FindByKey(const std::string& owner,
                               std::string_view key) const {
  auto it = idempotency_.find(IdempotencyKey(owner, key));
  return it == idempotency_.end() ? nullptr : Find(it->second);
}

std::vector<uint64_t> JobTable::LiveIds() const {
  std::vector<uint64_t> live;
  for (const auto& [id, job] : jobs_) {
    if (!IsTerminal(job->state)) live.push_back(id);
  }
  return live;
}

const std::string* JobTable::Intern(std::string_view owner) {
  return &*owners_.emplace(owner).first;
}

void JobTable::CountLive(const JobRecord& job) {
  const uint64_t bytes = SpecBytes(*job.spec);
  OwnerUsage& u = usage_[job.owner];
  ++u.live;
  u.live_bytes += bytes;
  ++live_;
  live_bytes_ += bytes;
}

void JobTable::CountEnded(const JobRecord& job) {
  const uint64_t bytes = SpecBytes(*job.spec);
  OwnerUsage& u = usage_[job.owner];
  --u.live;
  u.live_bytes -= bytes;
  --live_;
  live_bytes_ -= bytes;
}

}  // namespace jobd
