#include "server/scheduler/retention.h"

#include <algorithm>
#include <string>

#include "spdlog/spdlog.h"

namespace jobd {

Retention::Retention(JobTable& table, Journal* journal, Limits limits)
    : table_(table), journal_(journal), limits_(limits) {}

void Retention::Add(const JobRecord& job, OwnerUsage& usage) {
  // The journal set a restored end's size as it read it back.
  const uint64_t held = SpecBytes(*job.spec) + job.end->bytes;
  ended_.push_back(job.id);
  usage.ended.push_back(job.id);
  ++retained_;
  retained_bytes_ += held;
  usage.retained_bytes += held;
}

void Retention::Adopt(const JobRecord& job) {
  Add(job, table_.usage(job.owner));
}

void Retention::Retain(const JobRecord& job) {
  OwnerUsage& usage = table_.usage(job.owner);  // A stable reference.
  Add(job, usage);
  // `job` may be forgotten from here on.
  while (retained_ > limits_.max_count ||
         (limits_.max_bytes > 0 && retained_bytes_ > limits_.max_bytes)) {
    if (!EvictOldest()) break;
  }
  TrimOwner(usage, 0);
}

void Retention::Sweep(absl::Time now) {
  while (!ended_.empty()) {
    const JobRecord* job = table_.Find(ended_.front());
    if (job == nullptr) {  // Forgotten already (its owner's quota).
      ended_.pop_front();
      continue;
    }
    if (retained_ <= limits_.max_count &&
        (limits_.max_bytes == 0 || retained_bytes_ <= limits_.max_bytes) &&
        job->finish_time + limits_.ttl > now) {
      break;
    }
    ended_.pop_front();
    Evict(job->id);
  }
  RelieveJournal();
}

bool Retention::EvictOldest() {
  while (!ended_.empty()) {
    const uint64_t id = ended_.front();
    ended_.pop_front();
    if (table_.Find(id) != nullptr) {
      Evict(id);
      return true;
    }
  }
  return false;
}

void Retention::TrimOwner(OwnerUsage& usage, uint64_t more) {
  if (usage.max_bytes == 0) return;
  while (!usage.ended.empty() &&
         usage.live_bytes + usage.retained_bytes + more > usage.max_bytes) {
    const uint64_t id = usage.ended.front();
    if (table_.Find(id) ==
        nullptr) {  // Not expected: Evict keeps them in step.
      usage.ended.pop_front();
      continue;
    }
    Evict(id);  // Leaves its id in ended_, skipped later.
  }
}

void Retention::RelieveJournal() {
  if (journal_ == nullptr || retained_ == 0) return;
  const Journal::Usage u = journal_->usage();
  uint64_t to_free = 0;
  if (u.full) {
    // Writes fail for want of room: what is held (the live jobs, some not
    // written yet, and the retained ones) down to 3/4 of the cap, or at
    // least an eighth of it (SQLite's pages hold more than our count).
    if (u.write_errors == relieved_at_error_) return;  // Not retried yet.
    relieved_at_error_ = u.write_errors;
    const uint64_t held = table_.live_bytes() + retained_bytes_;
    const uint64_t target = u.max_bytes / 4 * 3;
    to_free =
        u.max_bytes == 0
            ? retained_bytes_ / 4  // The disk is full: a quarter.
            : std::max(u.max_bytes / 8, held > target ? held - target : 0);
  } else if (u.max_bytes > 0 && u.commits != relieved_at_commit_ &&
             u.used_bytes > u.max_bytes / 8 * 7) {
    to_free = u.used_bytes - u.max_bytes / 4 * 3;  // Down to 3/4.
    relieved_at_commit_ = u.commits;
  }
  if (to_free == 0) return;
  const uint64_t before = retained_bytes_;
  const size_t count = retained_;
  while (before - retained_bytes_ < to_free && EvictOldest()) {
  }
  spdlog::warn(
      "journal {}: {} of {} in use at the last commit{}; forgot the {} "
      "oldest ended job(s) ({}) early so that new jobs are not refused",
      u.full ? "full" : "nearly full", Bytes(u.used_bytes),
      u.max_bytes > 0 ? Bytes(u.max_bytes) : std::string("the disk"),
      u.full ? ", and writes fail" : "", count - retained_,
      Bytes(before - retained_bytes_));
}

void Retention::Evict(uint64_t id) {
  const JobRecord* job = table_.Find(id);
  if (job == nullptr) return;
  if (job->end != nullptr) {  // Retained (always, as it stands).
    const uint64_t held = SpecBytes(*job->spec) + job->end->bytes;
    OwnerUsage& usage = table_.usage(job->owner);
    usage.retained_bytes -= held;
    retained_bytes_ -= held;
    --retained_;
    // Its owner's oldest (both queues are in end order).
    if (!usage.ended.empty() && usage.ended.front() == id) {
      usage.ended.pop_front();
    } else if (auto e = std::find(usage.ended.begin(), usage.ended.end(), id);
               e != usage.ended.end()) {
      usage.ended.erase(e);
    }
  }
  if (journal_ != nullptr && !job->spec->in_memory()) journal_->Delete(id);
  if (on_forget_) on_forget_(*job);
  table_.Erase(id);
}

}  // namespace jobd
