// JobRecord: what the scheduler holds of one job, from admission until
// retention forgets it, and the views of it that leave the scheduler (a
// v1::Job snapshot, a journal row). Also the small helpers every part of
// the scheduler shares (an end made of an error, an end's byte cost).
//
// A record is kept small: the job table holds up to max_queued +
// max_retained of them (192 bytes: times in 8 bytes, fields ordered to
// pack, the rare ones in Extras).
//
// Thread-safety: none; records live in the JobTable and are read and
// changed only with Scheduler::mu_ held. Their run state is shared with
// the executor (JobRun::args and ::cancel alias it).
// Ownership: the JobTable owns records (by id); a record shares its spec,
// end and progress with events and journal rows; its task is the
// registry's (or the scheduler's, for a task that vanished).
#ifndef JOBD_SERVER_SCHEDULER_JOB_RECORD_H_
#define JOBD_SERVER_SCHEDULER_JOB_RECORD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "server/journal/journal.h"
#include "server/scheduler/timer_queue.h"
#include "workers/sdk/compact_time.h"
#include "workers/sdk/task.h"

namespace jobd {

struct JobRecord {
  // The job's bound arguments and, while it runs, its cancel token: one
  // allocation, shared with the executor (JobRun::args and ::cancel alias
  // it). Each run gets a fresh one, which tells a run from a later one.
  struct RunState {
    explicit RunState(TaskArgs bound) : args(std::move(bound)) {}
    const TaskArgs args;
    CancelToken cancel;
  };

  // A WaitJob caller: answered at the end, or by its timer.
  struct Waiter {
    uint64_t id;
    TimerQueue::TimerId timer;
    std::function<void(absl::StatusOr<v1::Job>)> done;
  };

  // A subscriber of this job alone (no owner filter: 32 bytes).
  struct Sub {
    std::shared_ptr<EventSink> sink;
    uint64_t tag = 0;
    uint32_t mask = kAllEvents;
  };

  // What few jobs have: made on first use.
  struct Extras {
    std::shared_ptr<const v1::Progress> progress;  // The latest.
    CompactTime last_progress_event = absl::InfinitePast();
    std::vector<Waiter> waiters;  // Cleared when it ends.
    // Failed attempts (retry_policy.h: AppendAttempt), or null.
    std::shared_ptr<const std::string> history;
  };
  Extras& extras() {
    if (more == nullptr) more = std::make_unique<Extras>();
    return *more;
  }

  // The job as a client sees it (GetJob, ListJobs).
  v1::Job Snapshot() const;
  // Its state as a client sees it: `state`, but RUNNING for a shared job
  // another node runs (Scheduler::SharedRunning), queued here.
  v1::JobState ShownState() const;
  // The job's journal row (spec included). A claimed job (`gated`) may
  // begin before its next record: the row says RUNNING, one attempt more,
  // so that a restart treats it as a job that was running.
  JournalRow Row() const;

  uint64_t id = 0;
  const std::string* owner = nullptr;  // Interned (JobTable); never null.
  // Immutable, with its task (spec.task(): the registry's, or the
  // scheduler's for a task that vanished; server/jobs/stored_spec.h).
  StoredSpec spec;
  std::shared_ptr<RunState> run;  // Released when the job ends.
  CompactTime create_time;
  CompactTime start_time = absl::InfinitePast();  // Set when RUNNING.
  // When it ended; while it is WAITING (no end yet), when it is due: the
  // Waiting set's key (one field for both keeps the record at 192 bytes).
  CompactTime finish_time;
  std::shared_ptr<const JobEnd> end;
  std::unique_ptr<Extras> more;  // Progress, waiters.
  // RUNNING: its timeout (or total deadline); QUEUED: its start or total
  // deadline (scheduler_time.cc).
  TimerQueue::TimerId timeout_timer = 0;
  uint64_t last_sequence = 0;
  uint64_t accepted_seq = 0, started_seq = 0;  // For the journal.
  v1::JobState state = v1::JOB_STATE_QUEUED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  uint32_t attempts = 0;  // Runs started, ever.
  // Flags in bits (the record stays at 192 bytes).
  bool gated : 1 = false;  // QUEUED, claimed: waits for a durable claim (Lane).
  // WAITING to retry after a timeout: its stopped run has not returned;
  // it joins the Waiting set when it does (never two runs at once).
  bool run_returning : 1 = false;
  bool parked : 1 = false;  // QUEUED, held back by its key (KeyLimits).
  // JobOutputs holds an entry for it (it wrote, or a reader waits): opened
  // at its starts and ended at its end. Most jobs write nothing and never
  // touch JobOutputs (Scheduler::AppendOutput opens it at the first write).
  bool output : 1 = false;
  // Cluster mode's work sharing (scheduler_cluster.cc): kLocal, or QUEUED
  // here while another node may run it (kOutbox, kPublished: journaled),
  // or taken from Redis to run here for another node (kForeign: never
  // journaled; Redis's pending entry is its record).
  enum Cluster : uint8_t { kLocal, kOutbox, kPublished, kForeign };
  uint8_t cluster = kLocal;
  absl::InlinedVector<Sub, 1> subscribers;  // Cleared when it ends.
};

// The terminal event type of an ended state.
v1::EventType TerminalEventType(v1::JobState state);

// An end holding an error (message cut to kMaxErrorMessageBytes).
std::shared_ptr<JobEnd> MakeError(v1::JobState state, absl::StatusCode code,
                                  v1::ErrorReason reason, std::string message);

// A spec's serialized size, which StoredSpec computed when it was made: the
// spec is immutable, so protobuf's cached size holds it (an atomic read
// instead of a walk over the arguments).
inline uint64_t SpecBytes(const v1::JobSpec& spec) {
  return static_cast<uint64_t>(spec.GetCachedSize());
}

// What an end's result or error adds to the byte budgets (JobEnd::bytes).
uint32_t EndBytes(const JobEnd& end);

// Bytes of a result as it travels (value and payload, with their tags;
// `batch_bytes`: a batch's results and call errors).
size_t ResultBytes(const google::protobuf::Value& value,
                   const std::string& payload, size_t batch_bytes = 0);
// What a batch's results and call errors add to a result.
size_t BatchBytes(const std::string& results,
                  const std::vector<v1::CallError>& call_errors);
// Whether a result of `result_bytes` fits one message of
// `max_message_bytes` (0: no limit) with `job`'s spec; sets *spec_bytes
// to the spec's size when it measured it.
bool ResultFits(size_t result_bytes, const JobRecord& job,
                size_t max_message_bytes, size_t* spec_bytes);
// The end of a job whose result does not fit a message with its spec.
std::shared_ptr<JobEnd> ResultTooLarge(size_t result_bytes, size_t spec_bytes,
                                       size_t limit);

// "1.5 MiB" (for refusals and logs).
std::string Bytes(uint64_t n);

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_JOB_RECORD_H_
