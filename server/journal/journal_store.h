// JournalStore: the SQLite side of the journal (server/journal/journal.h),
// which queues records and commits them in groups through it:
//  * the database file: the schema and its migration from older jobd's,
//    opening with recovery (a damaged file is moved aside and a fresh one
//    started; anything else that makes it unusable fails Open, keeping the
//    file), the PRAGMAs of the configured durability and size cap;
//  * a row's encoding into the columns of the jobs table (EncodeRow) and
//    back (DecodeRow, journal.h);
//  * Write: folded records in one or more transactions, within the
//    configured records and bytes per transaction, each transaction's job
//    records appended to the log as one row (server/journal/journal_log.h);
//  * CompactStep, Compact: the log folded into the jobs table, in steps
//    between commits when compaction_due() says kSize, whole when it says
//    kRoom (a cap nearly reached) and at a clean close;
//  * how full the file is (pages in use, counted every so often) and the
//    giving back of free pages.
//
// Thread-safety: none. Open runs before the journal's writer thread
// starts; that thread alone uses the store afterwards.
// Ownership: owns the SQLite connection; on destruction, checkpoints the
// WAL into the database and closes it.
#ifndef JOBD_SERVER_JOURNAL_JOURNAL_STORE_H_
#define JOBD_SERVER_JOURNAL_JOURNAL_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/journal/journal.h"
#include "server/journal/journal_log.h"
#include "server/journal/journal_options.h"

struct sqlite3;
struct sqlite3_stmt;

namespace jobd {

// One queued change of the jobs table, or (kCallback) of the callbacks
// table.
struct JournalRecord {
  // kFolded: folded into an earlier record of its job in the same batch
  // (Journal::Fold); nothing to write.
  enum Kind : uint8_t { kInsert, kUpdate, kDelete, kCallback, kFolded };
  Kind kind;
  JournalRow row;  // kDelete, kCallback: only id.
  std::shared_ptr<const CallbackRecord> callback;  // kCallback only.
};

// The bytes EncodeRow serializes, reused from one row to the next.
struct EncodedBytes {
  std::string spec, result, error;
};

// Encodes `row` into the columns of the jobs table: `out` views `bytes`
// and row.owner. `insert`: the spec and the columns only an insert writes
// (create time, accepted_seq, owner) too; else they are left empty. A row
// without an end has NULL result and error; one with an end has both (the one
// its state does not use empty). DecodeRow(out) gives `row` back.
void EncodeRow(const JournalRow& row, bool insert, EncodedBytes& bytes,
               StoredRow* out);

class JournalStore {
 public:
  // Opens (or creates) the database at options.path and reads every row
  // into `recovered` (see Journal::Open).
  static absl::StatusOr<std::unique_ptr<JournalStore>> Open(
      const JournalOptions& options, Recovered* recovered);
  ~JournalStore();
  JournalStore(const JournalStore&) = delete;
  JournalStore& operator=(const JournalStore&) = delete;

  // Which records of a batch a Write takes: after a failure, deletes go
  // first, on their own, to free the room the rest may need.
  enum class Part { kAll, kDeletes, kAllButDeletes };
  struct Written {
    uint64_t rows = 0;        // Jobs journaled, after it.
    uint64_t used_bytes = 0;  // In use now (pages counted, bytes added).
    uint64_t bytes = 0;       // Of specs, results and errors written.
  };
  // Writes `records` (at most one per job and table: Journal folds them; a
  // callback record right after its job's record goes in the same
  // transaction) and, if not 0, `reserved_sequence` (event sequences
  // up to it may be handed out: Journal::ReserveSequences), in
  // one transaction per max_batch_records / max_transaction_bytes (one
  // per record with kEveryCommit). Every write is idempotent: a failed
  // Write (rolled back; transactions committed before it stay) may be
  // retried whole. ResourceExhausted when the disk or the size cap is
  // full, Internal for other failures.
  // `schedules` (the schedules table) and `key_limits` (in order, the
  // key_limits table) go in the last transaction, after every job record
  // (not with Part::kDeletes), with `reserved_job_id` if not 0
  // (Journal::ReserveJobIds).
  absl::StatusOr<Written> Write(const std::vector<JournalRecord>& records,
                                uint64_t reserved_sequence, Part part,
                                const ScheduleRecords& schedules = {},
                                const std::vector<KeyLimitRow>& key_limits = {},
                                uint64_t reserved_job_id = 0);

  // Folds log rows into the jobs table: each job they hold that is still
  // kept gets its row as of the last of them written once, a job they
  // forget has its row deleted, and the rows folded leave the log (the
  // entries after them replay over the table as before). Compact folds
  // the whole log in one transaction (a fold under way is taken over: what
  // it has not folded is read again); a failure (rolled back) leaves the
  // log as it was, to fold later.
  //
  // CompactStep folds only the log's older half (by bytes, when it
  // begins; the whole log if it was found at Open), and leaves the younger
  // half in place: the jobs a daemon keeps are mostly the recent ones,
  // whose entries are there, so a fold writes few rows and copies none,
  // and a job forgotten before its entries reach the older half never
  // costs a row of the table. A job of the older half already forgotten
  // (its delete is in a later log row) has no row written either: that
  // delete takes whatever row it had when a later fold reaches it.
  struct Compacted {
    uint64_t entries = 0;       // Log entries folded.
    uint64_t rows_written = 0;  // Rows inserted or updated in the table.
    uint64_t rows_deleted = 0;  // Rows deleted from it.
    // Jobs forgotten whose rows it looked for (not one inserted and
    // forgotten within the fold: it never had a row).
    uint64_t looked_for = 0;
    // Jobs it wrote no row for: forgotten by a delete after its log rows.
    uint64_t skipped = 0;
    uint32_t steps = 0;   // Transactions it took.
    absl::Duration took;  // In all (its steps').
  };
  absl::StatusOr<Compacted> Compact();
  // One step of a fold spread over several calls, for the commits between
  // them: each step holds the writer about as long as reading or writing
  // compact_step_bytes of the log takes (or four times what commits
  // appended since the step before, if more: the fold outruns them; a log
  // grown to twice the size that starts a fold has the rest folded at
  // once). The first call begins a fold of the log's older half as it is
  // then; the fold is under way (compacting()) until a step finishes it. A
  // failed step (rolled back) ends the fold: the steps before it stay
  // done, and the rest of the log is read again by the next fold.
  struct FoldStep {
    absl::Duration took;                // This step's.
    std::optional<Compacted> finished;  // The fold's, at its last step.
  };
  absl::StatusOr<FoldStep> CompactStep();
  bool compacting() const { return fold_ != nullptr; }
  // Whether the log is to be folded now, and why: kRoom, more than half of
  // max_bytes is in use and the log holds deletes (forgotten jobs' room
  // comes back only once folded: at once, whole); kSize, it has grown to
  // compact_log_bytes (or a quarter of max_bytes), and no fold is under
  // way (its older half, spread over commits).
  enum class Due { kNo, kRoom, kSize };
  Due compaction_due() const;

  // Bytes of the pages in use when last counted (at Open, after a
  // compaction, every so often at a commit).
  uint64_t used_bytes() const { return counted_bytes_; }

 private:
  JournalStore(const JournalOptions& options, sqlite3* db);

  // Write's transactions; Write undoes what a failed one changed here.
  absl::StatusOr<Written> WriteTransactions(
      const std::vector<JournalRecord>& records, uint64_t reserved_sequence,
      Part part, const ScheduleRecords& schedules,
      const std::vector<KeyLimitRow>& key_limits, uint64_t reserved_job_id);

  absl::Status Exec(const char* sql);
  // Steps a prepared statement that returns no rows (BEGIN, COMMIT).
  absl::Status Run(sqlite3_stmt* statement, const char* what);
  // Steps a statement that returns no rows, then resets it and clears its
  // bindings; on a failure, rolls the transaction back.
  absl::Status Step(sqlite3_stmt* statement);
  // Ends the open transaction, if SQLite has not already.
  void Rollback();
  // Binds `row` to the insert (all columns) or update statement.
  static void BindRow(sqlite3_stmt* statement, const StoredRow& row,
                      bool insert);
  // A delete of job `id` in the open transaction: out of live_ (put back
  // if the transaction fails), one more delete in the log.
  void Forget(uint64_t id);
  // Deletes the finished callbacks of jobs [first, last] and, with
  // `rows_too`, their rows in the jobs table.
  absl::Status RemoveRun(uint64_t first, uint64_t last, bool rows_too);
  // Counts the pages in use if due (or `now`), and gives free pages back.
  void Recount(bool now);
  uint64_t CompactAtBytes() const;
  // A fold's steps (Compact, CompactStep): begins a fold of the log's
  // oldest rows, up to `take_bytes` of them (one row at least); reads up
  // to `budget` bytes of them (finished: what each job's row becomes,
  // planned); folds them into the table (one transaction: rows of
  // forgotten jobs deleted until `deletes` are gone; once none is left,
  // log rows of up to `budget` bytes). A failure leaves fold_ to be
  // dropped.
  struct Fold;
  absl::Status BeginFold(uint64_t take_bytes);
  absl::Status ReadLog(uint64_t budget);
  absl::Status FoldRows(uint64_t budget, uint64_t deletes);
  // The fold's totals once it is done, or nothing.
  std::optional<Compacted> FinishFold();
  // A PRAGMA's integer; bytes of the pages in use, and of the free ones.
  uint64_t Pragma(const char* sql);
  struct Pages {
    uint64_t used_bytes = 0, free_bytes = 0;
  };
  Pages CountPages();

  const JournalOptions options_;
  sqlite3* const db_;
  struct Statements;
  std::unique_ptr<Statements> statements_;  // Prepared at Open.
  std::unique_ptr<LogWriter> log_writer_;
  std::unique_ptr<Fold> fold_;  // A fold under way (CompactStep), or null.
  uint64_t appended_since_step_ = 0;  // Log bytes, since its last step.
  // The log held rows at Open (another process's, maybe an older jobd's),
  // until a fold has taken them.
  bool log_from_open_ = false;
  std::string log_body_;      // The log row being built, reused.
  uint64_t log_bytes_ = 0;    // In the log.
  uint64_t log_deletes_ = 0;  // Delete entries in it.
  // Jobs journaled (in the table or the log, not deleted): their count,
  // and whether a finished callback's job is still kept. A B-tree, for the
  // same reason as LogReplay's: new ids go in at its end and forgotten
  // ones mostly leave near its start, both in cache.
  absl::btree_set<uint64_t> live_;
  // What the open transaction of a Write changes of the above: counted
  // once it commits; undone (live_: each id and whether it was live
  // before) if it fails.
  struct Uncommitted {
    uint64_t log_bytes = 0;
    uint64_t log_deletes = 0;
    std::vector<std::pair<uint64_t, bool>> live;
  };
  Uncommitted uncommitted_;
  // When CountPages last ran, what it found in use, and the bytes of specs
  // and results written since.
  absl::Time pages_counted_;
  uint64_t counted_bytes_ = 0;
  uint64_t written_since_count_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOURNAL_JOURNAL_STORE_H_
