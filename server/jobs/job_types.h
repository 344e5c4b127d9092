// The job types the scheduler, the journal and the frontend share: a job's
// end (JobEnd), its events (Event) and who receives them (EventSink,
// Subscriber), and what admission takes and gives (NewJob, OwnerQuota,
// Admission). A leaf of the server: it knows the task SDK and the API's
// messages, nothing of the server's components.
//
// Thread-safety: plain values; an EventSink says what it guarantees.
// Ownership: events and jobs share their details (result, progress) by
// shared_ptr; a TaskDef is the registry's.
#ifndef JOBD_SERVER_JOBS_JOB_TYPES_H_
#define JOBD_SERVER_JOBS_JOB_TYPES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/status.h"
#include "jobd/v1/jobd.pb.h"
#include "proto/jobd/v1/terminal.h"
#include "server/jobs/stored_spec.h"
#include "workers/sdk/compact_time.h"
#include "workers/sdk/task.h"

namespace jobd {

// The end of a job, shared by the job record, its terminal event and its
// journal row. Holds a result or an error, not both: 64 bytes, one per
// retained job.
class JobEnd {
 public:
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  // The result's or error's serialized size, set once by whoever makes the
  // end (Scheduler), before it is shared: what it costs a byte budget.
  uint32_t bytes = 0;

  // SUCCEEDED: the result; otherwise an empty one.
  const v1::JobResult& result() const {
    const auto* r = std::get_if<v1::JobResult>(&detail_);
    return r != nullptr ? *r : v1::JobResult::default_instance();
  }
  // FAILED / CANCELLED: the error; otherwise an empty one.
  const v1::JobError& error() const {
    const auto* e = std::get_if<v1::JobError>(&detail_);
    return e != nullptr ? *e : v1::JobError::default_instance();
  }
  // Each makes the end hold that one (dropping the other).
  v1::JobResult& mutable_result() {
    if (!std::holds_alternative<v1::JobResult>(detail_)) {
      detail_.emplace<v1::JobResult>();
    }
    return std::get<v1::JobResult>(detail_);
  }
  v1::JobError& mutable_error() {
    if (!std::holds_alternative<v1::JobError>(detail_)) {
      detail_.emplace<v1::JobError>();
    }
    return std::get<v1::JobError>(detail_);
  }

 private:
  std::variant<v1::JobResult, v1::JobError> detail_;
};

// Sets `out`'s result (SUCCEEDED) or error (otherwise) from `end`; `out` is
// a v1::JobEvent or a v1::Job.
template <typename JobOrEvent>
void SetEnd(const JobEnd& end, JobOrEvent* out) {
  if (end.state == v1::JOB_STATE_SUCCEEDED) {
    *out->mutable_result() = end.result();
  } else {
    *out->mutable_error() = end.error();
  }
}

// What a RETRYING event carries: the failed attempt's error and when the
// next one runs.
struct RetryNote {
  v1::JobError error;
  CompactTime next_time;
  uint32_t attempt = 0;  // The attempt that failed (1 = the first).
};

// One event of one job, as the scheduler delivers it (converted to
// v1::JobEvent at the RPC edge). Kept to 64 bytes: sinks queue them.
class Event {
 public:
  uint64_t sequence = 0;
  uint64_t job_id = 0;
  // The journal batch that must be durable before a client may see it
  // (server/journal.h); 0: no journal, nothing to wait for.
  uint64_t ticket = 0;
  CompactTime time;

  // What the event carries besides its type: one of these, or nothing.
  const TaskDef* task() const {  // ACCEPTED.
    if (detail_kind_ == Detail::kTraced) {
      return static_cast<const Traced*>(detail_.get())->task;
    }
    return detail_kind_ == Detail::kTask
               ? static_cast<const TaskDef*>(detail_.get())
               : nullptr;
  }
  // ACCEPTED: the job's W3C traceparent, if it has one.
  std::string_view traceparent() const {
    return detail_kind_ == Detail::kTraced
               ? std::string_view(static_cast<const Traced*>(detail_.get())
                                      ->spec->traceparent())
               : std::string_view();
  }
  const v1::Progress* progress() const {  // PROGRESS.
    return detail_kind_ == Detail::kProgress
               ? static_cast<const v1::Progress*>(detail_.get())
               : nullptr;
  }
  const JobEnd* end() const {  // Terminal events, REJECTED.
    return detail_kind_ == Detail::kEnd
               ? static_cast<const JobEnd*>(detail_.get())
               : nullptr;
  }
  const RetryNote* retry() const {  // RETRYING.
    return detail_kind_ == Detail::kRetry
               ? static_cast<const RetryNote*>(detail_.get())
               : nullptr;
  }
  void set_retry(std::shared_ptr<const RetryNote> note) {
    Set(Detail::kRetry, std::move(note));
  }
  void set_task(const TaskDef* task) {  // Not owned: the registry's.
    Set(Detail::kTask,
        std::shared_ptr<const void>(std::shared_ptr<const void>(), task));
  }
  // ACCEPTED: the task, and the job's spec for its traceparent (kept only
  // when it has one: an allocation for traced jobs alone).
  void set_task(const TaskDef* task, std::shared_ptr<const v1::JobSpec> spec) {
    if (spec == nullptr || spec->traceparent().empty()) {
      set_task(task);
      return;
    }
    Set(Detail::kTraced, std::make_shared<const Traced>(
                             Traced{.task = task, .spec = std::move(spec)}));
  }
  void set_progress(std::shared_ptr<const v1::Progress> progress) {
    Set(Detail::kProgress, std::move(progress));
  }
  void set_end(std::shared_ptr<const JobEnd> end) {
    Set(Detail::kEnd, std::move(end));
  }

 private:
  enum class Detail : uint8_t {
    kNone,
    kTask,
    kProgress,
    kEnd,
    kRetry,
    kTraced
  };
  struct Traced {
    const TaskDef* task = nullptr;
    std::shared_ptr<const v1::JobSpec> spec;
  };
  void Set(Detail kind, std::shared_ptr<const void> detail) {
    detail_kind_ = detail == nullptr ? Detail::kNone : kind;
    detail_ = std::move(detail);
  }
  std::shared_ptr<const void> detail_;

 public:  // (Declared here to pack with detail_kind_.)
  v1::EventType type = v1::EVENT_TYPE_UNSPECIFIED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  bool duplicate = false;  // ACCEPTED.
  // The node whose job `job_id` is, when it is not this one's
  // (InternJobIdNode: a cluster-wide duplicate's first job); 0: this one.
  uint16_t node = 0;

 private:
  Detail detail_kind_ = Detail::kNone;
};

// The contract's rule (proto/jobd/v1/terminal.h), under the daemon's name.
inline bool IsTerminal(v1::EventType type) { return v1::IsTerminalEvent(type); }
inline bool IsTerminal(v1::JobState state) {
  return v1::IsTerminalState(state);
}

// Bit for an event type in a subscriber's mask.
constexpr uint32_t EventBit(v1::EventType type) { return 1u << type; }
constexpr uint32_t kAllEvents = ~0u;
constexpr uint32_t kTerminalEvents = EventBit(v1::EVENT_TYPE_SUCCEEDED) |
                                     EventBit(v1::EVENT_TYPE_FAILED) |
                                     EventBit(v1::EVENT_TYPE_CANCELLED);

// Receives events. Implemented by RPC streams.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // Called with the scheduler lock held: queue the event and return at once;
  // never block, never call into the scheduler. `tag` is the subscriber's
  // tag. Returns true if Flush() should be called once the lock is released.
  virtual bool Deliver(const Event& event, uint64_t tag) = 0;
  // Called without the scheduler lock after a Deliver() returned true.
  virtual void Flush() = 0;
};

struct Subscriber {
  std::shared_ptr<EventSink> sink;
  uint64_t tag = 0;
  uint32_t mask = kAllEvents;  // Event types wanted.
  // Watching all jobs: only those of this owner (empty: every owner).
  std::string owner;
};

// A validated spec, ready to become a job.
struct NewJob {
  // Its body is shared with `args`; its name is `task`'s (stored_spec.h).
  StoredSpec spec;
  const TaskDef* task = nullptr;
  TaskArgs args;
  uint64_t tag = 0;   // Subscriber tag for this job's events.
  std::string owner;  // The caller that submits it (server/auth.h).
  // Cluster mode: taken from Redis to run here for another node; never
  // journaled nor published again (server/cluster/work_sharing.h).
  bool foreign = false;
};

// Per-owner admission limits of one Submit call (0: none).
struct OwnerQuota {
  size_t max_live = 0;  // Jobs of the owner not yet ended.
  // Bytes the owner's jobs hold: the specs of its live jobs and the specs
  // and results of its retained ones. Over it, its oldest retained jobs are
  // forgotten; a job that its live jobs' specs alone would take past it is
  // rejected. (The last Submit's value also applies as its jobs end.)
  uint64_t max_bytes = 0;
};

// What Submit() did with one NewJob.
struct Admission {
  absl::Status status;  // Not OK: rejected (no job exists).
  uint64_t job_id = 0;
  bool duplicate = false;  // Existing job found by idempotency key.
  uint64_t bytes = 0;      // A new job's spec, serialized (what it holds).
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_JOB_TYPES_H_
