// The Scheduler's jobs over time: the Waiting set and its one timer
// (delays, not_before, retry backoffs), queued jobs' start and total
// deadlines, and retries of failed runs (scheduler.h, retry_policy.h).
#include <algorithm>
#include <memory>
#include <utility>

#include "server/jobs/proto_time.h"
#include "server/scheduler/retry_policy.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {
namespace {

// Jobs moved from the Waiting set to their lanes per hold of the lock: a
// million due at once are queued in batches, other callers in between.
constexpr size_t kDueBatch = 4096;

std::string Format(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

}  // namespace

void Scheduler::Wait(Job& job, absl::Time due) {
  job.state = v1::JOB_STATE_WAITING;
  job.finish_time = due;
  waiting_.Add(job.id, job.finish_time);  // As the record rounds it.
  ArmWaiting();
}

void Scheduler::ArmWaiting() {
  const absl::Time next = waiting_.next();
  if (next == absl::InfiniteFuture()) return;  // An armed timer fires idle.
  if (waiting_timer_ != 0 && waiting_armed_ <= next) return;
  if (waiting_timer_ != 0) timers_.Cancel(waiting_timer_);
  waiting_armed_ = next;
  waiting_timer_ = timers_.Schedule(next, [this] { OnWaitingDue(); });
}

void Scheduler::OnWaitingDue() {
  After after;
  {
    absl::MutexLock lock(&mu_);
    waiting_timer_ = 0;
    waiting_armed_ = absl::InfiniteFuture();
    const absl::Time now = clock_.Now();
    std::array<bool, 4> touched = {false, false, false, false};
    for (uint64_t id : waiting_.TakeDue(now, kDueBatch)) {
      Job* job = table_.Find(id);
      if (job == nullptr || job->state != v1::JOB_STATE_WAITING) continue;
      if (Enqueue(*job, now, /*journal=*/true, after)) {
        touched[job->executor] = true;
      }
    }
    ArmWaiting();  // At once if more are due: the next batch.
    for (int i = 0; i < 4; ++i) {
      if (touched[i]) Dispatch(static_cast<v1::Executor>(i), after);
    }
  }
  after.Run(journal_);
}

std::shared_ptr<JobEnd> Scheduler::DeadlineEnd(const Job& job,
                                               absl::Time now) const {
  const v1::JobSpec& spec = *job.spec;
  const absl::Time due = FirstDue(spec, job.create_time);
  // (A shared job another node began has started, though not here.)
  if (job.attempts == 0 && job.start_time == absl::InfinitePast() &&
      now >= StartExpiry(spec, due)) {
    return MakeError(
        v1::JOB_STATE_FAILED, absl::StatusCode::kDeadlineExceeded,
        v1::ERROR_REASON_EXPIRED,
        fmt::format("not started within its start_deadline of {} after it "
                    "was due at {}; it never ran",
                    absl::FormatDuration(FromProto(spec.start_deadline())),
                    Format(due)));
  }
  if (now >= TotalExpiry(spec, due)) {
    return MakeError(
        v1::JOB_STATE_FAILED, absl::StatusCode::kDeadlineExceeded,
        v1::ERROR_REASON_DEADLINE_EXCEEDED,
        fmt::format("not ended within its total_deadline of {} after it was "
                    "due at {} ({} attempts started)",
                    absl::FormatDuration(FromProto(spec.total_deadline())),
                    Format(due), job.attempts));
  }
  return nullptr;
}

bool Scheduler::Enqueue(Job& job, absl::Time now, bool journal, After& after) {
  if (std::shared_ptr<JobEnd> end = DeadlineEnd(job, now)) {
    ++expired_;
    job.state = v1::JOB_STATE_QUEUED;  // Never ran now: no run time.
    Finish(job, std::move(end), after);
    return false;
  }
  job.state = v1::JOB_STATE_QUEUED;
  if (journal) JournalState(job);
  lanes_[job.executor].Push(job.spec->priority(), job.owner, job.id);
  const v1::JobSpec& spec = *job.spec;
  const absl::Time due = FirstDue(spec, job.create_time);
  const absl::Time deadline = std::min(
      job.attempts == 0 ? StartExpiry(spec, due) : absl::InfiniteFuture(),
      TotalExpiry(spec, due));
  if (job.timeout_timer != 0) timers_.Cancel(job.timeout_timer);
  job.timeout_timer = 0;
  if (deadline != absl::InfiniteFuture()) {
    const uint64_t id = job.id;
    job.timeout_timer =
        timers_.Schedule(deadline, [this, id] { OnQueuedDeadline(id); });
  }
  return true;
}

void Scheduler::OnQueuedDeadline(uint64_t id) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    if (job == nullptr || job->state != v1::JOB_STATE_QUEUED) return;
    job->timeout_timer = 0;
    const absl::Time now = clock_.Now();
    if (std::shared_ptr<JobEnd> end = DeadlineEnd(*job, now)) {
      ++expired_;
      // A claimed one has not begun: its claim is dropped at its turn.
      Abort(*job, CancelReason::kTimeout, std::move(end), after);
    } else if (const absl::Time total = TotalExpiry(
                   *job->spec, FirstDue(*job->spec, job->create_time));
               total != absl::InfiniteFuture()) {
      // Its start deadline passed, but it began on another node (a shared
      // job): its total deadline still holds.
      job->timeout_timer =
          timers_.Schedule(total, [this, id] { OnQueuedDeadline(id); });
    }
  }
  after.Run(journal_);
}

void Scheduler::RunReturned(Job& job) {
  if (!job.run_returning) return;
  job.run_returning = false;
  if (job.state != v1::JOB_STATE_WAITING) return;  // Ended meanwhile.
  waiting_.Add(job.id, job.finish_time);
  ArmWaiting();
}

bool Scheduler::RetryRun(Job& job, const JobEnd& end, bool stop_run,
                         After& after) {
  const v1::RetryPolicy& policy = job.spec->retry();
  if (MaxAttempts(policy) <= 1) return false;  // No history either.
  const absl::Time now = clock_.Now();
  v1::JobAttempt attempt;
  attempt.set_attempt(job.attempts);
  if (job.start_time != absl::InfinitePast()) {
    *attempt.mutable_start_time() = ToProtoTime(job.start_time);
  }
  *attempt.mutable_finish_time() = ToProtoTime(now);
  *attempt.mutable_error() = end.error();
  Job::Extras& extras = job.extras();
  extras.history = AppendAttempt(extras.history, attempt);
  if (job.attempts >= MaxAttempts(policy) ||
      !RetriesOn(policy, end.error().reason())) {
    return false;
  }
  const absl::Duration backoff =
      Backoff(policy, job.attempts, absl::Uniform(jitter_, 0.0, 1.0));
  if (backoff == absl::InfiniteDuration()) return false;
  const absl::Time next = now + backoff;
  // No attempt that would begin past the total deadline.
  if (next >= TotalExpiry(*job.spec, FirstDue(*job.spec, job.create_time))) {
    return false;
  }
  if (stop_run) {  // Timed out: still running. Waits for it to return.
    job.run->cancel.Cancel(CancelReason::kTimeout);
    lanes_[job.executor].CancelRun(job.id);
    job.run_returning = true;
  }
  if (job.timeout_timer != 0) {
    timers_.Cancel(job.timeout_timer);
    job.timeout_timer = 0;
  }
  --running_;
  ++retried_;
  if (job.run_returning) {
    job.state = v1::JOB_STATE_WAITING;  // Waits apart: RunReturned.
    job.finish_time = next;
  } else {
    Wait(job, next);
  }
  auto note = std::make_shared<RetryNote>();
  note->error = end.error();
  note->next_time = job.finish_time;
  note->attempt = job.attempts;
  Event e;
  e.type = v1::EVENT_TYPE_RETRYING;
  e.set_retry(std::move(note));
  Emit(job, std::move(e), after);  // Journals it WAITING, history and all.
  return true;
}

}  // namespace jobd
