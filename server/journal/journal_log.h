// JournalLog: the format of the journal's log, and its replay.
//
// A commit does not write each job's row into the jobs table (a B-tree
// insert, update or delete per job, most of a small job's journal cost):
// it appends the changes of the jobs it holds to the log table as one row,
// a sequence of entries. Each entry is framed by the job's id, the kind of
// change and the length of its body, a jobd.journal.LogRecord
// (proto/jobd/journal/log.proto):
//
//   varint id | varint kind (0 insert, 1 update, 2 delete) | varint length |
//   body (length bytes; none for a delete, whose body a reader skips)
//
// Reading it back replays the entries in order over the jobs table: an
// insert replaces a job's row, an update sets every column but the spec
// and the other insert-only ones (as the UPDATE statement of the table
// does; an update of a job without a row is dropped, as that statement
// drops it), a delete removes it. Compaction (JournalStore) folds the log
// into the jobs table the same way, now and then (between commits, its
// older half; all of it at a clean close or near the size cap), writing
// rows only for the jobs still kept, so that a job inserted, ended and
// forgotten while its entries are in the log never touches the table.
//
// Thread-safety: none (the journal's writer thread, or Open before it).
// Ownership: LogWriter owns its scratch columns; LogReplay keeps where
// entries are, not their bytes (the caller keeps the rows); the views
// LogRecordParser sets point into its own messages.
#ifndef JOBD_SERVER_JOURNAL_JOURNAL_LOG_H_
#define JOBD_SERVER_JOURNAL_JOURNAL_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/btree_map.h"
#include "server/journal/journal.h"

namespace jobd {

struct JournalRecord;  // server/journal/journal_store.h
struct EncodedBytes;   // server/journal/journal_store.h

// Appends the job records (kInsert, kUpdate, kDelete) given to it to one
// log row's bytes. Reused from one commit to the next (no allocation per
// record once warm).
class LogWriter {
 public:
  LogWriter();
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // Appends `r` to `body`; returns the bytes of its spec, result, error and
  // history (what the journal's byte figures count).
  uint64_t Append(const JournalRecord& r, std::string* body);

 private:
  struct Scratch;
  std::unique_ptr<Scratch> scratch_;
};

// One entry of a log row.
struct LogEntry {
  enum Kind : uint8_t { kInsert = 0, kUpdate = 1, kDelete = 2 };
  uint64_t id = 0;
  Kind kind = kDelete;
  std::string_view body;  // A LogRecord; empty for a delete.
};

// Appends `e` (its id, kind and body) framed as a log row holds it.
void AppendLogEntry(const LogEntry& e, std::string* body);

// Takes the next entry off the front of `rest`. False at its end, or if
// the framing is broken (then `*broken` says how, and the rest of the row
// cannot be read).
bool NextLogEntry(std::string_view& rest, LogEntry* out, std::string* broken);

// Where an entry's body is: its log row (numbered from 0 in log order) and
// its bytes there.
struct LogPos {
  uint32_t row = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
  std::string_view In(std::string_view row_body) const {
    return row_body.substr(offset, length);
  }
  uint64_t Order() const { return uint64_t{row} << 32 | offset; }  // In log.
};

// The log's entries replayed, by job: which of a job's entries make its
// row. Keeps no bytes, only where they are.
class LogReplay {
 public:
  struct Job {
    bool deleted = false;  // Its row is gone (and none was inserted since).
    // Its last insert (spec and every column), if one came since it was
    // last deleted: the table's row, if any, is replaced.
    bool inserted = false;
    LogPos insert;
    // Its last update since then, if any: every column but the insert-only
    // ones.
    bool updated = false;
    LogPos update;
    // Whether the jobs table may hold a row of it: not if its first entry
    // here is an insert (a writer puts a delete before the insert of a job
    // it journaled already: JournalStore::Write).
    bool maybe_in_table = true;
  };

  // Applies the entries of log row number `row` (0, 1, ... in log order),
  // whose bytes are `body`. Returns "" or, if its framing is broken, what
  // is wrong (the entries before the break are applied).
  std::string Apply(uint32_t row, std::string_view body);

  // The jobs the log holds, by ascending id.
  const absl::btree_map<uint64_t, Job>& jobs() const { return jobs_; }
  uint64_t entries() const { return entries_; }
  uint64_t deletes() const { return deletes_; }  // Entries that delete.

 private:
  // Ordered, not hashed: a log's ids are mostly consecutive and each entry
  // names a job near the last one, so a B-tree's path to it is in cache,
  // where a hash table's slot, one of hundreds of thousands, rarely is
  // (and folds and restores want the ids in order anyway).
  absl::btree_map<uint64_t, Job> jobs_;
  uint64_t entries_ = 0;
  uint64_t deletes_ = 0;
};

// Parses log records (reused: the messages keep their capacity).
class LogRecordParser {
 public:
  LogRecordParser();
  ~LogRecordParser();
  LogRecordParser(const LogRecordParser&) = delete;
  LogRecordParser& operator=(const LogRecordParser&) = delete;

  // Sets the columns `body` carries into `out` (views into this parser's
  // message `slot`, 0 or 1, valid until that slot's next parse): with
  // `insert`, every column; else all but the insert-only ones (spec,
  // create_ns, accepted_seq, owner), which keep what `out` had. False if
  // it does not parse (`out` is left as it was).
  bool Parse(std::string_view body, bool insert, int slot, StoredRow* out);

 private:
  struct Messages;
  std::unique_ptr<Messages> messages_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOURNAL_JOURNAL_LOG_H_
