#include "tests/fakes/fake_executor.h"

#include <algorithm>
#include <utility>

#include "gtest/gtest.h"
#include "workers/executor/run_sync_task.h"

namespace jobd {

FakeExecutor::FakeExecutor(v1::Executor kind, int capacity,
                           ExecutorListener& listener, int max_chunk)
    : kind_(kind),
      max_chunk_(max_chunk),
      listener_(listener),
      capacity_(capacity) {}

int FakeExecutor::capacity() const {
  absl::MutexLock lock(&mu_);
  return capacity_;
}

void FakeExecutor::Start(JobRun run) {
  std::vector<JobRun> runs;
  runs.push_back(std::move(run));
  // on_start first: a test that awaits the start sees what it recorded.
  OnStart(runs);
  absl::MutexLock lock(&mu_);
  Take(std::move(runs));
}

void FakeExecutor::OnStart(const std::vector<JobRun>& runs) {
  std::function<void(const JobRun&)> on_start;
  {
    absl::MutexLock lock(&mu_);
    on_start = on_start_;
  }
  if (on_start) {
    for (const JobRun& run : runs) on_start(run);
  }
}

void FakeExecutor::StartChunk(std::vector<JobRun> runs) {
  OnStart(runs);
  absl::MutexLock lock(&mu_);
  if (max_chunk_ <= 1) ADD_FAILURE() << "StartChunk with max_chunk() 1";
  if (runs.size() < 2 || runs.size() > static_cast<size_t>(max_chunk_)) {
    ADD_FAILURE() << "a chunk of " << runs.size() << " jobs (max_chunk() "
                  << max_chunk_ << ")";
  }
  Take(std::move(runs));
}

void FakeExecutor::Take(std::vector<JobRun> runs) {
  if (shut_down_) ADD_FAILURE() << "a start after Shutdown()";
  if (busy_ >= capacity_) {
    ADD_FAILURE() << "a start with all " << capacity_ << " slots busy";
  }
  ++busy_;
  const uint64_t chunk = starts_.size();
  std::vector<uint64_t>& ids = starts_.emplace_back();
  chunk_left_.push_back(runs.size());
  for (JobRun& run : runs) {
    const uint64_t id = run.job_id;
    ids.push_back(id);
    if (jobs_.contains(id) && !jobs_.at(id).ended) {
      ADD_FAILURE() << "job " << id << " started while it runs";
    }
    jobs_.insert_or_assign(id, Started{.run = std::move(run), .chunk = chunk});
    order_.push_back(id);
  }
}

void FakeExecutor::Cancel(uint64_t job_id) {
  absl::MutexLock lock(&mu_);
  cancelled_.push_back(job_id);
}

bool FakeExecutor::Resize(int slots) {
  absl::MutexLock lock(&mu_);
  capacity_ = slots;
  return true;
}

bool FakeExecutor::Shutdown(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (const auto& [id, started] : jobs_) {
    if (!started.ended) return false;
  }
  return true;
}

void FakeExecutor::set_on_start(std::function<void(const JobRun&)> fn) {
  absl::MutexLock lock(&mu_);
  on_start_ = std::move(fn);
}

std::vector<uint64_t> FakeExecutor::running() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (uint64_t id : order_) {
    const Started& started = jobs_.at(id);
    if (!started.ended && std::find(out.begin(), out.end(), id) == out.end()) {
      out.push_back(id);
    }
  }
  return out;
}

std::vector<std::vector<uint64_t>> FakeExecutor::starts() const {
  absl::MutexLock lock(&mu_);
  return starts_;
}

std::vector<uint64_t> FakeExecutor::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

std::optional<JobRun> FakeExecutor::run(uint64_t job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.run;
}

int FakeExecutor::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

void FakeExecutor::End(uint64_t job_id, JobOutcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || it->second.ended) {
      ADD_FAILURE() << "job " << job_id << " ended but it is not running";
      return;
    }
    it->second.ended = true;
    outcome.frees_slot = --chunk_left_[it->second.chunk] == 0;
    if (outcome.frees_slot) --busy_;
  }
  listener_.OnJobFinished(job_id, std::move(outcome));
}

void FakeExecutor::Succeed(uint64_t job_id, TaskOutput output,
                           absl::Duration wall) {
  JobOutcome outcome;
  outcome.output = std::move(output);
  outcome.wall_time = wall;
  End(job_id, std::move(outcome));
}

void FakeExecutor::Fail(uint64_t job_id, absl::Status status,
                        v1::ErrorReason reason) {
  JobOutcome outcome;
  outcome.status = std::move(status);
  outcome.reason = reason;
  End(job_id, std::move(outcome));
}

void FakeExecutor::Progress(uint64_t job_id, double fraction,
                            std::string message) {
  listener_.OnJobProgress(job_id, fraction, message);
}

bool FakeExecutor::AwaitStart(uint64_t job_id, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto started = [this, job_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return jobs_.contains(job_id);
  };
  return mu_.AwaitWithTimeout(absl::Condition(&started), timeout);
}

bool FakeExecutor::runs_trivial() const {
  absl::MutexLock lock(&mu_);
  return runs_trivial_;
}

void FakeExecutor::set_runs_trivial(bool yes) {
  absl::MutexLock lock(&mu_);
  runs_trivial_ = yes;
}

void FakeExecutor::StartTrivial(std::vector<JobRun> runs) {
  absl::MutexLock lock(&mu_);
  if (!runs_trivial_) ADD_FAILURE() << "StartTrivial, runs_trivial() false";
  if (shut_down_) ADD_FAILURE() << "StartTrivial after Shutdown()";
  for (const JobRun& run : runs) {
    if (!run.task->trivial)
      ADD_FAILURE() << "job " << run.job_id << ": not trivial";
  }
  trivial_.push_back(std::move(runs));
}

std::vector<std::vector<uint64_t>> FakeExecutor::trivial_batches() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::vector<uint64_t>> batches;
  for (const std::vector<JobRun>& batch : trivial_) {
    std::vector<uint64_t>& ids = batches.emplace_back();
    for (const JobRun& run : batch) ids.push_back(run.job_id);
  }
  return batches;
}

bool FakeExecutor::AwaitTrivialBatches(size_t count,
                                       absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto came = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return trivial_.size() >= count;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&came), timeout);
}

void FakeExecutor::FinishTrivial() {
  for (;;) {
    std::vector<JobRun> batch;
    {
      absl::MutexLock lock(&mu_);
      if (trivial_finished_ == trivial_.size()) return;
      batch = trivial_[trivial_finished_++];
    }
    std::vector<FinishedJob> finished = RunTrivialTasks(batch, listener_);
    listener_.OnJobsFinished(std::span<FinishedJob>(finished));
  }
}

}  // namespace jobd
