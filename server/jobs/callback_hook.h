// CallbackHook: how the scheduler hands a job's terminal event to whoever
// delivers the job's push callback (JobSpec.callback_url; the dispatcher of
// server/callbacks implements it), and the durable record of that delivery
// (CallbackRecord) the journal keeps in its callbacks table. A leaf: the
// scheduler and the journal know this interface, not the dispatcher.
//
// Thread-safety: the hook's methods are called with the scheduler lock held
// and must only queue (never block, never call into the scheduler); an
// implementation says how it is safe. CallbackRecord is a plain value.
#ifndef JOBD_SERVER_JOBS_CALLBACK_HOOK_H_
#define JOBD_SERVER_JOBS_CALLBACK_HOOK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"

namespace jobd {

// One job's callback as the journal keeps it (a row of its callbacks
// table, keyed by the job's id).
struct CallbackRecord {
  uint64_t job_id = 0;
  // PENDING, DELIVERED, FAILED or DROPPED.
  v1::CallbackState state = v1::CALLBACK_STATE_PENDING;
  uint32_t attempts = 0;
  std::string last_error;  // Valid UTF-8.
  // Set when the row is first written (with the job's end): the URL and the
  // terminal v1::JobEvent, serialized (the body is made from it at each
  // attempt, so that every attempt sends the same bytes). Empty in a status
  // update, which keeps what the row has.
  std::string url;
  std::string event;
  bool first() const { return !url.empty(); }
};

class CallbackHook {
 public:
  virtual ~CallbackHook() = default;
  // The job `job_id` with a callback to `url` reached its terminal `event`
  // (stamped: sequence, time, end). Returns its record, which the scheduler
  // journals with the job's end in one transaction (state PENDING, or
  // DROPPED when the dispatcher's bounds are full).
  virtual CallbackRecord OnEnded(uint64_t job_id, std::string_view url,
                                 const Event& event) = 0;
  // The record OnEnded returned is queued in the journal batch `ticket` (0:
  // no journal): deliver it once that is durable.
  virtual void Deliver(CallbackRecord record, uint64_t ticket) = 0;
  // Sets `job`'s callback status (a job with a callback URL).
  virtual void Describe(uint64_t job_id, v1::Job* job) const = 0;
  // Sets `stats`'s callbacks (GetStatsResponse.callbacks).
  virtual void AddStats(v1::GetStatsResponse* stats) const = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_CALLBACK_HOOK_H_
