// The Scheduler's limits by key: a keyed job acquires its key as it is
// taken off its lane, or is parked in it (key_limits.h); granted jobs go
// back to the front of their lanes; rate wake-ups; limits set by RPC,
// recorded in the journal (scheduler.h).
#include <utility>
#include <vector>

#include "server/scheduler/scheduler.h"
#include "spdlog/spdlog.h"

namespace jobd {

bool Scheduler::AcquireKey(Job& job) {
  if (keys_.holds(job.id)) return true;  // Granted while parked.
  KeyLimits::Out out;
  const bool go =
      keys_.Acquire(job.spec->concurrency_key(), job.id, job.spec->priority(),
                    job.executor, clock_.Now(), out);
  job.parked = !go;
  if (!out.empty()) ApplyKeys(out);
  return go;
}

void Scheduler::ReleaseKeySlow(uint64_t id) {
  KeyLimits::Out out;
  keys_.Release(id, clock_.Now(), out);
  if (!out.empty()) ApplyKeys(out);
}

void Scheduler::ApplyKeys(KeyLimits::Out& out) {
  std::vector<uint64_t> stray;
  for (const KeyLimits::Grant& grant : out.granted) {
    Job* job = table_.Find(grant.id);
    if (job == nullptr || !job->parked) {
      // Cannot be (a parked job leaves its key when it ends): the key is
      // given back rather than held forever.
      spdlog::error("key granted to job {}, which is not parked", grant.id);
      stray.push_back(grant.id);
      continue;
    }
    job->parked = false;
    lanes_[grant.lane].PushFront(grant.priority, job->owner, grant.id);
    key_dispatch_[grant.lane] = true;
  }
  for (auto& [key, when] : out.wakes) {
    timers_.Schedule(when, [this, key = std::move(key)] { OnKeyWake(key); });
  }
  for (uint64_t id : stray) ReleaseKey(id);
}

void Scheduler::DispatchKeyed(After& after) {
  if (key_dispatching_) return;  // The outer call goes on with the rest.
  key_dispatching_ = true;
  for (bool again = true; again;) {
    again = false;
    for (int i = 0; i < 4; ++i) {
      if (!key_dispatch_[i]) continue;
      key_dispatch_[i] = false;
      again = true;
      Dispatch(static_cast<v1::Executor>(i), after);
    }
  }
  key_dispatching_ = false;
}

void Scheduler::OnKeyWake(const std::string& key) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    KeyLimits::Out out;
    keys_.Woken(key, clock_.Now(), out);
    if (!out.empty()) ApplyKeys(out);
    DispatchKeyed(after);
  }
  after.Run(journal_);
}

void Scheduler::SetKeyLimit(std::string key, std::optional<KeyLimit> limit,
                            KeyLimitCallback done) {
  After after;
  absl::StatusOr<v1::KeyLimit> shown;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    KeyLimits::Out out;
    absl::Status set = keys_.SetRpc(key, limit, clock_.Now(), out);
    if (!set.ok()) {
      shown = set;
    } else {
      if (!out.empty()) ApplyKeys(out);
      if (journal_ != nullptr) {
        ticket = journal_->SetKeyLimit(
            {.key = key,
             .max_running = limit.has_value() ? limit->max_running : 0,
             .rate = limit.has_value() ? limit->rate : 0,
             .clear = !limit.has_value()});
      }
      shown = keys_.Show(key);
      DispatchKeyed(after);
    }
  }
  after.Run(journal_);
  if (!shown.ok() || ticket == 0) {
    done(std::move(shown));
    return;
  }
  WhenDurable(
      ticket,
      [this, shown = std::move(*shown), done = std::move(done)](bool durable) {
        done(durable ? absl::StatusOr<v1::KeyLimit>(shown) : NotDurable());
      },
      Journal::Wait::kFailFast);
}

std::vector<v1::KeyLimit> Scheduler::KeyLimitsNow() const {
  absl::MutexLock lock(&mu_);
  return keys_.List(1000);
}

}  // namespace jobd
