// EventLog: the daemon-wide event sequence, the bounded resume log that
// WatchJobs replays from, the journal batch of each recent event (so that
// a replayed or repeated event waits for its own batch only), and the
// fan-out of each event to its job's subscribers and to the watchers of
// all jobs.
//
// Every state change of a job gets the next sequence number; the log
// keeps the last event_log_size of them in 32 bytes each (what an event
// carries, its task, progress or end, is read from its job when it is
// replayed). Sequences increase but need not be dense: a log restored
// from the journal holds only the journaled events.
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_,
// called only with it held. Sinks' Deliver() is called here (it only
// queues); the sinks to Flush() are collected for after the unlock.
// Ownership: shares the watchers' sinks; reads jobs (the JobTable's), the
// journal (optional, not owned) outlives it.
#ifndef JOBD_SERVER_SCHEDULER_EVENT_LOG_H_
#define JOBD_SERVER_SCHEDULER_EVENT_LOG_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "server/journal/block_reservation.h"
#include "server/journal/journal.h"
#include "server/scheduler/job_record.h"
#include "workers/sdk/compact_time.h"

namespace jobd {

// An event as the resume log keeps it.
struct LoggedEvent {
  uint64_t sequence = 0;
  uint64_t job_id = 0;
  CompactTime time;
  v1::EventType type = v1::EVENT_TYPE_UNSPECIFIED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
};

// Sinks that were given events and want Flush() once the lock is released.
using SinksToFlush = absl::InlinedVector<std::shared_ptr<EventSink>, 4>;

class EventLog {
 public:
  // Keeps the last `capacity` events. With a `journal`, each event waits
  // for the journal batch its change joined.
  EventLog(size_t capacity, Journal* journal);

  // ---- sequences and batches ----
  // With a journal, sequences are reserved in it a block ahead
  // (Journal::ReserveSequences): a restart skips what was left of it.
  static constexpr uint64_t kSequenceBlock = 1 << 20;
  uint64_t NextSequence();
  uint64_t last_sequence() const { return next_sequence_ - 1; }
  // The journal batch that reserved `sequence` (0: durable, or no journal).
  uint64_t ReservationTicket(uint64_t sequence) const {
    return reserved_.TicketOf(sequence);
  }
  // Journal only: the ticket the event of `sequence` must wait for, noted
  // for TicketOf: `ticket`, the batch its change's record joined (0: no
  // record), or its sequence's reservation if that is later.
  uint64_t JoinBatch(uint64_t sequence, uint64_t ticket);
  // The journal batch the event of `sequence` waits for (0: durable).
  uint64_t TicketOf(uint64_t sequence) const;

  // ---- the resume log ----
  // Keeps `event` for replay, forgetting the oldest beyond the capacity.
  void Append(const Event& event);
  // The oldest sequence a watcher can resume after (the next one when the
  // log is empty).
  uint64_t oldest() const;
  // Calls `fn` on each kept event after `after_sequence`, oldest first.
  void ForEachAfter(uint64_t after_sequence,
                    absl::FunctionRef<void(const LoggedEvent&)> fn) const;
  // `logged` as delivered again; `job` is its job.
  Event Replay(const LoggedEvent& logged, const JobRecord& job) const;
  // An ended job's terminal event, again (for a caller that joins late).
  Event EndOf(const JobRecord& job) const;
  // Restore: the log as the journal held it (sorted by sequence; the last
  // `capacity` are kept), and sequences carry on after `last_sequence`.
  void Restore(std::vector<LoggedEvent> log, uint64_t last_sequence);

  // ---- fan-out ----
  // Delivers `event` of `job` to the job's subscribers and to the watchers
  // of all jobs that want it; adds the sinks to flush to `flush`.
  void FanOut(const Event& event, const JobRecord& job,
              SinksToFlush& flush) const;
  // Watchers of all jobs (of Subscriber::owner's, if not empty).
  void AddWatcher(const Subscriber& subscriber);
  // Removes `sink` from the watchers of all jobs.
  void RemoveWatcher(const EventSink* sink);
  size_t watchers() const { return watch_all_.size(); }

 private:
  const size_t capacity_;
  Journal* const journal_;  // Optional.
  std::deque<LoggedEvent> log_;
  uint64_t next_sequence_ = 1;
  BlockReservation reserved_{kSequenceBlock};  // With a journal.
  // With a journal: the event sequences of each batch not yet seen
  // durable, oldest first (one of no batch here is durable).
  struct BatchSequences {
    uint64_t ticket = 0;
    uint64_t first = 0, last = 0;
  };
  std::deque<BatchSequences> batches_;
  std::vector<Subscriber> watch_all_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_EVENT_LOG_H_
