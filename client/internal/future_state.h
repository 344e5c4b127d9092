// Internal: the shared state behind jobd::client::Future. Not part of the
// public API. Free of gRPC headers (future.cc includes it).
//
// Thread-safety: every member under `mu` (a striped mutex shared with other
// futures) is guarded by it; `core` and `tag` are const after construction.
// Lock order: SubmitSession::mu_ before FutureState::mu; callbacks run with no
// lock held. Ownership: shared by Future handles and the SubmitSession that
// dispatches the job's events (until the job ends).
#ifndef JOBD_CLIENT_INTERNAL_FUTURE_STATE_H_
#define JOBD_CLIENT_INTERNAL_FUTURE_STATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "jobd/v1/jobd.pb.h"
#include "proto/jobd/v1/terminal.h"

namespace jobd::client::internal {

struct Core;

// Implemented in client.cc (they need gRPC).
absl::StatusOr<v1::CancelJobResponse> CoreCancelJob(const Core& core,
                                                    const std::string& job_id);
absl::Duration CoreRpcTimeout(const Core& core);

// Runs a user callback, catching and logging what it throws.
void RunCallback(const std::function<void(const Future&)>& callback,
                 const Future& future);

// True for SUCCEEDED / FAILED / CANCELLED events (proto/jobd/v1/terminal.h).
inline bool IsTerminal(v1::EventType type) { return v1::IsTerminalEvent(type); }

// The job state a terminal event type stands for.
v1::JobState TerminalState(v1::EventType type);

// The mutex guarding the FutureState of `tag`: futures share a small pool
// of striped mutexes instead of owning one each, because this Debian absl
// is built with Mutex deadlock detection on, whose cost grows with the
// number of live mutexes (a per-job mutex made the client ~4x slower).
absl::Mutex& FutureMutex(uint64_t tag);

struct FutureState {
  FutureState(std::shared_ptr<const Core> core, uint64_t tag)
      : core(std::move(core)), tag(tag), mu(FutureMutex(tag)) {}

  // Applies a non-terminal event (ACCEPTED, STARTED, PROGRESS).
  void Update(const v1::JobEvent& event) ABSL_LOCKS_EXCLUDED(mu);

  // Completes from a terminal or REJECTED event (fields are moved out).
  static void CompleteFromEvent(const std::shared_ptr<FutureState>& self,
                                v1::JobEvent* event);
  // Completes with an error (stream broke, client closed).
  static void CompleteWithError(const std::shared_ptr<FutureState>& self,
                                absl::Status status);
  // A future that never had a job: done with `status` (chord.h).
  static Future Failed(std::shared_ptr<const Core> core, uint64_t tag,
                       absl::Status status);

  const std::shared_ptr<const Core> core;
  const uint64_t tag;

  absl::Mutex& mu;  // Shared with other futures (FutureMutex).
  bool done ABSL_GUARDED_BY(mu) = false;
  bool has_job ABSL_GUARDED_BY(mu) = false;  // ACCEPTED seen: job_id set.
  // The ACCEPTED event's time (jobd's clock): the job's create time.
  absl::Time accepted_at ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  v1::JobState state ABSL_GUARDED_BY(mu) = v1::JOB_STATE_UNSPECIFIED;
  std::optional<v1::Progress> progress ABSL_GUARDED_BY(mu);
  absl::Status status ABSL_GUARDED_BY(mu);  // Non-OK: rejected / error.
  JobOutcome outcome ABSL_GUARDED_BY(mu);   // job_id/executor as known.
  std::vector<std::function<void(const Future&)>> callbacks ABSL_GUARDED_BY(mu);

 private:
  static void Complete(const std::shared_ptr<FutureState>& self,
                       absl::Status status, JobOutcome outcome,
                       bool has_outcome);
};

}  // namespace jobd::client::internal

#endif  // JOBD_CLIENT_INTERNAL_FUTURE_STATE_H_
