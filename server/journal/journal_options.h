// JournalOptions: where the journal is and how it commits
// (server/journal/journal.h), apart so that the configuration can name
// them without the journal.
#ifndef JOBD_SERVER_JOURNAL_JOURNAL_OPTIONS_H_
#define JOBD_SERVER_JOURNAL_JOURNAL_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace jobd {

enum class Durability { kNone, kBatched, kEveryCommit };
const char* DurabilityName(Durability d);

struct JournalOptions {
  std::string path;  // The database file.
  Durability durability = Durability::kBatched;
  // Largest database file (SQLite max_page_count); 0 = unlimited. Past it,
  // writes fail as on a full disk.
  uint64_t max_bytes = 0;
  // While writes fail, how long a kFailFast waiter (an RPC's answer, a
  // stream's held events) may wait for them to succeed again before it is
  // answered "not durable": a short failure heals unseen (ended jobs are
  // forgotten to make room), a real outage does not hang callers.
  absl::Duration outage_grace = absl::Seconds(2);
  // Records in one transaction at most, and bytes of specs and results
  // (a bigger batch is split): the WAL grows by a transaction's size before
  // a checkpoint can truncate it (to 64 MiB).
  size_t max_batch_records = 16384;
  // How long a batch holding only lingering records (Journal::Linger: a
  // job's accept, start, delay; a forgotten job's delete) waits for one that
  // must not wait (a claim, an end) before it is committed anyway: an
  // at-least-once job shorter than this takes one commit from its accept to its
  // end; a longer one's ACCEPTED or STARTED comes up to this much later. Zero:
  // nothing lingers.
  absl::Duration linger = absl::Milliseconds(1);
  uint64_t max_transaction_bytes = 16 << 20;
  // The log's older half (server/journal/journal_log.h) is folded into
  // the jobs table once it holds this many bytes (or a quarter of
  // max_bytes): a job started, ended and forgotten while its records are
  // in the log is never written there. The most a start after a crash
  // replays.
  uint64_t compact_log_bytes = 32 << 20;
  // A fold goes in steps, one between two commits (a commit waits for one
  // step, not the whole fold): each reads about this many bytes of the
  // log, or writes what this many bytes of it leave in the table.
  uint64_t compact_step_bytes = 1 << 20;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOURNAL_JOURNAL_OPTIONS_H_
