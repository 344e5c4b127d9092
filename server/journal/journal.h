// Journal: the durable record of jobs, in an embedded SQLite database (WAL
// mode) in the state directory: every accepted job (its spec), every state
// change and every result, and how far event sequences and job ids were
// handed out (reserved a block ahead). On start, jobd reads it back (Open)
// to re-queue, fail or retain what it held.
//
// Group commit. The scheduler queues records under its own lock (Insert,
// Update, Delete: no I/O, no serialization) into the open batch; a writer
// thread takes the whole batch, folds the records of each job into one,
// and commits them in one transaction (one fsync), while the next batch
// fills. A commit appends its jobs' records to the log table as one row
// (server/journal/journal_log.h), not a row write per job; once the log
// holds JournalOptions::compact_log_bytes (or a quarter of max_bytes), the
// writer folds its older half into the jobs table after that commit, in
// steps, each job still kept written once (a job accepted, ended and
// forgotten while its records are in the log is never written there);
// past half of max_bytes, the whole log, at a commit that forgot jobs,
// before its waiters run (their room comes back only then). A clean close
// folds it all too; after a crash, Open replays it. Each batch has a
// ticket; an event is stamped with the ticket open when it was emitted, and
// nothing reaches a client before its ticket is durable (durable() >= ticket;
// WhenDurable runs code then). So a client never sees an ACCEPTED, STARTED or
// result that a crash could take back.
//
//   kNone        no journal (this class is not used)
//   kBatched     one transaction per batch, synchronous=FULL: durable on
//                disk (power loss included) a few ms after the record
//   kEveryCommit one transaction (and fsync) per record
//
// Failure: a write that fails (disk full, --journal-max-bytes reached, I/O
// error) is logged and retried; until it succeeds, accepting() is false
// and the records wait. usage() tells how full the database is (and
// whether it is failing for want of room), so that the scheduler can
// forget ended jobs early rather than refuse new ones. A database SQLite
// calls damaged (not a database, corrupt pages) is moved aside
// (jobd.db.corrupt-<time>) and a fresh one started; a row that does not
// parse comes back with its problem named (JournalRow::problem) and costs
// only its own job; a database that cannot be used for another reason (a
// newer schema, permissions, locked, I/O errors) fails Open and keeps its
// jobs.
//
// This class queues, commits in groups and runs the waiters; the SQLite
// side (schema, statements, a row's encoding and decoding, opening with
// recovery, how full the file is) is JournalStore
// (server/journal/journal_store.h).
//
// Thread-safety: Insert/Update/Delete/ReserveSequences/ticket()/durable()/
// WhenDurable/stats are thread-safe and never block on I/O (a leaf lock).
// The writer thread owns the SQLite connection (the JournalStore).
#ifndef JOBD_SERVER_JOURNAL_JOURNAL_H_
#define JOBD_SERVER_JOURNAL_JOURNAL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/callback_hook.h"
#include "server/jobs/job_types.h"
#include "server/journal/journal_options.h"
#include "server/telemetry/histogram.h"

namespace jobd {

class JournalStore;    // server/journal/journal_store.h
struct JournalRecord;  // server/journal/journal_store.h

// What the journal keeps of a job: a row of the jobs table.
struct JournalRow {
  uint64_t id = 0;
  std::string owner;  // The caller that submitted it (server/auth.h).
  // Written by Insert only (whole: AppendWholeTo); read back whole.
  StoredSpec spec;
  v1::JobState state = v1::JOB_STATE_QUEUED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  absl::Time create_time;
  absl::Time start_time = absl::InfinitePast();   // Unset: not started.
  absl::Time finish_time = absl::InfinitePast();  // Unset: not ended.
  std::shared_ptr<const JobEnd> end;              // Terminal only.
  uint64_t accepted_seq = 0, started_seq = 0, ended_seq = 0;
  uint32_t attempts = 1;  // Runs started, counting re-runs after restarts.
  // WAITING: when it is due (a delay, or a retry's next attempt).
  absl::Time due_time = absl::InfinitePast();
  // Its failed attempts: a serialized v1::Job holding only its history
  // (bounded: server/scheduler/retry_policy.h), or null.
  std::shared_ptr<const std::string> history;
  // Cluster mode's work sharing (server/cluster/work_sharing.h): 0 a local
  // job; 1 in the outbox (to publish to Redis); 2 published (Redis holds
  // it; its end comes back from the node that ran it).
  uint8_t cluster = 0;
  // Read back only: why the row could not be read (its spec, result or
  // error does not parse, a state out of range, ...), or "" if it could.
  // Such a row comes back with what could be salvaged (id, owner, the task
  // name, times and sequences), no end, and the scheduler fails that job
  // alone (Scheduler::Restore).
  std::string problem;
};

// A row of the jobs table as stored: the columns Open reads back.
struct StoredRow {
  int64_t id = 0;
  int64_t state = 0;
  int64_t executor = 0;
  std::string_view spec;
  std::optional<std::string_view> result;  // nullopt: NULL.
  std::optional<std::string_view> error;   // nullopt: NULL.
  int64_t create_ns = 0, start_ns = 0, finish_ns = 0;
  int64_t accepted_seq = 0, started_seq = 0, ended_seq = 0;
  int64_t attempts = 0;
  std::string_view owner;  // Bytes as stored.
  int64_t due_ns = 0;
  std::optional<std::string_view> history;  // nullopt: NULL.
  int64_t cluster = 0;
};

// Reads one stored row back. Never fails: what does not parse or is out of
// range is named in JournalRow::problem; every string of the row it returns
// is valid UTF-8 (the owner is repaired). Open calls it for every row.
JournalRow DecodeRow(const StoredRow& stored);

// The schedules table (server/schedules): one opaque row per schedule id,
// written with the batch open when it is put (so a schedule's row is never
// durable before the jobs queued ahead of it). nullopt: deleted.
using ScheduleRecords = std::map<std::string, std::optional<std::string>>;

// A concurrency key's limits set through the API (a row of the key_limits
// table; 0 = no limit of that kind), or their removal (`clear`).
struct KeyLimitRow {
  std::string key;
  uint32_t max_running = 0;
  double rate = 0;  // Starts per second.
  bool clear = false;
};

// What Open found.
struct Recovered {
  std::vector<JournalRow> rows;  // By id.
  // The schedules table: (id, body) by id.
  std::vector<std::pair<std::string, std::string>> schedules;
  std::vector<KeyLimitRow> key_limits;  // By key; none `clear`.
  // Event sequences up to this one may have been handed out (rows' and
  // ReserveSequences'): the next start's come after it.
  uint64_t last_sequence = 0;
  // Job ids up to this one may have been handed out (ReserveJobIds): the
  // next start's ids come after it.
  uint64_t reserved_job_id = 0;
  // Set when the old database was damaged and moved aside: where to, why.
  std::string moved_aside;
  // The callbacks table, by job id: every pending callback (url and event
  // set) and the final state of those whose job is still journaled.
  std::vector<CallbackRecord> callbacks;
};

class Journal {
 public:
  // Opens (or creates) the database at options.path and reads it back.
  // FailedPrecondition if no usable database can be had without giving up
  // its jobs (the directory is not writable, a newer schema, locked, I/O
  // errors); a damaged one is moved aside (Recovered::moved_aside).
  static absl::StatusOr<std::unique_ptr<Journal>> Open(JournalOptions options,
                                                       Recovered* recovered);
  ~Journal();  // Commits what is queued (unless writes fail), then closes.
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // ---- records: queued, never blocking; each returns the open ticket ----
  // A record that may linger (kYes; a delete always does) does not start a
  // commit by itself: the batch waits up to JournalOptions::linger for one
  // that must not wait (every other kind of record; a job's end, as a
  // rule) to share its commit. A job's records linger but its claim and its
  // end, so that a short job's accept and end take one commit (or its claim's
  // and its end's, at most once). Tickets are unchanged: a record is in the
  // open batch, whichever commits it.
  enum class Linger { kNo, kYes };
  // A new job, spec included.
  uint64_t Insert(JournalRow row, Linger linger = Linger::kNo);
  // Its state changed (spec not written).
  uint64_t Update(JournalRow row, Linger linger = Linger::kNo);
  // Its end, with its callback's first record: both in one transaction.
  uint64_t Update(JournalRow row, CallbackRecord callback);
  // A callback's new status (a row of the callbacks table): a final one
  // (not PENDING) is kept only while its job's row is, and a job's row
  // deleted takes its finished callback with it (a pending one stays).
  uint64_t PutCallback(CallbackRecord callback);
  // Forgotten (retention). It always lingers: nothing waits for a row's
  // delete, and a job ending on a daemon at its retention limit forgets
  // another, an in-memory job too (which commits nothing else): a commit of
  // its own for each would cost every such job an fsync's worth of the
  // writer's work.
  uint64_t Delete(uint64_t id);
  // A key's limits set (or cleared) through the API, kept across restarts.
  uint64_t SetKeyLimit(KeyLimitRow row);
  // Event sequences up to `up_to` may be handed out: once durable, no
  // later start gives them again (Recovered::last_sequence). Stored with
  // the open batch; reserved a block ahead (EventLog), so that a commit
  // writes the meta row once per block, not once per batch.
  uint64_t ReserveSequences(uint64_t up_to);
  // Job ids up to `up_to` may be handed out: once durable, no later start
  // gives them again (Recovered::reserved_job_id), whether or not their
  // jobs were ever journaled (in-memory jobs, forgotten ones). Stored with
  // the open batch.
  uint64_t ReserveJobIds(uint64_t up_to);
  // A schedule's row (server/schedules), replacing any of the same id, or
  // its removal. Written in the open batch after its jobs' records.
  uint64_t PutSchedule(std::string id, std::string body);
  uint64_t DeleteSchedule(std::string id);

  // The batch being filled: what an event emitted now waits for.
  uint64_t ticket() const;
  // Every batch up to this one is durable.
  uint64_t durable() const;
  // Runs `fn(true)` once `ticket` is durable: at once if it is, else after
  // the commit, in ticket order, without locks held: on the notifier thread
  // (the writer goes on with the next batch meanwhile), or, for a batch of
  // a few records (a lone job's) with nothing before it, on the writer
  // itself, a thread hop sooner. `fn` must not wait for the journal. Runs
  // `fn(false)` if it never will be: after Abandon (at once, or from Abandon).
  // With kFailFast, also `fn(false)` once writes have failed for
  // JournalOptions::outage_grace (at once while they have): for an answer
  // that must not wait out an outage (last_error() says why).
  using DurableFn = std::function<void(bool durable)>;
  enum class Wait { kUntilDurable, kFailFast };
  void WhenDurable(uint64_t ticket, DurableFn fn,
                   Wait wait = Wait::kUntilDurable);
  // Gives up on what is not durable yet (shutdown with failing writes): the
  // writer stops retrying, and every waiter runs now with false.
  void Abandon();
  // False while writes fail (disk full, ...): new jobs should be refused.
  bool accepting() const;
  // The latest write error ("" if none since start).
  std::string last_error() const;
  // How long a record waits to be durable, at most (from the first record
  // of a batch to its commit): a moving average over recent commits; zero
  // before the first.
  absl::Duration commit_latency() const;
  // How full the database is, as of the last commit.
  struct Usage {
    // Pages in use (free pages left out): counted at every commit once
    // half the cap is in use, else every 50 ms, with the bytes written
    // since added meanwhile.
    uint64_t used_bytes = 0;
    uint64_t max_bytes = 0;     // JournalOptions::max_bytes; 0 = unlimited.
    uint64_t commits = 0;       // Commits so far: a new figure when it grows.
    uint64_t write_errors = 0;  // Failed attempts so far.
    bool full = false;  // Writes fail now for want of room (cap or disk).
  };
  Usage usage() const;
  // Waits until everything queued so far is durable or `deadline` passes.
  bool Flush(absl::Time deadline);

  // Adds a JournalStats to `stats`.
  void AddStats(v1::GetStatsResponse& stats) const;
  // Every commit so far, for the metrics endpoint: how long each took
  // (seconds, retries included), how many job records it held (after
  // folding), and the bytes of specs, results and errors written; and the
  // folds of the log (how long each step held the writer, how many steps
  // failed).
  struct Commits {
    HistogramSnapshot seconds;
    HistogramSnapshot records;
    uint64_t bytes = 0;
    HistogramSnapshot compaction_seconds;
    uint64_t compaction_errors = 0;
  };
  Commits commits() const;

 private:
  struct Batch;
  explicit Journal(JournalOptions options);
  void WriterLoop();
  // Runs the waiters of the batches the writer made durable, in order.
  void NotifierLoop();
  // Folds the batch's records (in place: kFolded); returns how many are
  // left to write.
  static size_t Fold(Batch& batch);
  // Writes `batch` (folded) in one or more transactions; retries failures,
  // absorbing what is queued meanwhile (then `ticket` grows to match).
  // False if it gave up (failing writes at shutdown).
  bool Commit(Batch& batch, uint64_t& ticket);
  // Folds the log into the jobs table, `whole` (JournalStore::Compact) or
  // a step of a fold (CompactStep), counting it; after a failure, the next
  // is not tried before compaction_retry_at_.
  void FoldLog(bool whole);
  // Whether a step of a fold is to run: one is under way, or the log has
  // grown to its size (the writer thread's).
  bool FoldDue() const;

  const JournalOptions options_;
  // The database: the writer thread's (and Open's, before it).
  std::unique_ptr<JournalStore> store_;

  mutable absl::Mutex mu_;
  std::unique_ptr<Batch> open_ ABSL_GUARDED_BY(mu_);
  uint64_t open_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t durable_ ABSL_GUARDED_BY(mu_) = 0;
  std::multimap<uint64_t, DurableFn> waiters_ ABSL_GUARDED_BY(mu_);
  // kFailFast waiters: also run (false) when a write fails.
  std::multimap<uint64_t, DurableFn> fail_fast_ ABSL_GUARDED_BY(mu_);
  // Waiters of durable batches, for the notifier: a vector per commit.
  std::deque<std::vector<DurableFn>> notify_ ABSL_GUARDED_BY(mu_);
  bool notifier_stop_ ABSL_GUARDED_BY(mu_) = false;
  // The notifier is running waiters it took from notify_.
  bool notifying_ ABSL_GUARDED_BY(mu_) = false;
  // A committed batch's emptied record vector, for the next open batch (no
  // regrowth per batch).
  std::vector<JournalRecord> spare_records_ ABSL_GUARDED_BY(mu_);
  // The writer thread's: when a fold that failed is tried again.
  absl::Time compaction_retry_at_ = absl::InfinitePast();
  absl::Duration compaction_backoff_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
  bool failing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time failing_since_ ABSL_GUARDED_BY(mu_);  // When writes began to fail.
  bool full_ ABSL_GUARDED_BY(mu_) = false;         // Failing for want of room.
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Stats.
  uint64_t rows_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t commits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t records_written_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t write_errors_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration last_commit_ ABSL_GUARDED_BY(mu_);
  absl::Duration commit_latency_ ABSL_GUARDED_BY(mu_);  // Moving average.
  Histogram commit_seconds_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram commit_records_ ABSL_GUARDED_BY(mu_){kCountBounds};
  uint64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t compaction_errors_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram compaction_seconds_ ABSL_GUARDED_BY(mu_){kSecondsBounds};

  std::thread notifier_;  // Last: started once the rest exists.
  std::thread writer_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOURNAL_JOURNAL_H_
