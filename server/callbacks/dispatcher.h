// CallbackDispatcher: delivers push callbacks (webhooks). A job whose spec
// names a callback_url gets its terminal JobEvent POSTed there as JSON
// (protobuf's JSON mapping), signed (signature.h), from a thread of its
// own running an Asio loop with the reactor's HTTP client (libcurl multi;
// no redirects followed; the URL allowlist, callback_url.h, decides where
// it may go, loopback included). It is the scheduler's CallbackHook.
//
// Delivery: at least once. A callback becomes pending with the job's end
// (journaled with it, in one transaction: the journal's callbacks table)
// and is first attempted once that is durable. A 2xx answer delivers it;
// 408, 429, 5xx and transport errors (connect, TLS, timeout) are retried
// after an exponential backoff with jitter (RetryDelay) until max_attempts
// or max_retry_time since the first attempt; any other answer fails it at
// once. Each attempt's outcome is journaled, so after a crash or kill -9
// the next start re-sends what was pending (Restore), and a POST answered
// just before a crash may be sent again: receivers deduplicate by the
// X-Jobd-Job-Id header.
//
// Bounds: at most max_pending callbacks and max_pending_bytes of their
// events are pending at once; past either, a job still ends normally and
// its callback is DROPPED (journaled so, counted in stats, logged). At most
// max_in_flight POSTs at a time; each response body is read up to 64 KiB.
// Statuses of finished callbacks are kept for the max_statuses most recent.
//
// Thread-safety: every public method is thread-safe; the CallbackHook
// methods only queue under mu_ (a leaf lock: the scheduler's lock may be
// held). The loop thread owns the HTTP client and the timers.
// Ownership: owns its thread and loop. The journal (optional, not owned)
// must outlive it; Stop() (or the destructor) joins the thread.
#ifndef JOBD_SERVER_CALLBACKS_DISPATCHER_H_
#define JOBD_SERVER_CALLBACKS_DISPATCHER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/jobs/callback_hook.h"
#include "server/journal/journal.h"

namespace jobd::callbacks {

// (Where callbacks may go is checked when a job is submitted:
// SpecLimits::callback_allowed_prefixes, callback_url.h.)
struct CallbackOptions {
  std::string secret;  // The HMAC key. Never logged.
  uint32_t max_attempts = 10;
  // No attempt starts later than this after the first one.
  absl::Duration max_retry_time = absl::Hours(1);
  absl::Duration first_backoff = absl::Seconds(1);  // Doubling from here,
  absl::Duration max_backoff = absl::Minutes(5);    // up to this.
  absl::Duration timeout = absl::Seconds(10);       // One POST, whole.
  size_t max_pending = 10000;
  uint64_t max_pending_bytes = uint64_t{64} << 20;
  size_t max_in_flight = 32;
  size_t max_statuses = 100000;
};

// How long to wait before attempt `attempt` + 1, attempt >= 1:
// min(max_backoff, first_backoff * 2^(attempt-1)) scaled by a jitter
// factor 0.5 + unit/2 (`unit` uniform in [0, 1)).
absl::Duration RetryDelay(uint32_t attempt, const CallbackOptions& options,
                          double unit);

// What an attempt's outcome means.
enum class Verdict { kDelivered, kRetry, kGiveUp };
// `outcome`: the HTTP status, or the transport error.
Verdict Classify(const absl::StatusOr<int>& outcome);

// The JSON body of a terminal event (serialized v1::JobEvent).
absl::StatusOr<std::string> EventJson(const std::string& event_bytes);

class CallbackDispatcher : public CallbackHook {
 public:
  // Starts its thread. `journal` may be null (--durability none: pending
  // callbacks are then lost with the process).
  CallbackDispatcher(CallbackOptions options, Journal* journal);
  ~CallbackDispatcher() override;
  CallbackDispatcher(const CallbackDispatcher&) = delete;
  CallbackDispatcher& operator=(const CallbackDispatcher&) = delete;

  // The journal's callbacks (Recovered::callbacks), before the scheduler
  // restores its jobs: pending ones are sent again (whatever the bounds),
  // finished ones keep their status.
  void Restore(std::vector<CallbackRecord> records);
  // Stops the loop (POSTs in flight are abandoned: they stay pending in the
  // journal for the next start). Idempotent.
  void Stop();

  // CallbackHook (under the scheduler lock).
  CallbackRecord OnEnded(uint64_t job_id, std::string_view url,
                         const Event& event) override;
  void Deliver(CallbackRecord record, uint64_t ticket) override;
  void Describe(uint64_t job_id, v1::Job* job) const override;
  void AddStats(v1::GetStatsResponse* stats) const override;

  // For tests: the status of a job's callback (nullopt: none known).
  std::optional<v1::CallbackStatus> StatusOf(uint64_t job_id) const;

 private:
  class Loop;  // dispatcher.cc: keeps Asio and libcurl out of this header.
  struct Entry {
    v1::CallbackState state = v1::CALLBACK_STATE_PENDING;
    uint32_t attempts = 0;
    std::string last_error;
    std::string url, event;  // While pending.
    absl::Time first_attempt = absl::InfinitePast();
  };

  // On the loop thread: what attempt `job_id`'s callback sends now (its
  // attempt counted), or nullopt if it is no longer pending.
  struct Attempt {
    std::string url, event;
    uint32_t number = 0;
  };
  std::optional<Attempt> BeginAttempt(uint64_t job_id);
  // An attempt ended with `outcome` (`unit`: a uniform [0, 1) draw for the
  // jitter): the callback's next state, journaled; the delay before the
  // next attempt if there is one.
  std::optional<absl::Duration> EndAttempt(uint64_t job_id,
                                           const absl::StatusOr<int>& outcome,
                                           double unit);
  // A pending entry is done: `state` (DELIVERED or FAILED).
  void Finish(uint64_t job_id, Entry& e, v1::CallbackState state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps at most max_statuses finished entries.
  void Trim() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CallbackOptions options_;
  jobd::Journal* const journal_;  // Optional.

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> finished_ ABSL_GUARDED_BY(mu_);  // Oldest first.
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t attempts_ ABSL_GUARDED_BY(mu_) = 0;

  std::unique_ptr<Loop> loop_;  // Last: its thread uses the rest.
};

}  // namespace jobd::callbacks

#endif  // JOBD_SERVER_CALLBACKS_DISPATCHER_H_
