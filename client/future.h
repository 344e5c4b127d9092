// jobd::client futures: the handle of one job submitted with Client::Submit,
// in the spirit of Python's concurrent.futures (result, done, callbacks,
// as_completed, wait), plus AsCompleted() and Wait() over many of them.
//
// Thread-safety: Future is a cheap copyable handle to shared state; every
// method may be called from any thread, concurrently. Callbacks added with
// Then() run without any internal lock held.
// Ownership: the shared state lives as long as any handle (or the client's
// stream, until the job's end arrives). A Future may outlive its Client: it
// then completes with CANCELLED ("client closed") if its end had not arrived.
#ifndef JOBD_CLIENT_FUTURE_H_
#define JOBD_CLIENT_FUTURE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::client {

namespace internal {
struct FutureState;
class AsCompletedState;
}  // namespace internal

// How a job that ran ended.
struct JobOutcome {
  std::string job_id;
  // SUCCEEDED, FAILED or CANCELLED (a job that ran or was queued).
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;  // Where it ran.
  v1::JobResult result;                              // SUCCEEDED only.
  v1::JobError error;                                // FAILED / CANCELLED only.

  bool ok() const { return state == v1::JOB_STATE_SUCCEEDED; }
  // OK if SUCCEEDED, else error.code / error.message as a status (UNKNOWN
  // when the code is missing).
  absl::Status status() const;
};

// The status a JobError stands for: its code (UNKNOWN if 0 or out of range)
// and message.
absl::Status ErrorToStatus(const v1::JobError& error);

// A handle to one job of a Client's shared Submit stream.
//
// Get() returns:
//  * OK + outcome for a job that ended (SUCCEEDED, FAILED or CANCELLED: test
//    outcome.ok() / outcome.status());
//  * the rejection as a status (code and message of the REJECTED event's
//    error, e.g. INVALID_ARGUMENT for an unknown task) when jobd refused the
//    spec and no job exists;
//  * the stream's error (UNAVAILABLE, ...) if the Submit stream broke before
//    the job's end arrived, or CANCELLED if the Client was closed first (in
//    both cases the job may still run on the daemon: job_id() tells which);
//  * DEADLINE_EXCEEDED if `timeout` passed first (the job keeps going).
class Future {
 public:
  // An invalid handle (valid() == false); every call on it fails with
  // FAILED_PRECONDITION / returns defaults.
  Future() = default;

  bool valid() const { return state_ != nullptr; }

  // The tag this job carries in its Submit stream (unique per Client).
  uint64_t client_tag() const;

  // Blocks until jobd accepted the spec (or the future ended) and returns
  // the job id. The rejection / stream error if it ended without a job;
  // DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<std::string> job_id(
      absl::Duration timeout = absl::InfiniteDuration()) const;

  // When jobd accepted the job, by jobd's clock (its create time, as
  // GetJob shows it); InfinitePast until then. Client::FollowJob checks a
  // job it finds after a restart against it.
  absl::Time accepted_at() const;

  // Blocks until the job ends (see the class comment).
  absl::StatusOr<JobOutcome> Get(
      absl::Duration timeout = absl::InfiniteDuration()) const;

  // Blocks until done or `timeout`; true if done.
  bool Wait(absl::Duration timeout = absl::InfiniteDuration()) const;

  // The job ended (any way), was rejected, or its stream broke.
  bool done() const;

  // done() and it did not end SUCCEEDED (failed, cancelled, rejected, or an
  // error). False while not done.
  bool failed() const;

  // Latest known state: UNSPECIFIED until ACCEPTED, then QUEUED, RUNNING
  // (from STARTED events) and the terminal state. UNSPECIFIED if the spec was
  // rejected or the stream broke before acceptance.
  v1::JobState state() const;

  // Latest progress reported by the task (from PROGRESS events).
  std::optional<v1::Progress> progress() const;

  // Adds a done callback, run exactly once: at once on this thread if the
  // future is already done, else on the client's stream reader thread when
  // it ends. An exception thrown by the callback is caught and logged. Keep
  // callbacks short: they may Submit and add callbacks, but must not block
  // on another unfinished future of the same Client (its events arrive on
  // this very thread) nor destroy the Client.
  void Then(std::function<void(const Future&)> callback) const;

  // Asks jobd to cancel the job (waits for its id first, at most the client's
  // RPC timeout). Returns the CancelJob answer: CANCELLED for a queued job,
  // RUNNING for a running one (it ends CANCELLED shortly), or the terminal
  // state if it had ended (already_ended). Errors: the rejection if the spec
  // was rejected, NOT_FOUND, UNAVAILABLE, ...
  absl::StatusOr<v1::CancelJobResponse> Cancel() const;

  // Same shared state.
  friend bool operator==(const Future& a, const Future& b) {
    return a.state_ == b.state_;
  }

 private:
  friend struct internal::FutureState;
  friend class Client;
  friend class internal::AsCompletedState;
  explicit Future(std::shared_ptr<internal::FutureState> state)
      : state_(std::move(state)) {}

  std::shared_ptr<internal::FutureState> state_;
};

// Yields futures in the order they complete, like
// concurrent.futures.as_completed: those already done first, then each as it
// ends, until all are yielded or the timeout (counted from AsCompleted())
// passes. Then status() is DEADLINE_EXCEEDED, else OK.
//
//   for (const Future& f : AsCompleted(futures, absl::Seconds(10))) { ... }
//
// Not thread-safe: iterate from one thread. Duplicate handles are yielded
// once.
class AsCompletedRange {
 public:
  AsCompletedRange(AsCompletedRange&&) noexcept;
  AsCompletedRange& operator=(AsCompletedRange&&) noexcept;
  ~AsCompletedRange();

  // Blocks for the next completed future; false when all were yielded or the
  // timeout passed.
  bool Next(Future* out);
  absl::Status status() const { return status_; }
  size_t remaining() const;

  class iterator {
   public:
    using value_type = Future;
    using difference_type = std::ptrdiff_t;
    const Future& operator*() const { return current_; }
    const Future* operator->() const { return &current_; }
    iterator& operator++() {
      Advance();
      return *this;
    }
    void operator++(int) { Advance(); }
    bool operator==(std::default_sentinel_t) const { return range_ == nullptr; }

   private:
    friend class AsCompletedRange;
    explicit iterator(AsCompletedRange* range) : range_(range) { Advance(); }
    void Advance() {
      if (range_ != nullptr && !range_->Next(&current_)) range_ = nullptr;
    }
    AsCompletedRange* range_;
    Future current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  friend AsCompletedRange AsCompleted(std::vector<Future>, absl::Duration);
  AsCompletedRange(std::vector<Future> futures, absl::Time deadline);

  std::shared_ptr<internal::AsCompletedState> state_;
  absl::Time deadline_;
  absl::Status status_;
};

AsCompletedRange AsCompleted(std::vector<Future> futures,
                             absl::Duration timeout = absl::InfiniteDuration());

enum class WaitMode {
  kFirstCompleted,  // Return when any future is done.
  kFirstException,  // ... when any ends not SUCCEEDED, or all are done.
  kAllCompleted,    // ... when all are done.
};

struct WaitResult {
  std::vector<Future> done;      // In the order given.
  std::vector<Future> not_done;  // In the order given.
};

// Like concurrent.futures.wait: blocks until the mode's condition holds or
// `timeout` passes (then not_done is non-empty; no error). Invalid handles
// count as done.
WaitResult Wait(const std::vector<Future>& futures,
                WaitMode mode = WaitMode::kAllCompleted,
                absl::Duration timeout = absl::InfiniteDuration());

}  // namespace jobd::client

#endif  // JOBD_CLIENT_FUTURE_H_
