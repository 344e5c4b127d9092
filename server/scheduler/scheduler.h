// Scheduler: the job table and state machine, per-executor priority queues,
// admission control, timeouts, cancellation, retention, and the event fan-out
// (DESIGN.md "Data flow"). It is the one source of truth about jobs.
//
//   QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
//
// A running job that is cancelled or times out ends at once (its terminal
// event goes out then); the executor slot stays busy until the task really
// returns, and whatever it returns late is dropped.
//
// Events: every state change gets a daemon-wide sequence number, is appended
// to a bounded event log (for WatchJobs resume) and delivered to the job's
// subscribers (the Submit stream that created it, streams watching it) and to
// the watchers of all jobs. Delivery happens under the scheduler lock, so each
// subscriber sees a job's events in order; EventSink::Deliver only queues.
//
// Thread-safety: every public method is thread-safe. Lock order: scheduler
// mu_ -> EventSink internals / executor internals / timer queue (leaves).
// Callbacks (sink Flush, wait callbacks) run after mu_ is released.
// Ownership: the scheduler owns jobs (by id), executors and the timer queue;
// sinks are shared with their streams.
#ifndef JOBD_SERVER_SCHEDULER_SCHEDULER_H_
#define JOBD_SERVER_SCHEDULER_SCHEDULER_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/container/node_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "server/journal/journal.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/router.h"
#include "server/scheduler/scheduler_options.h"
#include "server/scheduler/timer_queue.h"
#include "workers/executor/executor.h"
#include "workers/sdk/compact_time.h"
#include "workers/sdk/task.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

struct WatchResult {
  uint64_t oldest_retained_sequence = 0;
  bool events_lost = false;
  // Named jobs that had ended at or before after_sequence: the watcher has
  // seen their end already, and no event of theirs will follow.
  std::vector<uint64_t> already_seen_ends;
};

struct ListJobsQuery {
  std::vector<v1::JobState> states;  // Empty: any.
  std::string task;                  // Empty: any.
  std::string owner;                 // Empty: any.
  uint64_t after_id = 0;             // Page start (exclusive).
  size_t limit = 100;
  // Serialized jobs in one page at most (at least one job); 0: no cap.
  size_t max_bytes = 0;
};

// What Restore() did with the journal's jobs.
struct RestoreSummary {
  size_t queued = 0;      // Queued again (they were queued).
  size_t rerun = 0;       // Were running, at-least-once: queued again.
  size_t lost = 0;        // Were running, at-most-once: LOST_ON_RESTART.
  size_t retained = 0;    // Had ended: retrievable again.
  size_t unrunnable = 0;  // Their task is gone or changed: FAILED.
  // Their journal row could not be read back (JournalRow::problem), or
  // their result no longer fits a message: FAILED.
  size_t unreadable = 0;
};

class Scheduler {
 public:
  // `journal` (optional, not owned) must outlive the scheduler: with one,
  // every job and state change is recorded there and each event waits for
  // its record to be durable before any client sees it.
  Scheduler(SchedulerOptions options, const Clock& clock,
            Journal* journal = nullptr);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // The listener executors report to; pass it to each executor's constructor.
  ExecutorListener& listener_for(v1::Executor kind);
  // Adds an executor (before the first Submit). The thread pool is required.
  void AddExecutor(std::unique_ptr<JobExecutor> executor);

  // Admits `jobs` in order, each subscribed to by `subscriber.sink` with the
  // job's own tag. Rejects a job (Admission::status) when the queue is full
  // or its owner is over `quota` (ResourceExhausted), the executor is
  // unusable, or the daemon is draining (Unavailable). Appends one Admission
  // per job to `out`.
  void Submit(std::vector<NewJob>& jobs, const Subscriber& subscriber,
              std::vector<Admission>& out, const OwnerQuota& quota = {});

  // `owner` below: when not empty, only that owner's jobs exist for the
  // call (another's are NotFound, as if unknown).

  // What a client is shown is durable: the Show*/WaitJob callbacks run once
  // the journal holds what they pass (at once without a journal), or with
  // NotDurable() while it cannot write (they never wait out an outage).
  // They run without locks held, on the calling, journal or timer thread.
  using JobCallback = std::function<void(absl::StatusOr<v1::Job>)>;

  // The job now, as held in memory: its latest change may not be durable.
  // NotFound if unknown or expired.
  absl::StatusOr<v1::Job> GetJob(uint64_t id,
                                 std::string_view owner = {}) const;
  // GetJob, for a client.
  void ShowJob(uint64_t id, std::string_view owner, JobCallback done) const;
  // Calls `done` once with the job when it ends or at `deadline`, whichever
  // comes first (at once if already ended, or NotFound if unknown).
  void WaitJob(uint64_t id, absl::Time deadline, JobCallback done,
               std::string_view owner = {});

  // Cancels a job: queued -> CANCELLED at once; running -> CANCELLED at once
  // with the cancel token set (the executor may stop it harder). NotFound if
  // unknown. Returns the state after the call and whether it had ended.
  absl::StatusOr<std::pair<v1::JobState, bool>> Cancel(
      uint64_t id, std::string_view owner = {});

  // Subscribes `subscriber` to the events of `ids` (all jobs of
  // subscriber.owner, or all, if empty), replaying retained events after
  // `after_sequence` first. NotFound if a job is unknown or not the
  // subscriber's (nothing is subscribed then).
  absl::StatusOr<WatchResult> Watch(const std::vector<uint64_t>& ids,
                                    uint64_t after_sequence,
                                    const Subscriber& subscriber);
  // Removes a sink from the all-jobs watchers and from `ids`' subscribers.
  void Unwatch(const EventSink* sink, const std::vector<uint64_t>& ids);

  // Counts specs the RPC edge rejected before admission (for GetStats).
  void CountRejected(uint64_t n);

  // Takes back the jobs a journal held (after AddExecutor, before the first
  // Submit): queued ones queue again; running ones run again if their spec
  // allows it (DELIVERY_AT_LEAST_ONCE), else fail LOST_ON_RESTART; ended ones
  // are retained. Ids, idempotency keys, sequences and the event log carry
  // on from where they were. `registry` resolves task names.
  RestoreSummary Restore(Recovered recovered, const TaskRegistry& registry);

  // Durability of events (Event::ticket): the ticket every batch up to
  // which is durable, and a way to run code once `ticket` is.
  uint64_t durable_ticket() const;
  // The journal batch open now (0 without a journal): what the changes made
  // so far wait for.
  uint64_t journal_ticket() const;
  // `fn(true)` once `ticket` is durable (at once without a journal);
  // `fn(false)` if it never will be (the journal was abandoned) or, with
  // kFailFast, while the journal cannot write.
  void WhenDurable(uint64_t ticket, std::function<void(bool durable)> fn,
                   Journal::Wait wait = Journal::Wait::kUntilDurable) const;
  // Why something could not be shown durable: Unavailable, naming the
  // journal's error (or that jobd is stopping).
  absl::Status NotDurable() const;

  // A page of jobs now, as held in memory (like GetJob); *more (if given)
  // is set when the page stopped at query.max_bytes before query.limit with
  // more jobs to list.
  std::vector<v1::Job> ListJobs(const ListJobsQuery& query,
                                bool* more = nullptr) const;
  // ListJobs, for a client: `done` gets the page and `more`.
  using PageCallback =
      std::function<void(absl::StatusOr<std::vector<v1::Job>>, bool more)>;
  void ShowJobs(const ListJobsQuery& query, PageCallback done) const;
  v1::GetStatsResponse GetStats() const;
  // Quarantine of tasks that kept killing their worker (process pool).
  bool IsQuarantined(const TaskDef& task) const;
  bool ClearQuarantine(std::string_view task);

  // Live reload (SIGHUP): max_queued, retention_ttl, max_retained and the
  // byte budgets take effect at once (a lower retention applies at the
  // next sweep).
  void SetLimits(const SchedulerOptions& options);
  // Live reload: resizes executor `kind` (JobExecutor::Resize); false if it
  // is absent or cannot change its size without a restart.
  bool ResizeExecutor(v1::Executor kind, int slots);

  // Drain: stop admitting jobs (Submit rejects with Unavailable).
  void BeginDrain();
  bool draining() const;
  // Waits until no job is running or `deadline`; true if none is running.
  bool WaitNoneRunning(absl::Time deadline);
  // At shutdown, after the grace: without a journal, ends every live job
  // CANCELLED (SHUTDOWN). With one, queued jobs stay queued in it for the
  // next start, running at-least-once jobs go back to queued there (their
  // runs here are stopped), and only running at-most-once jobs end
  // CANCELLED; from then on Cancel() keeps jobs as they are. Returns the
  // ids of the jobs it ended and the number it kept for the next start.
  std::pair<std::vector<uint64_t>, size_t> EndForShutdown();
  // Stops every executor (waiting up to `deadline` for tasks to return) and
  // the timer. Returns false if some task did not return in time.
  bool StopExecutors(absl::Time deadline);

  // Drops ended jobs past the TTL or over the count or byte limits, and
  // the oldest ones while the journal nears its cap (also runs
  // periodically).
  void SweepRetention();

 private:
  class Port;  // ExecutorListener of one executor.
  struct RunState;
  struct Job;
  struct Lane {  // One executor and its queue.
    std::unique_ptr<JobExecutor> executor;
    // priority (highest first) -> job ids FIFO; stale ids are skipped.
    absl::btree_map<int32_t, std::deque<uint64_t>, std::greater<int32_t>> queue;
    size_t queued = 0;  // Live entries in `queue`.
    size_t stale = 0;   // Entries of jobs cancelled while queued.
    int busy = 0;       // Slots started (a job or a chunk), not yet returned.
    uint64_t succeeded = 0, failed = 0, cancelled = 0;
    // Journal only: chunks claimed (their journal rows say they may have
    // begun, so a crash can never run an at-most-once job twice) that wait
    // for that record to be durable (`ticket`), then for a slot, in order.
    // Their jobs stay QUEUED to clients until handed to the executor.
    struct Gated {
      std::vector<JobRun> chunk;
      uint64_t ticket = 0;
    };
    std::deque<Gated> gated;
    size_t gated_jobs = 0;
    uint64_t gate_armed = 0;  // A wake-up is registered up to this ticket.
    // Moving average of a job's run time here (0: none ran yet): with the
    // journal's commit latency it sizes the claim-ahead window (Window()).
    absl::Duration run_time;
  };
  // Lets journal callbacks reach the scheduler while it lives: they count
  // themselves in `calls`; the destructor clears `self` and waits for 0.
  struct Life {
    absl::Mutex mu;
    Scheduler* self ABSL_GUARDED_BY(mu) = nullptr;
    int calls ABSL_GUARDED_BY(mu) = 0;
  };
  // Work to do once mu_ is released.
  struct After {
    absl::InlinedVector<std::shared_ptr<EventSink>, 4> flush;
    // Answers to waiting callers: run once `ticket` is durable (true), or
    // when it never will be (false).
    std::vector<std::function<void(bool durable)>> calls;
    uint64_t ticket = 0;
    // Wake-ups for gated starts: (ticket, callback).
    std::vector<std::pair<uint64_t, std::function<void(bool)>>> gates;
    void Run(Journal* journal);
  };

  void OnProgress(v1::Executor kind, uint64_t id, double fraction,
                  std::string_view message);
  void OnFinished(v1::Executor kind, std::span<FinishedJob> jobs);
  // Without the lock: makes a run's output valid UTF-8 and its error
  // message short and valid; drops a result that cannot fit a message.
  // Returns the result's bytes (0 for an error).
  size_t PrepareOutcome(JobOutcome& outcome) const;
  // A run ended: records it and ends its job (unless it ended already); a
  // result of `result_bytes` that does not fit with the job's spec fails it
  // RESULT_TOO_LARGE.
  void EndRun(v1::Executor kind, uint64_t id, JobOutcome& outcome,
              size_t result_bytes, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a result of `result_bytes` fits one message with `job`'s spec
  // (options_.max_message_bytes); sets *spec_bytes when it measured it.
  bool ResultFits(size_t result_bytes, const Job& job,
                  size_t* spec_bytes) const;
  static size_t WireSpecBytes(const Job& job);
  void OnTimeout(uint64_t id);

  // Stamps `event` (sequence, time, job), records the job's new state in
  // the journal (all but PROGRESS), logs the event and delivers it.
  void Emit(Job& job, Event event, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts what the executor has room for: gated chunks whose claim is
  // durable first, then queued jobs (through the gate with a journal).
  void Dispatch(v1::Executor kind, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartDurable(v1::Executor kind, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnStartsDurable(v1::Executor kind);
  // Starts the job's timeout clock (if its spec has one) at `now`: when
  // its run is handed to the executor.
  void ArmTimeout(Job& job, JobRun& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How many jobs `lane` may claim beyond its free slots (journal only).
  size_t Window(const Lane& lane, int capacity) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What the executor needs to run a queued job (a fresh run state).
  JobRun PrepareRun(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the job RUNNING as its run is handed to the executor: start time,
  // timeout clock, STARTED event.
  void MarkStarted(Job& job, JobRun& run, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The journal batch the event of `sequence` waits for (0: durable).
  uint64_t TicketOf(uint64_t sequence) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Job& job, std::shared_ptr<JobEnd> end, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FireWaiter(uint64_t id, uint64_t waiter_id);
  // What each owner's jobs hold (OwnerQuota).
  struct OwnerUsage {
    size_t live = 0;              // Jobs not ended.
    uint64_t live_bytes = 0;      // Their specs.
    uint64_t retained_bytes = 0;  // Specs and ends of its retained jobs.
    uint64_t max_bytes = 0;       // OwnerQuota::max_bytes, as last given.
    std::deque<uint64_t> ended;   // Its retained jobs, in end order.
  };
  // Forgets a retained job (and its journal row).
  void Evict(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the oldest retained job; false if there is none.
  bool EvictOldest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets `usage`'s oldest retained jobs while what its jobs hold, plus
  // `more`, is over its max_bytes.
  void TrimOwner(OwnerUsage& usage, uint64_t more)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the oldest retained jobs while the journal nears its cap, or
  // fails for want of room (once per failed write: the journal retries
  // with the deletes first).
  void RelieveJournal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const std::string* Intern(std::string_view owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job if it exists and belongs to `owner` (any, if empty).
  Job* FindOwned(uint64_t id, std::string_view owner) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's journal row (spec included).
  JournalRow RowOf(const Job& job) const;
  // Records the job's new state in the journal, if any (`insert`: the job
  // is new, its spec goes too).
  void JournalState(const Job& job, bool insert = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the stale entries of `lane`'s queue.
  void CompactQueue(Lane& lane) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a live job with `end` after stopping it (queued or running).
  void Abort(Job& job, CancelReason reason, std::shared_ptr<JobEnd> end,
             After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleSweep();
  v1::Job Snapshot(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The page `query` selects, in id order (see ListJobs); raises *ticket
  // (if given) to the largest TicketOf of its jobs.
  std::vector<v1::Job> ListLocked(const ListJobsQuery& query, bool* more,
                                  uint64_t* ticket) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Const after construction (but for the reloadable limits in limits_).
  const SchedulerOptions options_;
  const Clock& clock_;
  Journal* const journal_;              // Optional.
  std::deque<TaskDef> vanished_tasks_;  // Restored jobs of unknown tasks.
  const absl::Time start_time_;
  std::array<std::unique_ptr<Port>, 4> ports_;
  const std::shared_ptr<Life> life_;

  mutable absl::Mutex mu_;
  // max_queued, retention_ttl, max_retained: options_'s, or reloaded ones.
  SchedulerOptions limits_ ABSL_GUARDED_BY(mu_);
  std::array<Lane, 4> lanes_ ABSL_GUARDED_BY(mu_);  // By v1::Executor.
  Router router_ ABSL_GUARDED_BY(mu_);
  // Ordered by id, so ListJobs pages without sorting.
  absl::btree_map<uint64_t, std::unique_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> idempotency_ ABSL_GUARDED_BY(mu_);
  // Retained jobs in end order; also ids of some forgotten by their
  // owner's quota (TrimOwner), skipped.
  std::deque<uint64_t> ended_ ABSL_GUARDED_BY(mu_);
  size_t retained_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t retained_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Specs and ends.
  uint64_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;      // Live jobs' specs.
  // The journal's Usage::commits and ::write_errors when RelieveJournal
  // last acted on them.
  uint64_t relieved_at_commit_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t relieved_at_error_ ABSL_GUARDED_BY(mu_) = 0;
  // An event as the WatchJobs resume log keeps it, in 32 bytes (the log
  // holds up to event_log_size, about three per job): what it carries
  // (task, end, progress) is read from its job when it is replayed.
  struct LoggedEvent {
    uint64_t sequence = 0;
    uint64_t job_id = 0;
    CompactTime time;
    v1::EventType type = v1::EVENT_TYPE_UNSPECIFIED;
    v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  };
  // An ended job's terminal event, again (for a caller that joins late),
  // to be delivered once journal batch `ticket` is durable.
  Event EndOf(const Job& job, uint64_t ticket) const;
  // `logged` as delivered again to a watcher; `job` is its job.
  Event Replay(const LoggedEvent& logged, const Job& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::deque<LoggedEvent> event_log_ ABSL_GUARDED_BY(mu_);
  // With a journal: the event sequences of each batch not yet seen durable,
  // oldest first, so that a replayed event waits for its own batch only
  // (one of no batch here is durable).
  struct BatchSequences {
    uint64_t ticket = 0;
    uint64_t first = 0, last = 0;
  };
  std::deque<BatchSequences> batch_sequences_ ABSL_GUARDED_BY(mu_);
  std::vector<Subscriber> watch_all_ ABSL_GUARDED_BY(mu_);
  // Owner names, interned (stable pointers; as many as callers ever seen).
  absl::node_hash_set<std::string> owners_ ABSL_GUARDED_BY(mu_);
  absl::node_hash_map<const std::string*, OwnerUsage> usage_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  size_t live_ ABSL_GUARDED_BY(mu_) = 0;     // Not ended.
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;  // In state RUNNING.
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool kept_for_restart_ ABSL_GUARDED_BY(mu_) = false;  // EndForShutdown.

  TimerQueue timers_;  // Last: its thread calls into the members above.
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_SCHEDULER_H_
