#include "server/scheduler/lane.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace jobd {

void Lane::SetCallerWeights(CallerWeights weights) {
  weights_ = std::move(weights);
  for (auto& [priority, callers] : queue_) callers.Reweigh(weights_);
}

void Lane::Push(int32_t priority, const std::string* caller, uint64_t id) {
  queue_[priority].Push(caller, weights_.Of(*caller), id);
  ++queued_;
}

void Lane::PushFront(int32_t priority, const std::string* caller, uint64_t id) {
  queue_[priority].PushFront(caller, weights_.Of(*caller), id);
  ++queued_;
}

void Lane::Unqueue(uint64_t id,
                   absl::FunctionRef<bool(uint64_t)> still_queued) {
  --queued_;  // Its entry is now stale: dropped lazily, or here when the
  ++stale_;   // stale ones outnumber the live ones.
  if (stale_ > 1024 && stale_ > queued_) Compact(id, still_queued);
}

void Lane::Compact(uint64_t gone,
                   absl::FunctionRef<bool(uint64_t)> still_queued) {
  for (auto bucket = queue_.begin(); bucket != queue_.end();) {
    bucket->second.RemoveIf(
        [&](uint64_t id) { return id == gone || !still_queued(id); });
    bucket = bucket->second.empty() ? queue_.erase(bucket) : std::next(bucket);
  }
  stale_ = 0;
}

std::vector<JobRecord*> Lane::TakeChunk(
    absl::FunctionRef<JobRecord*(uint64_t)> queued_job) {
  using Verdict = FairQueue::Verdict;
  std::vector<JobRecord*> chunk;
  const size_t max_chunk = static_cast<size_t>(executor_->max_chunk());
  size_t limit = 1;
  auto visit = [&](uint64_t id) {
    JobRecord* job = queued_job(id);
    if (job == nullptr) {  // Ended while queued.
      --stale_;
      return Verdict::kSkip;
    }
    // A job that holds a pool slot on a guest executor travels alone, as
    // does a keyed one (its key is acquired for it alone).
    const size_t chunksize =
        (guest_ != nullptr && job->spec.task()->holds_pool_slot) ||
                !job->spec->concurrency_key().empty()
            ? 1
            : std::min<size_t>(std::max<uint32_t>(job->spec->chunksize(), 1),
                               max_chunk);
    if (chunk.empty()) {
      limit = chunksize;
    } else if (chunksize <= 1) {
      return Verdict::kStop;  // It wants to travel alone.
    } else {
      limit = std::min(limit, chunksize);
      if (chunk.size() >= limit) return Verdict::kStop;
    }
    --queued_;
    chunk.push_back(job);
    return chunk.size() >= limit ? Verdict::kTakeLast : Verdict::kTake;
  };
  // The highest priority first; the chunk comes from one caller's queue.
  while (queued_ > 0 && chunk.empty() && !queue_.empty()) {
    auto bucket = queue_.begin();
    bucket->second.Take(visit);
    if (bucket->second.empty()) queue_.erase(bucket);
  }
  return chunk;
}

bool Lane::HasRoom(int capacity, bool gate, size_t window) const {
  if (!gate) return busy_ < capacity;
  return static_cast<size_t>(busy_) + gated_jobs_ <
         static_cast<size_t>(capacity) + window;
}

int Lane::FreeSlots() const {
  return std::max<int>(0, executor_->capacity() - busy_ -
                              static_cast<int>(gated_jobs_ + queued_));
}

void Lane::Hand(std::vector<JobRun> chunk) {
  ++busy_;
  if (chunk.size() == 1 && guest_ != nullptr &&
      chunk.front().task->holds_pool_slot) {
    guests_.insert(chunk.front().job_id);
    guest_->Start(std::move(chunk.front()));
  } else if (chunk.size() == 1) {
    executor_->Start(std::move(chunk.front()));
  } else {
    executor_->StartChunk(std::move(chunk));
  }
}

void Lane::CancelRun(uint64_t id) {
  (guests_.contains(id) ? guest_ : executor_.get())->Cancel(id);
}

void Lane::Returned(const JobOutcome& outcome) {
  if (outcome.frees_slot) --busy_;
  if (outcome.wall_time > absl::ZeroDuration()) {
    run_time_ = run_time_ == absl::ZeroDuration()
                    ? outcome.wall_time
                    : (run_time_ * 7 + outcome.wall_time) / 8;
  }
}

void Lane::Claim(std::vector<JobRun> chunk, uint64_t ticket) {
  gated_jobs_ += chunk.size();
  gated_.push_back({std::move(chunk), ticket});
}

std::optional<std::vector<JobRun>> Lane::TakeDurable(int capacity,
                                                     uint64_t durable) {
  if (busy_ >= capacity || gated_.empty() || gated_.front().ticket > durable) {
    return std::nullopt;
  }
  std::vector<JobRun> chunk = std::move(gated_.front().chunk);
  gated_.pop_front();
  gated_jobs_ -= chunk.size();
  return chunk;
}

uint64_t Lane::ArmGate(uint64_t durable) {
  if (gated_.empty() || gated_.front().ticket <= durable ||
      gated_.front().ticket <= gate_armed_) {
    return 0;
  }
  gate_armed_ = gated_.front().ticket;
  return gate_armed_;
}

size_t Lane::Window(int capacity, absl::Duration commit_latency,
                    size_t max) const {
  // Little's law: to keep `capacity` slots busy with jobs of `run_time`
  // while each claim takes `latency` to become durable, about
  // capacity * latency / run_time claims must be under way; twice that,
  // as commit intervals vary. None for jobs longer than a commit: a slot
  // then waits for a commit rarely, and a job claimed ahead of a free slot
  // could be overtaken by a higher priority one that arrives later.
  if (run_time_ == absl::ZeroDuration() || run_time_ >= commit_latency) {
    return 0;
  }
  const double ahead =
      2.0 * capacity *
      absl::FDivDuration(commit_latency,
                         std::max(run_time_, absl::Nanoseconds(100)));
  return static_cast<size_t>(std::min<double>(max, std::ceil(ahead)));
}

void Lane::CountEnd(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      ++succeeded_;
      break;
    case v1::JOB_STATE_CANCELLED:
      ++cancelled_;
      break;
    default:
      ++failed_;
      break;
  }
}

}  // namespace jobd
