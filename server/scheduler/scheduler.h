// Scheduler: the job table and state machine, admission control (queue
// limits, idempotency, per-caller quotas), timeouts, cancellation, waiters
// and stats: the one source of truth about jobs (DESIGN.md "Data flow").
//
//   QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
//   WAITING -> QUEUED       (a delay or not_before: due)
//   RUNNING -> WAITING      (a failed attempt that is retried: RETRYING)
//   WAITING -> QUEUED       (its dependencies ended: scheduler_deps.cc)
//   WAITING -> FAILED | CANCELLED (a dependency failed or was cancelled)
//
// WAITING jobs are in the Waiting set (waiting.h), one timer armed for the
// earliest; a queued job with a start or total deadline has a timer.
//
// A running job that is cancelled or times out ends at once (its terminal
// event goes out then); the executor slot stays busy until the task really
// returns, and whatever it returns late is dropped.
//
// It is a facade over parts, each a plain class used under its one lock:
//   JobTable   (job_table.h)  records by id, idempotency key and owner;
//   Lane       (lane.h)       an executor's queue, chunks, slots, and the
//                             durable-start gate and window;
//   EventLog   (event_log.h)  sequences, the resume log, journal batches,
//                             fan-out to subscribers and watchers;
//   Retention  (retention.h)  which ended jobs are kept, and how long;
//   Restorer   (restore.h)    journal rows -> jobs at start; what shutdown
//                             keeps for the next start;
//   Waiting    (waiting.h)    WAITING jobs by due time (delays, retries).
//   KeyLimits  (key_limits.h) limits by concurrency key: jobs holding each
//                             key, the jobs parked in it, its token bucket.
// The state machine itself (admit, start, end, cancel, time out) is here:
// scheduler.cc, with jobs over time (delays, retries, deadlines) in
// scheduler_time.cc, limits by key in scheduler_keys.cc, dependencies in
// scheduler_deps.cc, the read side
// (queries, waits, watches, stats) in scheduler_queries.cc and the daemon's
// life (restore, drain, shutdown, reload, sweeps) in scheduler_lifecycle.cc.
//
// Events: every state change gets a daemon-wide sequence number, is appended
// to a bounded event log (for WatchJobs resume) and delivered to the job's
// subscribers (the Submit stream that created it, streams watching it) and to
// the watchers of all jobs. Delivery happens under the scheduler lock, so each
// subscriber sees a job's events in order; EventSink::Deliver only queues.
//
// Thread-safety: every public method is thread-safe. One lock, mu_, guards
// every part. Lock order: scheduler mu_ -> EventSink internals / executor
// internals / journal / timer queue (leaves). Callbacks (sink Flush, wait
// callbacks) run after mu_ is released (AfterUnlock).
// Ownership: the scheduler owns jobs (by id), executors and the timer queue;
// sinks are shared with their streams.
#ifndef JOBD_SERVER_SCHEDULER_SCHEDULER_H_
#define JOBD_SERVER_SCHEDULER_SCHEDULER_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/callback_hook.h"
#include "server/jobs/job_id.h"
#include "server/jobs/job_types.h"
#include "server/jobs/key_claim.h"
#include "server/jobs/remote_jobs.h"
#include "server/jobs/work_share.h"
#include "server/journal/block_reservation.h"
#include "server/journal/journal.h"
#include "server/scheduler/after_unlock.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/dependencies.h"
#include "server/scheduler/event_log.h"
#include "server/scheduler/job_output.h"
#include "server/scheduler/job_record.h"
#include "server/scheduler/job_table.h"
#include "server/scheduler/key_limits.h"
#include "server/scheduler/lane.h"
#include "server/scheduler/retention.h"
#include "server/scheduler/router.h"
#include "server/scheduler/scheduler_options.h"
#include "server/scheduler/task_counters.h"
#include "server/scheduler/timer_queue.h"
#include "server/scheduler/waiting.h"
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
  // Newest first (by id, before `before_id` if not 0; after_id ignored):
  // the latest jobs, for a view of what happens now.
  bool newest_first = false;
  uint64_t before_id = 0;
  // Jobs looked at, matching or not, at most (0: no bound): bounds the time
  // a filtered page holds the scheduler's lock whatever the table holds.
  size_t max_scanned = 0;
  // Leaves out jobs run here for another node (cluster mode: they are
  // listed at the node that accepted them).
  bool own_only = false;
};

// A ListJobs request's filters and page size (page_size 0: 100, at most
// 1000) as a query for `owner`'s jobs (empty: every caller's);
// InvalidArgument naming the field. Its page token is the caller's to read.
absl::StatusOr<ListJobsQuery> ListJobsQueryOf(
    const v1::ListJobsRequest& request, std::string owner);
// Adds a ShowJobs page (`more`: cut short by bytes) to `response`, with
// the last job's id as the next page's token when there may be more.
void AddListJobsPage(std::vector<v1::Job> jobs, bool more, size_t limit,
                     v1::ListJobsResponse* response);

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
  size_t waiting = 0;  // WAITING again (their time has not come).
  // Their start or total deadline passed while jobd was down: FAILED.
  size_t expired = 0;
};

class Scheduler {
 public:
  // The journal's thread (OnStartsDurable) runs up to this many of the
  // trivial jobs a commit lets start; more go to the pool as one batch.
  static constexpr size_t kTrivialRunsOnJournal = 4;

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
  // Hands the terminal events of jobs with a callback URL to `hook` (not
  // owned; it must outlive the scheduler), before the first Submit and
  // Restore. Called under the scheduler lock (server/jobs/callback_hook.h).
  void SetCallbackHook(CallbackHook* hook);

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
  // Returns the last event sequence given then: the sink got every event
  // of `ids` up to it (a later Watch after it misses none).
  uint64_t Unwatch(const EventSink* sink, const std::vector<uint64_t>& ids);

  // Job output (job_output.h), for a client: what is kept of job `id`'s
  // output from `offset` on, up to about `max_bytes`. NotFound as GetJob.
  absl::StatusOr<OutputRead> ReadOutput(uint64_t id, std::string_view owner,
                                        uint64_t offset,
                                        size_t max_bytes) const;
  // Calls `fn` once (without locks, on the thread that appends output or
  // ends the job, or the journal's) when job `id`'s output may have
  // grown past `offset` or the job may have ended: read again then. False
  // (and `fn` is not kept) if that may be so already, or the job is gone.
  // `key` names the reader for CancelWhenOutput.
  bool WhenOutput(uint64_t id, uint64_t offset, const void* key,
                  std::function<void()> fn);
  void CancelWhenOutput(uint64_t id, const void* key);

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
  // Jobs ended per task, executor, state and reason, and run times per
  // task (a copy, for a metrics scrape; bounded label values).
  TaskCounters::Snapshot TaskEnds() const;
  // Quarantine of tasks that kept killing their worker (process pool).
  bool IsQuarantined(const TaskDef& task) const;
  bool ClearQuarantine(std::string_view task);

  // Live reload (SIGHUP): max_queued, retention_ttl, max_retained and the
  // byte budgets take effect at once (a lower retention applies at the
  // next sweep), and so do the callers' weights.
  void SetLimits(const SchedulerOptions& options);
  // Live reload: resizes executor `kind` (JobExecutor::Resize); false if it
  // is absent or cannot change its size without a restart.
  bool ResizeExecutor(v1::Executor kind, int slots);

  // Limits by key (scheduler_keys.cc). Sets `key`'s own limits (nullopt:
  // drops them; the config's apply again), at once, and records them in
  // the journal; `done` gets the key as it is then, once that record is
  // durable (NotDurable() if it cannot be), or ResourceExhausted past
  // kMaxRpcKeys keys. The key is not checked here (ValidateKey).
  using KeyLimitCallback = std::function<void(absl::StatusOr<v1::KeyLimit>)>;
  void SetKeyLimit(std::string key, std::optional<KeyLimit> limit,
                   KeyLimitCallback done);
  // The keys with limits or jobs (at most 1000, by key).
  std::vector<v1::KeyLimit> KeyLimitsNow() const;

  // Cluster mode's work sharing (scheduler_cluster.cc). Sets the hook
  // that publishes jobs that would queue here (before Restore and the
  // first Submit; not owned, it must outlive the scheduler's use of it).
  void SetWorkShare(WorkShareHook* hook);
  // A shared job (in the outbox, by id and create time) was acknowledged
  // by Redis: journaled as published. False if it is not that job now.
  bool MarkPublished(uint64_t id, int64_t create_ns);
  // A shared job's end came back from the node that ran it: it ends here
  // with `end`. False (nothing changes) if it is unknown, not shared, has
  // ended already or was another job (create time). *ticket (if given):
  // the journal batch that holds the end.
  // `start_time` (if not InfinitePast): when its run began there; the job's
  // STARTED event comes just before its end if no note brought it.
  bool EndShared(uint64_t id, int64_t create_ns, std::shared_ptr<JobEnd> end,
                 absl::Time start_time, uint64_t* ticket = nullptr);
  // A shared job runs on another node since `start_time` (its end may
  // bring it too), with `progress` (if not null): the first start it hears
  // of is its STARTED event here (the job shows RUNNING from then on,
  // though its place here stays a queued job's), a progress its PROGRESS
  // event (at most one per kProgressInterval). False (nothing changes) as
  // for EndShared.
  bool SharedRunning(uint64_t id, int64_t create_ns, absl::Time start_time,
                     std::shared_ptr<const v1::Progress> progress);
  // Live jobs in the outbox (to publish again: after a restart, or after
  // a failed publish).
  std::vector<SharedJob> Outbox() const;
  // How many jobs of any executor would start at once now (0 while
  // draining): what a node may take from the cluster.
  int IdleSlots() const;
  // Live jobs shared with the cluster (in the outbox or published).
  size_t shared_jobs() const;

  // Cluster mode: depends_on may name another node's job
  // (scheduler_deps.cc), followed through `remote` (WaitJob there, in
  // rounds). Before Restore and the first Submit; null unhooks (later
  // rounds stop; their dependants wait on, for their deadlines).
  void SetRemoteJobs(std::shared_ptr<RemoteJobs> remote);

  // Cluster-wide idempotency keys (scheduler_claims.cc). Sets the hook
  // that claims keys in Redis (before Restore and the first Submit; not
  // owned, it must outlive the scheduler's use of it).
  void SetKeyClaims(KeyClaimHook* hook);
  // Held job `id` (create time `create_ns`) holds its key (or its claim
  // could not be made: the key is this node's alone): it goes on as a new
  // job. Returns its end if it ended while held (the claim is to record
  // it), else null.
  std::shared_ptr<const JobEnd> ClaimWon(uint64_t id, int64_t create_ns);
  // Job `other_id` of node `other_node` holds the key: held job `id`
  // becomes its mirror, answered to its submitter as a duplicate of that
  // job (its events name `other_id@other_node`); it ends
  // with `other_end` now if that job ended, else when its end comes back
  // (EndShared). False (nothing happens) if `id` is no longer held.
  // *ticket (if given): the journal batch that holds the change.
  bool ClaimLost(uint64_t id, int64_t create_ns, uint64_t other_id,
                 std::string_view other_node, std::shared_ptr<JobEnd> other_end,
                 uint64_t* ticket = nullptr);

  // Drain: stop admitting jobs (Submit rejects with Unavailable) and
  // starting queued ones. Jobs run here for other nodes (cluster mode)
  // that are not running and have not begun, or are at least once, are
  // handed back to the cluster at once (HandBack).
  void BeginDrain();
  bool draining() const;
  // Waits until no job is running or `deadline`; true if none is running.
  bool WaitNoneRunning(absl::Time deadline);
  // At shutdown, after the grace: without a journal, ends every live job
  // CANCELLED (SHUTDOWN). With one, queued jobs stay queued in it for the
  // next start, running at-least-once jobs go back to queued there (their
  // runs here are stopped), and only running at-most-once jobs end
  // CANCELLED; from then on Cancel() keeps jobs as they are. Jobs run here
  // for other nodes are handed back (HandBack) or, at most once and begun,
  // end CANCELLED: the cluster's record of them is in Redis. Returns the
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
  using After = AfterUnlock;
  using Job = JobRecord;
  // Lets journal callbacks reach the scheduler while it lives: they count
  // themselves in `calls`; the destructor clears `self` and waits for 0.
  struct Life {
    absl::Mutex mu;
    Scheduler* self ABSL_GUARDED_BY(mu) = nullptr;
    int calls ABSL_GUARDED_BY(mu) = 0;
  };
  // Runs `fn(scheduler)` unless the scheduler is gone; the destructor waits
  // for it (without life->mu held: fn may call this again, nested).
  template <typename Fn>
  static void IfAlive(const std::shared_ptr<Life>& life, Fn&& fn) {
    Scheduler* self;
    {
      absl::MutexLock lock(&life->mu);
      if (life->self == nullptr) return;
      self = life->self;
      ++life->calls;
    }
    fn(*self);
    absl::MutexLock lock(&life->mu);
    --life->calls;
  }

  // ---- the state machine (scheduler.cc) ----
  void OnProgress(v1::Executor kind, uint64_t id, double fraction,
                  std::string_view message);
  void OnFinished(v1::Executor kind, std::span<FinishedJob> jobs);
  // Without the lock: makes a run's output valid UTF-8 and its error
  // message short and valid; drops a result that cannot fit a message.
  // Returns the result's bytes (0 for an error).
  size_t PrepareOutcome(JobOutcome& outcome) const;
  // A run ended: records it and ends its job (unless it ended already); a
  // result of `result_bytes` that does not fit with the job's spec fails it
  // RESULT_TOO_LARGE. True if it was a guest run of the process pool's
  // lane (Lane::set_guest), whose slot is now free.
  bool EndRun(v1::Executor kind, uint64_t id, JobOutcome& outcome,
              size_t result_bytes, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnTimeout(uint64_t id);
  // Keeps `progress` as the job's latest; its PROGRESS event unless one
  // went out less than kProgressInterval ago.
  void Progressed(Job& job, std::shared_ptr<const v1::Progress> progress,
                  After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A shared job (in the outbox or published, live, created at
  // `create_ns`), or null (scheduler_cluster.cc).
  Job* LiveShared(uint64_t id, int64_t create_ns)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Another node began running shared `job` at `start_time` (if not
  // InfinitePast): its STARTED event, at the first start heard of (its
  // record lingers: it joins the next commit, the end's as a rule).
  void StartedElsewhere(Job& job, absl::Time start_time, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stamps `event` (sequence, time, job), records the job's new state in
  // the journal (all but PROGRESS), logs the event and delivers it.
  void Emit(Job& job, Event event, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts what the executor has room for: gated chunks whose claim is
  // durable first, then queued jobs (through the gate with a journal).
  void Dispatch(v1::Executor kind, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands the lane's claimed chunks whose claim is durable to its executor
  // while it has free slots; arms a wake-up for the next one.
  void StartDurable(v1::Executor kind, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnStartsDurable(v1::Executor kind);
  // Whether a job of `task` with `spec` runs on `lane` as a trivial one:
  // outside its slots, on a scheduler thread or as a batch (Hand).
  static bool RunsTrivially(const Lane& lane, const TaskDef& task,
                            const v1::JobSpec& spec);
  // Hands started `chunk` to the lane's executor in one slot; or, runs of
  // trivial tasks on the thread pool (TaskDef::trivial, a small spec), to
  // `after`, whose thread runs them (RunTrivial): no slot, no hand-off.
  void Hand(Lane& lane, std::vector<JobRun> chunk, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Without the lock: runs trivial tasks' `runs` on this thread, one after
  // another, and reports them as the thread pool's, in one go. The runs
  // those reports start in turn (dependants, the queue behind them) are
  // run by the same loop, not by a nested call.
  void RunTrivial(std::vector<JobRun> runs) ABSL_LOCKS_EXCLUDED(mu_);
  // Starts the job's timeout clock (if its spec has one) at `now`: when
  // its run is handed to the executor.
  void ArmTimeout(Job& job, JobRun& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What the executor needs to run a queued job (a fresh run state).
  JobRun PrepareRun(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the job RUNNING as its run is handed to the executor: start time,
  // timeout clock, STARTED event.
  void MarkStarted(Job& job, JobRun& run, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // clock_'s time, read once per `after` (AfterUnlock::now).
  absl::Time Now(After& after) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Output of job `id` (from its executor): kept if it runs, its entry in
  // outputs_ opened at its first write (Job::output).
  void AppendOutput(uint64_t id, v1::OutputStream stream,
                    std::string_view bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether `job`'s run may write output now: it runs, or was stopped at
  // its timeout and has not returned yet.
  static bool RunMayWrite(const Job& job);
  // `job` gets an entry in outputs_ (Job::output, for its first write or a
  // reader's wait): open now if its run may write, else from its start.
  void MarkOutput(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a live job with `end`: its terminal event, its waiters answered,
  // retained (`job` may be forgotten by retention on return).
  void Finish(Job& job, std::shared_ptr<JobEnd> end, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a live job with `end` after stopping it (queued or running).
  void Abort(Job& job, CancelReason reason, std::shared_ptr<JobEnd> end,
             After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the job's new state in the journal, if any (`insert`: the job
  // is new, its spec goes too). Returns the record's ticket; 0 when it is
  // not journaled.
  uint64_t JournalState(const Job& job, bool insert = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new job's id; with a journal, reserves ids there ahead of it.
  uint64_t NewJobId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the job's changes go to the journal: there is one, and the
  // job is neither in memory (spec.in_memory) nor another node's (cluster
  // mode: its record is its entry in Redis).
  bool Journaled(const Job& job) const {
    return journal_ != nullptr && job.cluster != Job::kForeign &&
           (job.spec == nullptr || !job.spec->in_memory());
  }
  // Whether a journaled job may start only once its claim is durable (so
  // that a crash can never run it twice): all but at-least-once ones.
  static bool NeedsClaim(const Job& job) {
    return job.spec == nullptr ||
           job.spec->delivery() != v1::DELIVERY_AT_LEAST_ONCE;
  }

  // ---- jobs over time (scheduler_time.cc) ----
  // Puts `job` WAITING until `due` (its record holds `due`: job_record.h).
  void Wait(Job& job, absl::Time due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms the one timer of the Waiting set for its earliest due time.
  void ArmWaiting() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWaitingDue();
  // Queues a job that may run now (new, due, restored or retried) in its
  // lane, with a timer for its start or total deadline; or ends it at
  // once if a deadline has passed. `journal`: record its QUEUED state.
  // Returns false if it ended.
  bool Enqueue(Job& job, absl::Time now, bool journal, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnQueuedDeadline(uint64_t id);
  // The end of a job whose start or total deadline passed at `now`
  // (EXPIRED if it never started, else DEADLINE_EXCEEDED); null if none
  // has passed.
  std::shared_ptr<JobEnd> DeadlineEnd(const Job& job, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A run of `job` (RUNNING) failed with `end`: records the attempt in its
  // history (if it may retry at all) and, if its policy and deadline
  // allow another attempt, stops the run if `stop_run` (a timeout), makes
  // it WAITING for its backoff with a RETRYING event, and returns true.
  bool RetryRun(Job& job, const JobEnd& end, bool stop_run, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A run of `job` that had stopped being its current one returned: a job
  // retrying after a timeout joins the Waiting set now.
  void RunReturned(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- limits by key (scheduler_keys.cc) ----
  // `job` (keyed, just taken off its lane) is to start: true if it holds
  // its key now (or was granted it while parked); false if it was parked
  // in its key instead.
  bool AcquireKey(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Job `id`'s hold on its key ended (if it had one).
  void ReleaseKey(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (keys_.holding()) ReleaseKeySlow(id);
  }
  void ReleaseKeySlow(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts the jobs KeyLimits granted back at the front of their lanes
  // (marked for DispatchKeyed) and arms the wake-ups it asked for.
  void ApplyKeys(KeyLimits::Out& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Dispatches the lanes that granted jobs went back to.
  void DispatchKeyed(After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnKeyWake(const std::string& key);

  // ---- dependencies (scheduler_deps.cc) ----
  // How a dependant of `spec` ends because its dependency `dependency`
  // ended `state` (`reason`); null if that dependency is met.
  static std::shared_ptr<JobEnd> DependencyEnd(const v1::JobSpec& spec,
                                               std::string_view dependency,
                                               v1::JobState state,
                                               v1::ErrorReason reason);
  // A dependency's name in messages: its number, or "N@node" for
  // another node's job.
  std::string DependencyName(uint64_t id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Another node's job `ref`, as a dependency of `owner`'s jobs: its key
  // in deps_ (kRemoteDependency set), followed from the next FollowNew.
  uint64_t RemoteDependencyKey(const JobRef& ref, const std::string& owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Follows the remote dependencies made since the last call (after the
  // lock is released: RemoteJobs may answer at once).
  void FollowNew() ABSL_LOCKS_EXCLUDED(mu_);
  void ForgetRemote(uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks for remote dependency `key`'s end (one round), unless no job
  // waits for it any more.
  void FollowRemote(uint64_t key) ABSL_LOCKS_EXCLUDED(mu_);
  void OnRemoteDependency(uint64_t key, absl::StatusOr<v1::Job> job)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Resolves spec.depends_on for a job of `owner`: the live dependencies
  // to wait for (`unmet`, each once), and in `end` how it ends if one that
  // ended already is not met (null otherwise). InvalidArgument naming the
  // field if a dependency is unknown, forgotten or another owner's.
  // `restoring` (Restore): a dependency of this node forgotten since is
  // taken as met (it had ended and released the job: that record was
  // lost), and another node's job with cluster mode off now ends the job
  // in `end`.
  absl::Status ResolveDependencies(const v1::JobSpec& spec,
                                   const std::string& owner,
                                   std::vector<uint64_t>& unmet,
                                   std::shared_ptr<JobEnd>& end,
                                   bool restoring = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Job `id` ended `state` (`reason`): releases, fails or cancels the jobs
  // waiting for it, and so on down the graph; dispatches what is ready.
  void DependencyEnded(uint64_t id, v1::JobState state, v1::ErrorReason reason,
                       After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Works through ended_dependencies_ (DependencyEnded; Restore holds it
  // back with releasing_ until every live job is back).
  void ReleaseDependants(After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `job`'s last dependency ended and is met: it waits on for its due time
  // (a delay) or queues; true if it queued (its lane is to dispatch).
  bool DependenciesMet(Job& job, absl::Time now, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A ready `job` that asks for its dependencies' results
  // (spec.dependency_results) gets them: its spec and bound arguments are
  // replaced by ones holding them and journaled whole. False if it ended
  // instead (DEPENDENCY_FAILED: a result is not retained, or too large;
  // INVALID_INPUT: its task's own check refused them). True for any other.
  bool PassDependencyResults(Job& job, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- the read side (scheduler_queries.cc) ----
  // The job as a v1::Job, its callback's status included.
  v1::Job Snapshot(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FireWaiter(uint64_t id, uint64_t waiter_id);
  // The page `query` selects, in id order (see ListJobs); raises *ticket
  // (if given) to the largest TicketOf of its jobs.
  std::vector<v1::Job> ListLocked(const ListJobsQuery& query, bool* more,
                                  uint64_t* ticket) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- cluster mode's work sharing (scheduler_cluster.cc) ----
  // `job` may be published rather than queued here.
  bool Shareable(const NewJob& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps `job` (QUEUED, out of the lanes) for the cluster: its deadlines
  // armed here, and published if it is in the outbox.
  void ShareJob(Job& job, After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `job`, run here for another node, may go back to the cluster
  // for another node to run: it has not begun here, or it is at least once.
  bool MayHandBack(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands `job` (MayHandBack) back to the cluster: it ends here CANCELLED
  // (SHUTDOWN), a run of it stopped, and the hook gives its place back.
  void HandBack(Job& job, After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- cluster-wide idempotency keys (scheduler_claims.cc) ----
  // `job`'s key is to be claimed in the cluster before it goes on.
  bool Claimable(const NewJob& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Holds `job` (QUEUED, out of the lanes) until its claim is answered;
  // `sub` (its submitter, or none at restore) gets its ACCEPTED then.
  void HoldForClaim(Job& job, Job::Sub sub, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells `sink` (tag, mask) that `job` is accepted (`duplicate`: an
  // existing job), then its end if it has one, else subscribes it.
  void AnswerAccepted(Job& job, std::shared_ptr<EventSink> sink, uint64_t tag,
                      uint32_t mask, bool duplicate, After& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // If `job` is held, it no longer is: its submitter gets its ACCEPTED and
  // follows it. True if it was held.
  bool ReleaseClaim(Job& job, After& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- the daemon's life (scheduler_lifecycle.cc) ----
  void ScheduleSweep();

  // Const after construction.
  const SchedulerOptions options_;
  const Clock& clock_;
  Journal* const journal_;  // Optional.
  const absl::Time start_time_;
  std::array<std::unique_ptr<Port>, 4> ports_;
  const std::shared_ptr<Life> life_;
  // Jobs' output: its own lock, taken after mu_ or alone (executors append
  // without mu_).
  JobOutputs outputs_;

  mutable absl::Mutex mu_;
  // max_queued, max_live_bytes, max_retained_result_bytes: options_'s, or
  // reloaded ones (retention_ has the retention limits).
  SchedulerOptions limits_ ABSL_GUARDED_BY(mu_);
  // The parts (header above), each used only with mu_ held.
  JobTable table_ ABSL_GUARDED_BY(mu_);
  std::array<Lane, 4> lanes_ ABSL_GUARDED_BY(mu_);  // By v1::Executor.
  EventLog events_ ABSL_GUARDED_BY(mu_);
  Retention retention_ ABSL_GUARDED_BY(mu_);  // Refers to table_.
  Router router_ ABSL_GUARDED_BY(mu_);
  std::deque<TaskDef> vanished_tasks_ ABSL_GUARDED_BY(mu_);  // Restore.
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  TaskCounters task_counters_ ABSL_GUARDED_BY(mu_);
  CallbackHook* callback_hook_ ABSL_GUARDED_BY(mu_) = nullptr;  // Optional.
  KeyLimits keys_ ABSL_GUARDED_BY(mu_);
  // Lanes that granted keyed jobs went back to, to dispatch.
  std::array<bool, 4> key_dispatch_ ABSL_GUARDED_BY(mu_) = {};
  bool key_dispatching_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;  // In state RUNNING.
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool kept_for_restart_ ABSL_GUARDED_BY(mu_) = false;  // EndForShutdown.
  Waiting waiting_ ABSL_GUARDED_BY(mu_);
  // The Waiting set's one timer (0: none) and the time it is armed for.
  TimerQueue::TimerId waiting_timer_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time waiting_armed_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::BitGen jitter_ ABSL_GUARDED_BY(mu_);  // Backoff jitter.
  uint64_t retried_ ABSL_GUARDED_BY(mu_) = 0;
  Dependencies deps_ ABSL_GUARDED_BY(mu_);
  // Dependencies that ended, their dependants not yet released
  // (DependencyEnded's queue), and whether that loop runs now.
  struct EndedDependency {
    uint64_t id;
    v1::JobState state;
    v1::ErrorReason reason;
    // Set: its dependants fail DEPENDENCY_FAILED with this (a remote
    // dependency its node does not know).
    std::string unknown;
    // A remote dependency's end as its node told it (its result, if it
    // succeeded), for dependants that take their dependencies' results.
    std::shared_ptr<const v1::Job> remote;
  };
  std::deque<EndedDependency> ended_dependencies_ ABSL_GUARDED_BY(mu_);
  // Other nodes' jobs that jobs here wait for: keys in deps_ of their own
  // (the top bit set), by "<owner>\n<N@node>", until they end.
  static constexpr uint64_t kRemoteDependency = uint64_t{1} << 63;
  static constexpr absl::Duration kRemoteRound = absl::Seconds(30);
  static constexpr absl::Duration kRemoteRetry = absl::Seconds(1);
  struct RemoteDependency {
    JobRef ref;
    std::string owner;
    std::string name;  // "N@node".
  };
  std::shared_ptr<RemoteJobs> remote_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> remote_keys_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, RemoteDependency> remote_deps_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_remote_ ABSL_GUARDED_BY(mu_) = 0;
  // The ends of other nodes' jobs (by "N@node") that a dependant taking its
  // dependencies' results was released from, kept by dependant id until
  // its last dependency is met (PassDependencyResults) or it ends. Not
  // journaled: a restart follows those jobs again.
  absl::flat_hash_map<
      uint64_t,
      std::vector<std::pair<std::string, std::shared_ptr<const v1::Job>>>>
      remote_results_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> to_follow_ ABSL_GUARDED_BY(mu_);
  bool releasing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t expired_ ABSL_GUARDED_BY(mu_) = 0;
  // Job ids reserved in the journal (NewJobId), a block ahead; an
  // in-memory job's events wait for the reservation that covers its id.
  static constexpr uint64_t kIdBlock = 1 << 16;
  // Minimum spacing of PROGRESS events of one job (the latest is always
  // kept).
  static constexpr absl::Duration kProgressInterval = absl::Milliseconds(20);
  // A Submit's thread runs up to this many trivial jobs itself (Hand);
  // more go to the thread pool as one batch.
  static constexpr size_t kTrivialRunsInSubmit = 16;
  BlockReservation ids_reserved_ ABSL_GUARDED_BY(mu_){kIdBlock};
  WorkShareHook* work_share_ ABSL_GUARDED_BY(mu_) = nullptr;  // Optional.
  size_t shared_ ABSL_GUARDED_BY(mu_) = 0;  // Live shared jobs.
  KeyClaimHook* key_claims_ ABSL_GUARDED_BY(mu_) = nullptr;  // Optional.
  // Jobs held until their key's claim is answered, with their submitter.
  absl::flat_hash_map<uint64_t, Job::Sub> claiming_ ABSL_GUARDED_BY(mu_);

  TimerQueue timers_;  // Last: its thread calls into the members above.
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_SCHEDULER_H_
