#include "client/future.h"

#include <deque>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "client/internal/future_state.h"
#include "client/json.h"
#include "spdlog/spdlog.h"

namespace jobd::client {

absl::Status ErrorToStatus(const v1::JobError& error) {
  int code = error.code();
  if (code <= 0 ||
      code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<int>(absl::StatusCode::kUnknown);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), error.message());
}

absl::Status JobOutcome::status() const {
  if (ok()) return absl::OkStatus();
  return ErrorToStatus(error);
}

namespace internal {

absl::Mutex& FutureMutex(uint64_t tag) {
  static constexpr size_t kStripes = 64;
  static absl::Mutex* const mutexes = new absl::Mutex[kStripes];
  return mutexes[tag % kStripes];
}

void RunCallback(const std::function<void(const Future&)>& callback,
                 const Future& future) {
  try {
    callback(future);
  } catch (const std::exception& e) {
    spdlog::error("jobd client: a future's done callback threw: {}", e.what());
  } catch (...) {
    spdlog::error(
        "jobd client: a future's done callback threw a non-std "
        "exception");
  }
}

v1::JobState TerminalState(v1::EventType type) {
  switch (type) {
    case v1::EVENT_TYPE_SUCCEEDED:
      return v1::JOB_STATE_SUCCEEDED;
    case v1::EVENT_TYPE_FAILED:
      return v1::JOB_STATE_FAILED;
    case v1::EVENT_TYPE_CANCELLED:
      return v1::JOB_STATE_CANCELLED;
    default:
      return v1::JOB_STATE_UNSPECIFIED;
  }
}

void FutureState::Update(const v1::JobEvent& event) {
  absl::MutexLock lock(&mu);
  if (done) return;
  switch (event.type()) {
    case v1::EVENT_TYPE_ACCEPTED:
      has_job = true;
      outcome.job_id = event.job_id();
      if (event.has_time()) {  // (Else not checked: FollowJob.)
        accepted_at = FromProtoTime(event.time());
      }
      outcome.executor = event.executor();
      if (state == v1::JOB_STATE_UNSPECIFIED) state = v1::JOB_STATE_QUEUED;
      break;
    case v1::EVENT_TYPE_STARTED:
      state = v1::JOB_STATE_RUNNING;
      if (event.executor() != v1::EXECUTOR_UNSPECIFIED) {
        outcome.executor = event.executor();
      }
      break;
    case v1::EVENT_TYPE_PROGRESS:
      progress = event.progress();
      break;
    default:
      break;
  }
}

void FutureState::CompleteFromEvent(const std::shared_ptr<FutureState>& self,
                                    v1::JobEvent* event) {
  if (event->type() == v1::EVENT_TYPE_REJECTED) {
    absl::Status status = ErrorToStatus(event->error());
    Complete(self, std::move(status), JobOutcome{}, false);
    return;
  }
  JobOutcome outcome;
  outcome.job_id = event->job_id();
  outcome.state = TerminalState(event->type());
  outcome.executor = event->executor();
  if (outcome.state == v1::JOB_STATE_SUCCEEDED) {
    outcome.result.Swap(event->mutable_result());
  } else {
    outcome.error.Swap(event->mutable_error());
  }
  Complete(self, absl::OkStatus(), std::move(outcome), true);
}

void FutureState::CompleteWithError(const std::shared_ptr<FutureState>& self,
                                    absl::Status status) {
  Complete(self, std::move(status), JobOutcome{}, false);
}

Future FutureState::Failed(std::shared_ptr<const Core> core, uint64_t tag,
                           absl::Status status) {
  auto state = std::make_shared<FutureState>(std::move(core), tag);
  CompleteWithError(state, std::move(status));
  return Future(std::move(state));
}

void FutureState::Complete(const std::shared_ptr<FutureState>& self,
                           absl::Status status, JobOutcome outcome,
                           bool has_outcome) {
  std::vector<std::function<void(const Future&)>> callbacks;
  {
    absl::MutexLock lock(&self->mu);
    if (self->done) return;
    self->done = true;
    self->status = std::move(status);
    if (has_outcome) {
      if (outcome.job_id.empty()) outcome.job_id = self->outcome.job_id;
      if (outcome.executor == v1::EXECUTOR_UNSPECIFIED) {
        outcome.executor = self->outcome.executor;
      }
      self->outcome = std::move(outcome);
      self->state = self->outcome.state;
      self->has_job = !self->outcome.job_id.empty();
    }
    callbacks.swap(self->callbacks);
  }
  if (callbacks.empty()) return;
  const Future future(self);
  for (const auto& callback : callbacks) RunCallback(callback, future);
}

// Collects the futures of one AsCompleted/Wait call as they complete. Done
// callbacks hold it weakly, so an abandoned range costs nothing later.
class AsCompletedState {
 public:
  static std::shared_ptr<AsCompletedState> Watch(std::vector<Future> futures) {
    auto self = std::make_shared<AsCompletedState>();
    absl::flat_hash_set<const FutureState*> seen;
    std::vector<Future> unique;
    unique.reserve(futures.size());
    for (Future& f : futures) {
      if (f.state_ == nullptr) {
        // Invalid handles count as done at once.
        absl::MutexLock lock(&self->mu_);
        self->done_.push_back(std::move(f));
        continue;
      }
      if (seen.insert(f.state_.get()).second) unique.push_back(std::move(f));
    }
    {
      absl::MutexLock lock(&self->mu_);
      self->pending_ = unique.size();
    }
    std::weak_ptr<AsCompletedState> weak = self;
    for (const Future& f : unique) {
      f.Then([weak](const Future& done) {
        if (auto s = weak.lock()) s->Add(done);
      });
    }
    return self;
  }

  void Add(const Future& f) {
    absl::MutexLock lock(&mu_);
    --pending_;
    done_.push_back(f);
  }

  // Pops the next completed future, waiting until `deadline`.
  bool Pop(absl::Time deadline, Future* out) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !done_.empty() || (pending_ == 0 && done_.empty());
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    if (done_.empty()) return false;
    *out = std::move(done_.front());
    done_.pop_front();
    return true;
  }

  size_t remaining() const {
    absl::MutexLock lock(&mu_);
    return pending_ + done_.size();
  }

  bool all_yielded() const {
    absl::MutexLock lock(&mu_);
    return pending_ == 0 && done_.empty();
  }

 private:
  mutable absl::Mutex mu_;
  std::deque<Future> done_ ABSL_GUARDED_BY(mu_);  // Completed, not yet popped.
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;       // Not yet completed.
};

}  // namespace internal

// --- Future ------------------------------------------------------------

namespace {

absl::Status InvalidFuture() {
  return absl::FailedPreconditionError("invalid (default-constructed) Future");
}

}  // namespace

uint64_t Future::client_tag() const {
  return state_ == nullptr ? 0 : state_->tag;
}

absl::StatusOr<std::string> Future::job_id(absl::Duration timeout) const {
  if (state_ == nullptr) return InvalidFuture();
  internal::FutureState& s = *state_;
  absl::MutexLock lock(&s.mu);
  auto ready = [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    return s.has_job || s.done;
  };
  if (!s.mu.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("timed out after ", absl::FormatDuration(timeout),
                     " waiting for jobd to accept the job"));
  }
  if (s.has_job) return s.outcome.job_id;
  return s.status;
}

absl::Time Future::accepted_at() const {
  if (state_ == nullptr) return absl::InfinitePast();
  absl::MutexLock lock(&state_->mu);
  return state_->accepted_at;
}

absl::StatusOr<JobOutcome> Future::Get(absl::Duration timeout) const {
  if (state_ == nullptr) return InvalidFuture();
  internal::FutureState& s = *state_;
  absl::MutexLock lock(&s.mu);
  if (!s.mu.AwaitWithTimeout(absl::Condition(&s.done), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "timed out after ", absl::FormatDuration(timeout), " waiting for job ",
        s.has_job ? s.outcome.job_id : std::string("(not yet accepted)"),
        " to end; it keeps going"));
  }
  if (!s.status.ok()) return s.status;
  return s.outcome;
}

bool Future::Wait(absl::Duration timeout) const {
  if (state_ == nullptr) return true;
  absl::MutexLock lock(&state_->mu);
  return state_->mu.AwaitWithTimeout(absl::Condition(&state_->done), timeout);
}

bool Future::done() const {
  if (state_ == nullptr) return true;
  absl::MutexLock lock(&state_->mu);
  return state_->done;
}

bool Future::failed() const {
  if (state_ == nullptr) return true;
  absl::MutexLock lock(&state_->mu);
  return state_->done && (!state_->status.ok() || !state_->outcome.ok());
}

v1::JobState Future::state() const {
  if (state_ == nullptr) return v1::JOB_STATE_UNSPECIFIED;
  absl::MutexLock lock(&state_->mu);
  return state_->state;
}

std::optional<v1::Progress> Future::progress() const {
  if (state_ == nullptr) return std::nullopt;
  absl::MutexLock lock(&state_->mu);
  return state_->progress;
}

void Future::Then(std::function<void(const Future&)> callback) const {
  if (state_ == nullptr || !callback) return;
  {
    absl::MutexLock lock(&state_->mu);
    if (!state_->done) {
      state_->callbacks.push_back(std::move(callback));
      return;
    }
  }
  internal::RunCallback(callback, *this);
}

absl::StatusOr<v1::CancelJobResponse> Future::Cancel() const {
  if (state_ == nullptr) return InvalidFuture();
  if (state_->core == nullptr) {  // Failed before it had a job (chord.h).
    return job_id(absl::ZeroDuration()).status();
  }
  absl::StatusOr<std::string> id =
      job_id(internal::CoreRpcTimeout(*state_->core));
  if (!id.ok()) return id.status();
  return internal::CoreCancelJob(*state_->core, *id);
}

// --- AsCompleted / Wait -----------------------------------------------------

AsCompletedRange::AsCompletedRange(std::vector<Future> futures,
                                   absl::Time deadline)
    : state_(internal::AsCompletedState::Watch(std::move(futures))),
      deadline_(deadline) {}

AsCompletedRange::AsCompletedRange(AsCompletedRange&&) noexcept = default;
AsCompletedRange& AsCompletedRange::operator=(AsCompletedRange&&) noexcept =
    default;
AsCompletedRange::~AsCompletedRange() = default;

bool AsCompletedRange::Next(Future* out) {
  if (state_ == nullptr) return false;
  if (state_->Pop(deadline_, out)) return true;
  if (!state_->all_yielded()) {
    status_ = absl::DeadlineExceededError(absl::StrCat(
        state_->remaining(), " future(s) not done when AsCompleted timed out"));
  }
  return false;
}

size_t AsCompletedRange::remaining() const {
  return state_ == nullptr ? 0 : state_->remaining();
}

AsCompletedRange AsCompleted(std::vector<Future> futures,
                             absl::Duration timeout) {
  return AsCompletedRange(std::move(futures), absl::Now() + timeout);
}

WaitResult Wait(const std::vector<Future>& futures, WaitMode mode,
                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  // Shared counters updated by done callbacks.
  struct Shared {
    absl::Mutex mu;
    size_t pending ABSL_GUARDED_BY(mu) = 0;
    size_t finished ABSL_GUARDED_BY(mu) = 0;
    bool failure ABSL_GUARDED_BY(mu) = false;
  };
  auto shared = std::make_shared<Shared>();
  {
    absl::MutexLock lock(&shared->mu);
    shared->pending = futures.size();
  }
  std::weak_ptr<Shared> weak = shared;
  for (const Future& f : futures) {
    if (!f.valid()) {
      absl::MutexLock lock(&shared->mu);
      --shared->pending;
      ++shared->finished;
      continue;
    }
    f.Then([weak](const Future& done) {
      if (auto s = weak.lock()) {
        const bool failed = done.failed();
        absl::MutexLock lock(&s->mu);
        --s->pending;
        ++s->finished;
        if (failed) s->failure = true;
      }
    });
  }
  {
    Shared& s = *shared;
    absl::MutexLock lock(&s.mu);
    auto ready = [&s, mode]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
      if (s.pending == 0) return true;
      switch (mode) {
        case WaitMode::kFirstCompleted:
          return s.finished > 0;
        case WaitMode::kFirstException:
          return s.failure;
        case WaitMode::kAllCompleted:
          return false;
      }
      return false;
    };
    s.mu.AwaitWithDeadline(absl::Condition(&ready), deadline);
  }
  WaitResult result;
  for (const Future& f : futures) {
    (f.done() ? result.done : result.not_done).push_back(f);
  }
  return result;
}

}  // namespace jobd::client
