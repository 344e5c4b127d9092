#include "server/journal/journal_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "google/protobuf/unknown_field_set.h"
#include "server/journal/journal_log.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// 1: the first; 2: jobs.owner; 3: jobs.due_ns and jobs.history (delays
// and retries); 4: the schedules table; 5: the callbacks table; 6: the
// key_limits table; 7: jobs.cluster (cluster mode's outbox); 8: the log
// table (server/journal/journal_log.h).
constexpr int kSchemaVersion = 8;

// The problem of a job whose last change in the log does not parse.
constexpr std::string_view kDamagedLogEntry =
    "its last change in the journal's log does not parse";

// Free pages worth this much are given back to the disk after a commit.
constexpr uint64_t kVacuumFreeBytes = 64 << 20;
// How often a commit counts the pages in use (Journal::usage()).
constexpr absl::Duration kCountPagesEvery = absl::Milliseconds(50);

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs(
  id INTEGER PRIMARY KEY,
  state INTEGER NOT NULL,
  executor INTEGER NOT NULL,
  spec BLOB NOT NULL,
  create_ns INTEGER NOT NULL,
  start_ns INTEGER,
  finish_ns INTEGER,
  result BLOB,
  error BLOB,
  accepted_seq INTEGER NOT NULL,
  started_seq INTEGER NOT NULL,
  ended_seq INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  owner TEXT NOT NULL DEFAULT 'anonymous',
  due_ns INTEGER NOT NULL DEFAULT 0,
  history BLOB,
  cluster INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
)sql";

// Push callbacks (server/jobs/callback_hook.h): one row per job with a
// callback, written with the job's end; `event` is emptied once it is no
// longer pending.
constexpr char kCallbacksTable[] = R"sql(
CREATE TABLE IF NOT EXISTS callbacks(
  job_id INTEGER PRIMARY KEY,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  url TEXT NOT NULL,
  event BLOB NOT NULL);
)sql";

// Schema 6: concurrency keys' limits set through the API (SetKeyLimit).
constexpr char kKeyLimitsSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS key_limits(
  key TEXT PRIMARY KEY,
  max_running INTEGER NOT NULL,
  rate REAL NOT NULL);
)sql";

int64_t Nanos(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixNanos(t);
}
absl::Time FromNanos(int64_t ns) {
  return ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns);
}

// A column's bytes (empty for NULL), valid until the statement's next
// step or reset.
std::string_view ColumnBlob(sqlite3_stmt* st, int col) {
  const void* data = sqlite3_column_blob(st, col);
  return data == nullptr
             ? std::string_view()
             : std::string_view(
                   static_cast<const char*>(data),
                   static_cast<size_t>(sqlite3_column_bytes(st, col)));
}

// Calls `fn(first, last)` for each run of consecutive ids of `sorted`
// (ascending), in order; stops at the first error and returns it.
absl::Status ForEachRun(
    absl::Span<const uint64_t> sorted,
    absl::FunctionRef<absl::Status(uint64_t first, uint64_t last)> fn) {
  for (size_t first = 0; first < sorted.size();) {
    size_t end = first + 1;  // Past the run's last id.
    while (end < sorted.size() && sorted[end] == sorted[end - 1] + 1) ++end;
    if (absl::Status s = fn(sorted[first], sorted[end - 1]); !s.ok()) {
      return s;
    }
    first = end;
  }
  return absl::OkStatus();
}

// A prepared statement, finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      stmt_ = nullptr;
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() const { return stmt_; }
  bool ok() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace

// The statements Write runs: parsing them was a third of a small
// commit's CPU, so they are prepared once, when the store opens.
struct JournalStore::Statements {
  explicit Statements(sqlite3* db) : db(db) {}
  bool ok() const {
    for (const Statement* s :
         {&begin, &commit, &append_log, &last_log, &read_log, &log_row,
          &remove_log, &insert, &update, &remove_run, &remove_callback,
          &remove_callback_run, &put_callback, &update_callback, &meta,
          &put_schedule, &delete_schedule, &set_key, &clear_key}) {
      if (!s->ok()) return false;
    }
    return true;
  }
  sqlite3* const db;
  Statement begin{db, "BEGIN IMMEDIATE"};
  Statement commit{db, "COMMIT"};
  // A transaction's job records, appended (server/journal/journal_log.h).
  Statement append_log{db, "INSERT INTO log(body) VALUES(?)"};
  // Compaction's: the log read in order (its older half, or all of it, as
  // it was when the fold began), then taken a row at a time, and the jobs
  // table brought up to date with the statements below.
  Statement last_log{db, "SELECT max(id) FROM log"};
  Statement read_log{
      db, "SELECT id, body FROM log WHERE id > ?1 AND id <= ?2 ORDER BY id"};
  Statement log_row{db, "SELECT body FROM log WHERE id=?"};
  Statement remove_log{db, "DELETE FROM log WHERE id=?"};
  Statement insert{db,
                   "INSERT OR REPLACE INTO jobs(id, state, executor, spec, "
                   "create_ns, start_ns, finish_ns, result, error, "
                   "accepted_seq, started_seq, ended_seq, attempts, owner, "
                   "due_ns, history, cluster) "
                   "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"};
  Statement update{db,
                   "UPDATE jobs SET state=?2, executor=?3, start_ns=?4, "
                   "finish_ns=?5, result=?6, error=?7, started_seq=?8, "
                   "ended_seq=?9, attempts=?10, due_ns=?11, history=?12, "
                   "cluster=?13 "
                   "WHERE id=?1"};
  Statement remove_run{db, "DELETE FROM jobs WHERE id BETWEEN ?1 AND ?2"};
  // A job forgotten takes its finished callback with it (2: PENDING), and
  // a callback that finishes after its job was forgotten goes then.
  Statement remove_callback{
      db, "DELETE FROM callbacks WHERE job_id=? AND state<>2"};
  // The same for a run of consecutive ids [?1, ?2].
  Statement remove_callback_run{
      db, "DELETE FROM callbacks WHERE job_id BETWEEN ?1 AND ?2 AND state<>2"};
  Statement put_callback{db,
                         "INSERT OR REPLACE INTO callbacks(job_id, state, "
                         "attempts, last_error, url, event) "
                         "VALUES(?,?,?,?,?,?)"};
  // A finished callback drops its event, and its row if its job's is gone.
  Statement update_callback{
      db,
      "UPDATE callbacks SET state=?2, attempts=?3, last_error=?4, "
      "event=CASE WHEN ?2=2 THEN event ELSE x'' END WHERE job_id=?1"};
  Statement meta{db,
                 "INSERT INTO meta(key, value) VALUES(?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value=max(value, "
                 "excluded.value)"};
  Statement put_schedule{
      db, "INSERT OR REPLACE INTO schedules(id, body) VALUES(?, ?)"};
  Statement delete_schedule{db, "DELETE FROM schedules WHERE id=?"};
  Statement set_key{db,
                    "INSERT OR REPLACE INTO key_limits(key, max_running, "
                    "rate) VALUES(?,?,?)"};
  Statement clear_key{db, "DELETE FROM key_limits WHERE key=?"};
};

namespace {

// DataLoss for a damaged database (the only case Open moves the file
// aside), Unavailable for a busy one, Internal for the rest (permissions,
// I/O errors, a full disk).
absl::Status SqliteError(sqlite3* db, std::string_view what) {
  std::string message =
      fmt::format("{}: {}", what, db ? sqlite3_errmsg(db) : "no database");
  switch (db ? sqlite3_errcode(db) & 0xff : SQLITE_NOMEM) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(std::move(message));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(std::move(message));
    default:
      return absl::InternalError(std::move(message));
  }
}

// The task name of a spec that does not parse as a whole (its field 1, if
// the wire format holds together that far), made valid; "" if not even that.
std::string SalvageTask(std::string_view spec) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromArray(spec.data(), static_cast<int>(spec.size()))) {
    return "";
  }
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    if (f.number() == v1::JobSpec::kTaskFieldNumber &&
        f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      return ClipUtf8(f.length_delimited(), 256);
    }
  }
  return "";
}

// What OpenAndRead found in the log.
struct LogFound {
  uint64_t bytes = 0;
  uint64_t deletes = 0;  // Delete entries.
};

// Opens the database and reads every row. DataLoss if it is damaged.
absl::Status OpenAndRead(const JournalOptions& options, sqlite3** out,
                         Recovered* recovered, LogFound* found) {
  // sqlite3_close_v2 below: a failure may return while a Statement is still
  // alive; the v2 close frees the connection once that is finalized (the
  // plain close would refuse, SQLITE_BUSY, and leak it).
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(
          options.path.c_str(), &db,
          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
          nullptr) != SQLITE_OK) {
    absl::Status s = SqliteError(db, "open");
    sqlite3_close_v2(db);
    return s;
  }
  auto fail = [&](std::string_view what) {
    absl::Status s = SqliteError(db, what);
    sqlite3_close_v2(db);
    return s;
  };
  sqlite3_busy_timeout(db, 5000);
  // A file that is not a database fails here ("file is not a database").
  if (sqlite3_exec(db,
                   "PRAGMA journal_mode=WAL; PRAGMA auto_vacuum=INCREMENTAL;",
                   nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail("journal_mode");
  }
  {
    Statement check(db, "PRAGMA quick_check");
    if (!check.ok() || sqlite3_step(check.get()) != SQLITE_ROW) {
      return fail("quick_check");
    }
    const char* verdict =
        reinterpret_cast<const char*>(sqlite3_column_text(check.get(), 0));
    if (verdict == nullptr || std::string_view(verdict) != "ok") {
      sqlite3_close_v2(db);
      return absl::DataLossError(
          fmt::format("quick_check: {}", verdict ? verdict : "?"));
    }
  }
  {
    Statement version(db, "PRAGMA user_version");
    if (!version.ok() || sqlite3_step(version.get()) != SQLITE_ROW) {
      return fail("user_version");
    }
    const int v = sqlite3_column_int(version.get(), 0);
    if (v > kSchemaVersion) {
      sqlite3_close_v2(db);
      return absl::FailedPreconditionError(
          fmt::format("schema version {} is newer than this jobd's ({})", v,
                      kSchemaVersion));
    }
    if (v == 1 &&  // Older jobs had no owner.
        sqlite3_exec(db,
                     "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL "
                     "DEFAULT 'anonymous'",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
      return fail("migrating to schema 2");
    }
    // 3: a WAITING job's due time, a retried job's failed attempts (each
    // column added unless there: a file marked older may have them).
    if (v >= 1 && v < 3) {
      for (const auto& [column, sql] :
           {std::pair("due_ns",
                      "ALTER TABLE jobs ADD COLUMN due_ns INTEGER NOT NULL "
                      "DEFAULT 0"),
            std::pair("history", "ALTER TABLE jobs ADD COLUMN history BLOB")}) {
        Statement has(db,
                      "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE "
                      "name=?");
        if (!has.ok()) return fail("migrating to schema 3");
        sqlite3_bind_text(has.get(), 1, column, -1, SQLITE_STATIC);
        if (sqlite3_step(has.get()) != SQLITE_ROW) {
          return fail("migrating to schema 3");
        }
        if (sqlite3_column_int(has.get(), 0) == 0 &&
            sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
          return fail("migrating to schema 3");
        }
      }
    }
    // 4: the schedules table (server/schedules): a row per schedule, its
    // body opaque here.
    if (v < 4 && sqlite3_exec(db,
                              "CREATE TABLE IF NOT EXISTS schedules("
                              "id TEXT PRIMARY KEY, body BLOB NOT NULL)",
                              nullptr, nullptr, nullptr) != SQLITE_OK) {
      return fail("migrating to schema 4");
    }
    if (v < 5 && sqlite3_exec(db, kCallbacksTable, nullptr, nullptr, nullptr) !=
                     SQLITE_OK) {
      return fail("migrating to schema 5");
    }
    if (v < 6 && sqlite3_exec(db, kKeyLimitsSchema, nullptr, nullptr,
                              nullptr) != SQLITE_OK) {
      return fail("migrating to schema 6");
    }
    // 7: a job's place in cluster mode's work sharing (0: local); added
    // unless there (a file marked older may have it).
    if (v >= 1 && v < 7) {
      Statement has(db,
                    "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE "
                    "name='cluster'");
      if (!has.ok() || sqlite3_step(has.get()) != SQLITE_ROW) {
        return fail("migrating to schema 7");
      }
      if (sqlite3_column_int(has.get(), 0) == 0 &&
          sqlite3_exec(db,
                       "ALTER TABLE jobs ADD COLUMN cluster INTEGER NOT NULL "
                       "DEFAULT 0",
                       nullptr, nullptr, nullptr) != SQLITE_OK) {
        return fail("migrating to schema 7");
      }
    }
  }
  if (sqlite3_exec(db, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK ||
      sqlite3_exec(
          db, fmt::format("PRAGMA user_version={}", kSchemaVersion).c_str(),
          nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail("schema");
  }
  auto blob = ColumnBlob;
  auto optional_blob = [&](sqlite3_stmt* st,
                           int col) -> std::optional<std::string_view> {
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
    return blob(st, col);
  };
  int rc;
  // The log first: what it holds of a job goes over the job's row in the
  // table (server/journal/journal_log.h).
  std::vector<std::string> log_rows;  // Complete before the replay views it.
  {
    Statement log(db, "SELECT body FROM log ORDER BY id");
    if (!log.ok()) return fail("select log");
    while ((rc = sqlite3_step(log.get())) == SQLITE_ROW) {
      log_rows.emplace_back(blob(log.get(), 0));
      found->bytes += log_rows.back().size();
    }
    if (rc != SQLITE_DONE) return fail("reading log");
  }
  LogReplay replay;
  for (size_t i = 0; i < log_rows.size(); ++i) {
    if (std::string broken =
            replay.Apply(static_cast<uint32_t>(i), log_rows[i]);
        !broken.empty()) {
      // The entries before the break are applied; the jobs of the rest
      // cannot be named (their ids are past it).
      spdlog::error(
          "journal: row {} of {}'s log is damaged ({}): the changes after "
          "it in that row are lost",
          i + 1, options.path, broken);
    }
  }
  found->deletes = replay.deletes();
  // The jobs the log holds, by id, merged into the table's rows below.
  auto logged = replay.jobs().begin();
  const auto logged_end = replay.jobs().end();
  LogRecordParser parser;
  auto add = [&](JournalRow row) {
    recovered->last_sequence =
        std::max({recovered->last_sequence, row.accepted_seq, row.started_seq,
                  row.ended_seq});
    recovered->rows.push_back(std::move(row));
  };
  // A job the log holds, over its table row (null: none).
  auto add_logged = [&](uint64_t id, const LogReplay::Job& job,
                        const StoredRow* table) {
    if (job.deleted || (!job.inserted && table == nullptr)) return;
    StoredRow row;
    bool damaged = false;
    if (job.inserted) {
      // Damaged, it leaves the columns zero: the state names it too.
      row.id = static_cast<int64_t>(id);
      damaged = !parser.Parse(job.insert.In(log_rows[job.insert.row]),
                              /*insert=*/true, 0, &row);
    } else {
      row = *table;
    }
    if (job.updated && !parser.Parse(job.update.In(log_rows[job.update.row]),
                                     /*insert=*/false, 1, &row)) {
      damaged = true;
    }
    JournalRow decoded = DecodeRow(row);
    if (damaged) {
      if (!decoded.problem.empty()) decoded.problem += "; ";
      decoded.problem += kDamagedLogEntry;
      decoded.end.reset();
    }
    add(std::move(decoded));
  };
  Statement rows(
      db,
      "SELECT id, state, executor, spec, create_ns, start_ns, "
      "finish_ns, result, error, accepted_seq, started_seq, "
      "ended_seq, attempts, owner, due_ns, history, cluster FROM jobs "
      "ORDER BY id");
  if (!rows.ok()) return fail("select");
  while ((rc = sqlite3_step(rows.get())) == SQLITE_ROW) {
    sqlite3_stmt* s = rows.get();
    StoredRow stored;
    stored.id = sqlite3_column_int64(s, 0);
    stored.state = sqlite3_column_int64(s, 1);
    stored.executor = sqlite3_column_int64(s, 2);
    stored.spec = blob(s, 3);
    stored.create_ns = sqlite3_column_int64(s, 4);
    stored.start_ns = sqlite3_column_int64(s, 5);
    stored.finish_ns = sqlite3_column_int64(s, 6);
    stored.result = optional_blob(s, 7);
    stored.error = optional_blob(s, 8);
    stored.accepted_seq = sqlite3_column_int64(s, 9);
    stored.started_seq = sqlite3_column_int64(s, 10);
    stored.ended_seq = sqlite3_column_int64(s, 11);
    stored.attempts = sqlite3_column_int64(s, 12);
    stored.owner = blob(s, 13);
    stored.due_ns = sqlite3_column_int64(s, 14);
    stored.history = optional_blob(s, 15);
    stored.cluster = sqlite3_column_int64(s, 16);
    const auto id = static_cast<uint64_t>(stored.id);
    for (; logged != logged_end && logged->first < id; ++logged) {
      add_logged(logged->first, logged->second, nullptr);
    }
    if (logged != logged_end && logged->first == id) {
      add_logged(id, logged->second, &stored);
      ++logged;
    } else {
      add(DecodeRow(stored));
    }
  }
  if (rc != SQLITE_DONE) return fail("reading jobs");
  for (; logged != logged_end; ++logged) {
    add_logged(logged->first, logged->second, nullptr);
  }
  Statement schedules(db, "SELECT id, body FROM schedules ORDER BY id");
  if (!schedules.ok()) return fail("select schedules");
  while ((rc = sqlite3_step(schedules.get())) == SQLITE_ROW) {
    recovered->schedules.emplace_back(std::string(blob(schedules.get(), 0)),
                                      std::string(blob(schedules.get(), 1)));
  }
  if (rc != SQLITE_DONE) return fail("reading schedules");
  Statement callbacks(db,
                      "SELECT job_id, state, attempts, last_error, url, event "
                      "FROM callbacks ORDER BY job_id");
  if (!callbacks.ok()) return fail("select callbacks");
  while ((rc = sqlite3_step(callbacks.get())) == SQLITE_ROW) {
    sqlite3_stmt* s = callbacks.get();
    CallbackRecord cb;
    cb.job_id = static_cast<uint64_t>(sqlite3_column_int64(s, 0));
    const int64_t state = sqlite3_column_int64(s, 1);
    cb.state = state >= 0 && state <= v1::CallbackState_MAX &&
                       v1::CallbackState_IsValid(static_cast<int>(state))
                   ? static_cast<v1::CallbackState>(state)
                   : v1::CALLBACK_STATE_FAILED;
    cb.attempts = static_cast<uint32_t>(std::clamp<int64_t>(
        sqlite3_column_int64(s, 2), 0, std::numeric_limits<uint32_t>::max()));
    cb.last_error = MakeValidUtf8(blob(s, 3));
    cb.url = MakeValidUtf8(blob(s, 4));
    cb.event = std::string(blob(s, 5));
    recovered->callbacks.push_back(std::move(cb));
  }
  if (rc != SQLITE_DONE) return fail("reading callbacks");
  {
    Statement keys(
        db, "SELECT key, max_running, rate FROM key_limits ORDER BY key");
    if (!keys.ok()) return fail("select key_limits");
    while ((rc = sqlite3_step(keys.get())) == SQLITE_ROW) {
      KeyLimitRow row;
      row.key = MakeValidUtf8(blob(keys.get(), 0));
      row.max_running = static_cast<uint32_t>(
          std::clamp<int64_t>(sqlite3_column_int64(keys.get(), 1), 0,
                              std::numeric_limits<uint32_t>::max()));
      row.rate = std::max(0.0, sqlite3_column_double(keys.get(), 2));
      recovered->key_limits.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return fail("reading key_limits");
  }
  Statement meta(db, "SELECT key, value FROM meta");
  if (!meta.ok()) return fail("meta");
  while ((rc = sqlite3_step(meta.get())) == SQLITE_ROW) {
    const std::string_view key = blob(meta.get(), 0);
    const auto value = static_cast<uint64_t>(
        std::max<int64_t>(0, sqlite3_column_int64(meta.get(), 1)));
    if (key == "last_sequence") {
      recovered->last_sequence = std::max(recovered->last_sequence, value);
    } else if (key == "reserved_job_id") {
      recovered->reserved_job_id = value;
    }
  }
  if (rc != SQLITE_DONE) return fail("reading meta");
  *out = db;
  return absl::OkStatus();
}

}  // namespace

JournalRow DecodeRow(const StoredRow& in) {
  JournalRow row;
  row.id = static_cast<uint64_t>(in.id);
  row.owner = MakeValidUtf8(in.owner);
  row.create_time = FromNanos(in.create_ns);
  row.start_time = FromNanos(in.start_ns);
  row.finish_time = FromNanos(in.finish_ns);
  row.accepted_seq = static_cast<uint64_t>(in.accepted_seq);
  row.started_seq = static_cast<uint64_t>(in.started_seq);
  row.ended_seq = static_cast<uint64_t>(in.ended_seq);
  row.attempts = static_cast<uint32_t>(std::clamp<int64_t>(
      in.attempts, 0, std::numeric_limits<uint32_t>::max()));
  row.due_time = FromNanos(in.due_ns);
  row.cluster = static_cast<uint8_t>(std::clamp<int64_t>(in.cluster, 0, 2));
  if (in.history.has_value()) {
    // Only the history is kept of it (what else a damaged one may hold
    // never reaches a snapshot); one that does not parse costs only itself.
    v1::Job holder, history;
    if (holder.ParseFromArray(in.history->data(),
                              static_cast<int>(in.history->size()))) {
      history.mutable_history()->Swap(holder.mutable_history());
      auto bytes = std::make_shared<std::string>();
      history.SerializeToString(bytes.get());
      row.history = std::move(bytes);
    }
  }
  std::vector<std::string> problems;
  auto spec = std::make_shared<v1::JobSpec>();
  if (!spec->ParseFromArray(in.spec.data(), static_cast<int>(in.spec.size()))) {
    problems.push_back("its spec does not parse");
    spec = std::make_shared<v1::JobSpec>();
    spec->set_task(SalvageTask(in.spec));
  }
  row.spec = std::shared_ptr<const v1::JobSpec>(std::move(spec));
  const bool state_ok = in.state > v1::JOB_STATE_UNSPECIFIED &&
                        in.state <= v1::JobState_MAX &&
                        v1::JobState_IsValid(static_cast<int>(in.state));
  if (state_ok) {
    row.state = static_cast<v1::JobState>(in.state);
  } else {
    problems.push_back(
        fmt::format("its state {} is not a job state", in.state));
  }
  if (in.executor >= 0 && in.executor <= v1::Executor_MAX &&
      v1::Executor_IsValid(static_cast<int>(in.executor))) {
    row.executor = static_cast<v1::Executor>(in.executor);
  } else {
    problems.push_back(
        fmt::format("its executor {} is not an executor", in.executor));
  }
  const bool has_end = in.result.has_value() || in.error.has_value();
  if (state_ok && IsTerminal(row.state) != has_end) {
    problems.push_back(has_end ? "it has a result but had not ended"
                               : "it ended but its result is missing");
  } else if (state_ok && has_end) {
    auto end = std::make_shared<JobEnd>();
    end->state = row.state;
    // The one the state says; the other column holds an empty message.
    const std::string_view bytes = row.state == v1::JOB_STATE_SUCCEEDED
                                       ? in.result.value_or("")
                                       : in.error.value_or("");
    const bool ok = row.state == v1::JOB_STATE_SUCCEEDED
                        ? end->mutable_result().ParseFromArray(
                              bytes.data(), static_cast<int>(bytes.size()))
                        : end->mutable_error().ParseFromArray(
                              bytes.data(), static_cast<int>(bytes.size()));
    if (ok) {
      end->bytes = static_cast<uint32_t>(bytes.size());
      row.end = std::move(end);
    } else {
      problems.push_back(row.state == v1::JOB_STATE_SUCCEEDED
                             ? "its result does not parse"
                             : "its error does not parse");
    }
  }
  if (!problems.empty()) {
    row.problem = absl::StrJoin(problems, "; ");
    row.end.reset();
    if (!state_ok) row.state = v1::JOB_STATE_QUEUED;
  }
  return row;
}

void EncodeRow(const JournalRow& row, bool insert, EncodedBytes& bytes,
               StoredRow* out) {
  *out = StoredRow{};
  out->id = static_cast<int64_t>(row.id);
  out->state = row.state;
  out->executor = row.executor;
  if (insert) {
    bytes.spec.clear();
    row.spec.AppendWholeTo(&bytes.spec);
    out->spec = bytes.spec;
    out->create_ns = Nanos(row.create_time);
    out->accepted_seq = static_cast<int64_t>(row.accepted_seq);
    out->owner = row.owner;
  }
  out->start_ns = Nanos(row.start_time);
  out->finish_ns = Nanos(row.finish_time);
  bytes.result.clear();
  bytes.error.clear();
  if (row.end != nullptr) {
    row.end->result().SerializeToString(&bytes.result);
    row.end->error().SerializeToString(&bytes.error);
    out->result = bytes.result;
    out->error = bytes.error;
  }
  out->started_seq = static_cast<int64_t>(row.started_seq);
  out->ended_seq = static_cast<int64_t>(row.ended_seq);
  out->attempts = static_cast<int>(row.attempts);  // Bound as an int.
  out->due_ns = Nanos(row.due_time);
  out->cluster = row.cluster;
  if (row.history != nullptr) out->history = *row.history;
}

absl::StatusOr<std::unique_ptr<JournalStore>> JournalStore::Open(
    const JournalOptions& o, Recovered* recovered) {
  std::error_code ec;
  const std::filesystem::path path(o.path);
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return absl::FailedPreconditionError(
          fmt::format("cannot create the state directory {}: {}",
                      path.parent_path().string(), ec.message()));
    }
  }
  *recovered = Recovered{};
  sqlite3* db = nullptr;
  LogFound log;
  absl::Status s = OpenAndRead(o, &db, recovered, &log);
  if (!s.ok() && !absl::IsDataLoss(s)) {
    // Not damage (a newer schema, no permission, locked by another process,
    // an I/O error): the jobs in it are not given up; the operator decides.
    return absl::FailedPreconditionError(fmt::format(
        "cannot use the journal {}: {}", o.path, std::string(s.message())));
  }
  if (!s.ok()) {
    // Damaged: keep the file for inspection; start afresh.
    const std::string aside = fmt::format(
        "{}.corrupt-{}", o.path,
        absl::FormatTime("%Y%m%dT%H%M%S", absl::Now(), absl::UTCTimeZone()));
    for (const char* suffix : {"", "-wal", "-shm"}) {
      const std::string from = o.path + suffix;
      if (std::filesystem::exists(from, ec)) {
        std::filesystem::rename(from, aside + suffix, ec);
        if (ec) {
          return absl::FailedPreconditionError(fmt::format(
              "the journal {} is damaged ({}) and cannot be moved aside: {}",
              o.path, std::string(s.message()), ec.message()));
        }
      }
    }
    recovered->moved_aside =
        fmt::format("{} (it was damaged: {})", aside, std::string(s.message()));
    *recovered = Recovered{.moved_aside = recovered->moved_aside};
    log = {};
    absl::Status fresh = OpenAndRead(o, &db, recovered, &log);
    if (!fresh.ok()) {
      return absl::FailedPreconditionError(
          fmt::format("cannot create the journal {}: {}", o.path,
                      std::string(fresh.message())));
    }
  }
  std::unique_ptr<JournalStore> store(new JournalStore(o, db));
  std::string pragmas =
      fmt::format("PRAGMA synchronous={}; PRAGMA journal_size_limit=67108864;",
                  o.durability == Durability::kEveryCommit ||
                          o.durability == Durability::kBatched
                      ? "FULL"
                      : "NORMAL");
  if (o.max_bytes > 0) {
    pragmas += fmt::format(" PRAGMA max_page_count={};",
                           std::max<uint64_t>(16, o.max_bytes / 4096));
  }
  if (store->Exec(pragmas.c_str()).ok() == false) {
    return SqliteError(db, "pragmas");
  }
  store->statements_ = std::make_unique<Statements>(db);
  if (!store->statements_->ok()) return SqliteError(db, "preparing statements");
  store->counted_bytes_ = store->CountPages().used_bytes;
  store->log_bytes_ = log.bytes;
  store->log_deletes_ = log.deletes;
  store->log_from_open_ = log.bytes > 0;
  for (const JournalRow& row : recovered->rows) {  // In id order.
    store->live_.insert(store->live_.end(), row.id);
  }
  return store;
}

JournalStore::JournalStore(const JournalOptions& options, sqlite3* db)
    : options_(options), db_(db), log_writer_(std::make_unique<LogWriter>()) {}

JournalStore::~JournalStore() {
  // A clean close leaves the log folded into the jobs table: the next
  // start reads rows, not changes (a failure leaves the log to replay).
  if (statements_ != nullptr && log_bytes_ > 0) {
    if (absl::StatusOr<Compacted> c = Compact(); !c.ok()) {
      spdlog::warn("journal: cannot compact {}'s log at close: {}",
                   options_.path, c.status().ToString());
    }
  }
  statements_.reset();  // Finalized before the close.
  sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr,
               nullptr);
  sqlite3_close(db_);
}

absl::Status JournalStore::Exec(const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    const std::string message =
        fmt::format("{}: {}", sql, error ? error : sqlite3_errmsg(db_));
    sqlite3_free(error);
    return (rc & 0xff) == SQLITE_FULL ? absl::ResourceExhaustedError(message)
                                      : absl::InternalError(message);
  }
  return absl::OkStatus();
}

absl::Status JournalStore::Run(sqlite3_stmt* statement, const char* what) {
  const int rc = sqlite3_step(statement);
  sqlite3_reset(statement);
  if (rc != SQLITE_DONE) {
    const std::string message = fmt::format(
        "{}: {} ({})", what, sqlite3_errmsg(db_), sqlite3_errstr(rc));
    return (rc & 0xff) == SQLITE_FULL ? absl::ResourceExhaustedError(message)
                                      : absl::InternalError(message);
  }
  return absl::OkStatus();
}

void JournalStore::Rollback() {
  // SQLite may have rolled the transaction back itself (it does on some
  // SQLITE_FULL and I/O errors); a ROLLBACK then fails with "no transaction
  // is active", which says nothing about what went wrong.
  if (sqlite3_get_autocommit(db_) == 0) Exec("ROLLBACK").IgnoreError();
}

uint64_t JournalStore::Pragma(const char* sql) {
  Statement st(db_, sql);
  if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) return 0;
  return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
}

JournalStore::Pages JournalStore::CountPages() {
  const uint64_t pages = Pragma("PRAGMA page_count");
  const uint64_t free_pages = std::min(pages, Pragma("PRAGMA freelist_count"));
  const uint64_t page_size = Pragma("PRAGMA page_size");
  return {.used_bytes = (pages - free_pages) * page_size,
          .free_bytes = free_pages * page_size};
}

absl::Status JournalStore::Step(sqlite3_stmt* st) {
  const int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return absl::OkStatus();
  }
  // The error first: what follows (reset, rollback) replaces the
  // connection's message.
  const std::string message =
      fmt::format("{} ({})", sqlite3_errmsg(db_), sqlite3_errstr(rc));
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  Rollback();
  return (rc & 0xff) == SQLITE_FULL ? absl::ResourceExhaustedError(message)
                                    : absl::InternalError(message);
}

absl::StatusOr<JournalStore::Written> JournalStore::Write(
    const std::vector<JournalRecord>& records, uint64_t reserved_sequence,
    Part part, const ScheduleRecords& schedules,
    const std::vector<KeyLimitRow>& key_limits, uint64_t reserved_job_id) {
  absl::StatusOr<Written> written = WriteTransactions(
      records, reserved_sequence, part, schedules, key_limits, reserved_job_id);
  if (!written.ok()) {
    // The transaction that failed is rolled back: so is what it changed
    // here (transactions committed before it stay).
    for (auto it = uncommitted_.live.rbegin(); it != uncommitted_.live.rend();
         ++it) {
      if (it->second) {
        live_.insert(it->first);
      } else {
        live_.erase(it->first);
      }
    }
    uncommitted_ = {};
  }
  return written;
}

absl::StatusOr<JournalStore::Written> JournalStore::WriteTransactions(
    const std::vector<JournalRecord>& records, uint64_t reserved_sequence,
    Part part, const ScheduleRecords& schedules,
    const std::vector<KeyLimitRow>& key_limits, uint64_t reserved_job_id) {
  Statements& stmts = *statements_;
  const bool per_record = options_.durability == Durability::kEveryCommit;
  size_t in_transaction = 0;
  uint64_t transaction_bytes = 0;
  uint64_t written = 0;  // Specs and results, in all the transactions.
  log_body_.clear();
  auto begin = [&]() { return Run(stmts.begin.get(), "BEGIN"); };
  // A transaction's job records go in as one row of the log.
  auto commit = [&]() -> absl::Status {
    if (!log_body_.empty()) {
      sqlite3_bind_blob(stmts.append_log.get(), 1, log_body_.data(),
                        static_cast<int>(log_body_.size()), SQLITE_STATIC);
      if (absl::Status s = Step(stmts.append_log.get()); !s.ok()) return s;
      uncommitted_.log_bytes += log_body_.size();
      log_body_.clear();
    }
    in_transaction = 0;
    transaction_bytes = 0;
    absl::Status s = Run(stmts.commit.get(), "COMMIT");
    // A failed COMMIT may leave the transaction open; the retry needs it
    // closed (and re-applies the whole batch: every record is idempotent).
    if (!s.ok()) {
      Rollback();
      return s;
    }
    log_bytes_ += uncommitted_.log_bytes;
    appended_since_step_ += uncommitted_.log_bytes;
    log_deletes_ += uncommitted_.log_deletes;
    uncommitted_ = {};
    return s;
  };
  if (absl::Status s = begin(); !s.ok()) return s;
  // Forgotten jobs go last, in the last transaction, their finished
  // callbacks deleted in runs of consecutive ids, one statement per run
  // (retention forgets the oldest first), with their log entries: not in
  // a batch with callback records (a job's callback row and its deletion
  // keep their order), nor one transaction per record. Either way a job's
  // delete and its callback's go in one transaction. Deletes written apart
  // (Part::kDeletes: writes fail for want of room) take the jobs' rows out
  // of the table too, before the log row that records them is appended:
  // the room they free is what that row, and the rest, need.
  const bool runs_of_deletes =
      !per_record &&
      std::none_of(records.begin(), records.end(), [](const JournalRecord& r) {
        return r.kind == JournalRecord::kCallback;
      });
  std::vector<uint64_t> deleted;
  for (size_t index = 0; index < records.size(); ++index) {
    const JournalRecord& r = records[index];
    if (r.kind == JournalRecord::kFolded) continue;
    if (part == Part::kDeletes && r.kind != JournalRecord::kDelete) continue;
    if (part == Part::kAllButDeletes && r.kind == JournalRecord::kDelete) {
      continue;
    }
    absl::Status s;
    if (r.kind == JournalRecord::kDelete) {
      if (runs_of_deletes) {
        // Forgotten in the last transaction (below), and only then: a
        // transaction committed before it must not take its job out of
        // live_, which a failure of the last would not put back (a fold
        // would then write no row for a job still kept).
        deleted.push_back(r.row.id);
      } else {
        Forget(r.row.id);
        log_writer_->Append(r, &log_body_);
        s = RemoveRun(r.row.id, r.row.id, part == Part::kDeletes);
      }
    } else if (r.kind == JournalRecord::kCallback) {
      const CallbackRecord& cb = *r.callback;
      const int64_t id = static_cast<int64_t>(cb.job_id);
      sqlite3_stmt* st =
          cb.first() ? stmts.put_callback.get() : stmts.update_callback.get();
      sqlite3_bind_int64(st, 1, id);
      sqlite3_bind_int64(st, 2, cb.state);
      sqlite3_bind_int64(st, 3, cb.attempts);
      sqlite3_bind_text(st, 4, cb.last_error.data(),
                        static_cast<int>(cb.last_error.size()), SQLITE_STATIC);
      if (cb.first()) {
        sqlite3_bind_text(st, 5, cb.url.data(), static_cast<int>(cb.url.size()),
                          SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, cb.event.data(),
                          static_cast<int>(cb.event.size()), SQLITE_STATIC);
      }
      s = Step(st);
      // A finished callback of a forgotten job goes with it.
      if (s.ok() && cb.state != v1::CALLBACK_STATE_PENDING &&
          !live_.contains(cb.job_id)) {
        sqlite3_bind_int64(stmts.remove_callback.get(), 1, id);
        s = Step(stmts.remove_callback.get());
      }
      transaction_bytes += cb.event.size();
      written += cb.event.size();
    } else {
      // A job journaled already and inserted again (its spec rewritten):
      // a delete entry first, so that a job whose first entry in a fold is
      // an insert has no row in the table (the fold need not delete one).
      if (r.kind == JournalRecord::kInsert && r.row.spec != nullptr) {
        if (live_.insert(r.row.id).second) {
          uncommitted_.live.emplace_back(r.row.id, /*was_live=*/false);
        } else {
          log_writer_->Append(
              {JournalRecord::kDelete, JournalRow{.id = r.row.id}}, &log_body_);
          ++uncommitted_.log_deletes;
        }
      }
      const uint64_t row_bytes = log_writer_->Append(r, &log_body_);
      transaction_bytes += row_bytes;
      written += row_bytes;
    }
    if (!s.ok()) return s;
    ++in_transaction;
    // A job's end and its callback's first record: one transaction.
    const bool callback_follows =
        index + 1 < records.size() &&
        records[index + 1].kind == JournalRecord::kCallback &&
        records[index + 1].row.id == r.row.id &&
        r.kind != JournalRecord::kCallback;
    if (!callback_follows &&
        (per_record || in_transaction >= options_.max_batch_records ||
         transaction_bytes >= options_.max_transaction_bytes)) {
      if (absl::Status c = commit(); !c.ok()) return c;
      if (absl::Status b = begin(); !b.ok()) return b;
    }
  }
  std::sort(deleted.begin(), deleted.end());
  for (uint64_t id : deleted) {
    Forget(id);
    log_writer_->Append({JournalRecord::kDelete, JournalRow{.id = id}},
                        &log_body_);
  }
  if (absl::Status s = ForEachRun(deleted,
                                  [&](uint64_t first, uint64_t last) {
                                    return RemoveRun(first, last,
                                                     part == Part::kDeletes);
                                  });
      !s.ok()) {
    return s;
  }
  for (const KeyLimitRow& k : key_limits) {
    if (part == Part::kDeletes) break;
    sqlite3_stmt* st = k.clear ? stmts.clear_key.get() : stmts.set_key.get();
    sqlite3_bind_text(st, 1, k.key.data(), static_cast<int>(k.key.size()),
                      SQLITE_STATIC);
    if (!k.clear) {
      sqlite3_bind_int64(st, 2, k.max_running);
      sqlite3_bind_double(st, 3, k.rate);
    }
    if (absl::Status s = Step(st); !s.ok()) return s;
  }
  for (const auto& [key, value] :
       {std::pair<const char*, uint64_t>{"last_sequence", reserved_sequence},
        std::pair<const char*, uint64_t>{"reserved_job_id", reserved_job_id}}) {
    if (part == Part::kDeletes || value == 0) continue;
    sqlite3_bind_text(stmts.meta.get(), 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmts.meta.get(), 2, static_cast<int64_t>(value));
    if (absl::Status s = Step(stmts.meta.get()); !s.ok()) return s;
  }
  // After the jobs: a schedule's fired slot is durable only with the run
  // it fired (server/schedules/runner.h).
  for (const auto& [id, body] :
       part == Part::kDeletes ? ScheduleRecords() : schedules) {
    sqlite3_stmt* st =
        body ? stmts.put_schedule.get() : stmts.delete_schedule.get();
    sqlite3_bind_text(st, 1, id.data(), static_cast<int>(id.size()),
                      SQLITE_STATIC);
    if (body) {
      sqlite3_bind_blob(st, 2, body->data(), static_cast<int>(body->size()),
                        SQLITE_STATIC);
      written += body->size();
    }
    if (absl::Status s = Step(st); !s.ok()) return s;
  }
  if (absl::Status c = commit(); !c.ok()) return c;
  written_since_count_ += written;
  Recount(/*now=*/false);
  return Written{.rows = live_.size(),
                 .used_bytes = counted_bytes_ + written_since_count_,
                 .bytes = written};
}

void JournalStore::Forget(uint64_t id) {
  if (live_.erase(id) > 0) {
    uncommitted_.live.emplace_back(id, /*was_live=*/true);
  }
  ++uncommitted_.log_deletes;
}

absl::Status JournalStore::RemoveRun(uint64_t first, uint64_t last,
                                     bool rows_too) {
  Statements& stmts = *statements_;
  for (sqlite3_stmt* st : {stmts.remove_callback_run.get(),
                           rows_too ? stmts.remove_run.get() : nullptr}) {
    if (st == nullptr) continue;
    sqlite3_bind_int64(st, 1, static_cast<int64_t>(first));
    sqlite3_bind_int64(st, 2, static_cast<int64_t>(last));
    if (absl::Status s = Step(st); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void JournalStore::Recount(bool now) {
  // How full it is: counted at every commit once half the cap is in use,
  // else every kCountPagesEvery (a few PRAGMAs per commit cost tiny jobs'
  // throughput), with what was written since added meanwhile; and after a
  // compaction, which frees the log's pages.
  const absl::Time time = absl::Now();
  if (now ||
      (options_.max_bytes > 0 &&
       counted_bytes_ + written_since_count_ >= options_.max_bytes / 2) ||
      time - pages_counted_ >= kCountPagesEvery) {
    pages_counted_ = time;
    const Pages pages = CountPages();
    counted_bytes_ = pages.used_bytes;
    written_since_count_ = 0;
    // Free pages past what the log takes again before its next compaction
    // go back to the disk (a burst made the file big).
    if (pages.free_bytes >= kVacuumFreeBytes + CompactAtBytes()) {
      Exec("PRAGMA incremental_vacuum").IgnoreError();
    }
  }
}

uint64_t JournalStore::CompactAtBytes() const {
  return options_.max_bytes > 0
             ? std::min(options_.compact_log_bytes, options_.max_bytes / 4)
             : options_.compact_log_bytes;
}

JournalStore::Due JournalStore::compaction_due() const {
  if (log_bytes_ == 0) return Due::kNo;
  // Past half the cap, at a commit that forgot jobs: their room comes back
  // only once their deletes are folded in (Retention relieves a full
  // journal by forgetting jobs).
  if (options_.max_bytes > 0 && log_deletes_ > 0 &&
      counted_bytes_ + written_since_count_ >= options_.max_bytes / 2) {
    return Due::kRoom;
  }
  return fold_ == nullptr && log_bytes_ >= CompactAtBytes() ? Due::kSize
                                                            : Due::kNo;
}

void JournalStore::BindRow(sqlite3_stmt* st, const StoredRow& row,
                           bool insert) {
  int i = 1;
  auto bind_blob = [&](std::optional<std::string_view> blob) {
    if (blob.has_value()) {
      sqlite3_bind_blob(st, i, blob->data(), static_cast<int>(blob->size()),
                        SQLITE_STATIC);
    } else {
      sqlite3_bind_null(st, i);
    }
    ++i;
  };
  sqlite3_bind_int64(st, i++, row.id);
  sqlite3_bind_int64(st, i++, row.state);
  sqlite3_bind_int64(st, i++, row.executor);
  if (insert) {
    // Never NULL (NOT NULL columns): a view of nothing, from a damaged
    // entry, binds as empty bytes.
    bind_blob(row.spec.data() != nullptr ? row.spec : std::string_view(""));
    sqlite3_bind_int64(st, i++, row.create_ns);
  }
  sqlite3_bind_int64(st, i++, row.start_ns);
  sqlite3_bind_int64(st, i++, row.finish_ns);
  bind_blob(row.result);
  bind_blob(row.error);
  if (insert) sqlite3_bind_int64(st, i++, row.accepted_seq);
  sqlite3_bind_int64(st, i++, row.started_seq);
  sqlite3_bind_int64(st, i++, row.ended_seq);
  sqlite3_bind_int64(st, i++, row.attempts);
  if (insert) {
    sqlite3_bind_text(st, i++,
                      row.owner.data() != nullptr ? row.owner.data() : "",
                      static_cast<int>(row.owner.size()), SQLITE_STATIC);
  }
  sqlite3_bind_int64(st, i++, row.due_ns);
  bind_blob(row.history);
  sqlite3_bind_int64(st, i++, row.cluster);
}

// A fold under way: the log rows it takes, what it learnt reading them,
// and how far it got.
struct JournalStore::Fold {
  int64_t last_id = 0;  // The log's last row when the fold began.
  // The bytes of log rows it takes at most (one row at least), and has.
  uint64_t take_bytes = 0, taken_bytes = 0;
  struct Row {
    int64_t id;
    uint64_t bytes;
    uint64_t deletes;  // Delete entries in it.
  };
  std::vector<Row> rows;  // Read so far, in log order (LogPos::row).
  // While the log is read: its entries replayed. Then, planned from it:
  // the table rows to delete and the entries to write, in log order.
  std::unique_ptr<LogReplay> replay = std::make_unique<LogReplay>();
  // What the fold does at an entry: write its job's row from it (an insert
  // or update of its columns; kMerge, an insert with its update further on:
  // the whole row at once, from both).
  struct RowWrite {
    enum Kind : uint8_t { kInsert, kUpdate, kMerge };
    LogPos pos;
    LogPos merge;  // kMerge: its update's.
    Kind kind;
    uint64_t id;
  };
  std::vector<RowWrite> writes;
  std::vector<uint64_t> deleted;  // Ascending.
  size_t next_write = 0, next_deleted = 0;
  uint32_t next_row = 0;  // Rows folded so far.
  Compacted done;
};

namespace {

// The spec a damaged insert leaves in the table: not a JobSpec (field 0),
// so that the job's row reads back with the problem named even after an
// update of its columns lands over it.
constexpr std::string_view kUnreadableSpec = "\x07";

}  // namespace

absl::Status JournalStore::BeginFold(uint64_t take_bytes) {
  fold_ = std::make_unique<Fold>();
  fold_->take_bytes = take_bytes;
  sqlite3_stmt* st = statements_->last_log.get();
  const int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) fold_->last_id = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? absl::OkStatus()
                          : SqliteError(db_, "reading the log");
}

absl::Status JournalStore::ReadLog(uint64_t budget) {
  Fold& f = *fold_;
  sqlite3_stmt* st = statements_->read_log.get();
  sqlite3_bind_int64(st, 1, f.rows.empty() ? 0 : f.rows.back().id);
  sqlite3_bind_int64(st, 2, f.last_id);
  uint64_t read = 0;
  int rc = SQLITE_ROW;
  budget = std::max<uint64_t>(budget, 1);
  while (read < budget && f.taken_bytes < f.take_bytes &&
         (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const std::string_view body = ColumnBlob(st, 1);
    const uint64_t deletes = f.replay->deletes();
    const int64_t id = sqlite3_column_int64(st, 0);
    if (std::string broken =
            f.replay->Apply(static_cast<uint32_t>(f.rows.size()), body);
        !broken.empty()) {
      spdlog::error(
          "journal: a row of {}'s log is damaged ({}): the changes after it "
          "in that row are lost at its compaction",
          options_.path, broken);
    }
    f.rows.push_back({.id = id,
                      .bytes = body.size(),
                      .deletes = f.replay->deletes() - deletes});
    read += body.size();
    f.taken_bytes += body.size();
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return SqliteError(db_, "reading the log");
  }
  if (rc == SQLITE_ROW && f.taken_bytes < f.take_bytes) {
    return absl::OkStatus();  // More to read, maybe.
  }
  // All read: what each job's row becomes. A job deleted whose first entry
  // here was an insert has no row in the table to delete (unless the log
  // was found at Open: an older jobd may not have written it so). A job
  // not deleted here but forgotten since (not live_: its delete is in a
  // later log row, which the fold leaves) gets no row: that delete, folded
  // later, takes whatever row it has, and replays over it until then.
  using RowWrite = Fold::RowWrite;
  for (const auto& [id, job] : f.replay->jobs()) {
    if (job.deleted) {
      if (job.maybe_in_table || log_from_open_) f.deleted.push_back(id);
    } else if (!live_.contains(id)) {
      ++f.done.skipped;
    } else if (job.inserted) {
      f.writes.push_back(
          {.pos = job.insert,
           .merge = job.update,
           .kind = job.updated ? RowWrite::kMerge : RowWrite::kInsert,
           .id = id});
    } else {
      f.writes.push_back(
          {.pos = job.update, .kind = RowWrite::kUpdate, .id = id});
    }
  }
  std::sort(f.writes.begin(), f.writes.end(),
            [](const RowWrite& a, const RowWrite& b) {
              return a.pos.Order() < b.pos.Order();
            });
  // (f.deleted is in id order already: the replay's jobs are.)
  f.done.entries = f.replay->entries();
  f.done.looked_for = f.deleted.size();
  f.replay.reset();
  return absl::OkStatus();
}

absl::Status JournalStore::FoldRows(uint64_t budget, uint64_t deletes) {
  Statements& stmts = *statements_;
  Fold& f = *fold_;
  if (absl::Status s = Run(stmts.begin.get(), "BEGIN"); !s.ok()) return s;
  // Rows of jobs forgotten since, first (the room they free): runs of
  // consecutive ids, one statement each, until `deletes` rows are gone. A
  // job the fold deletes has nothing to write, and whatever of it the log
  // still holds replays to no row.
  constexpr size_t kIdsAtATime = 4096;
  size_t next_deleted = f.next_deleted;
  uint64_t rows_deleted = 0;
  while (next_deleted < f.deleted.size() && rows_deleted < deletes) {
    const size_t n = std::min(kIdsAtATime, f.deleted.size() - next_deleted);
    if (absl::Status s = ForEachRun(
            absl::MakeConstSpan(f.deleted).subspan(next_deleted, n),
            [&](uint64_t first, uint64_t last) {
              sqlite3_stmt* st = stmts.remove_run.get();
              sqlite3_bind_int64(st, 1, static_cast<int64_t>(first));
              sqlite3_bind_int64(st, 2, static_cast<int64_t>(last));
              absl::Status step = Step(st);
              rows_deleted += static_cast<uint64_t>(sqlite3_changes(db_));
              return step;
            });
        !s.ok()) {
      return s;
    }
    next_deleted += n;
  }
  // Then, once no delete is left, log rows of up to `budget` bytes (one at
  // least), each leaving the log before its jobs' rows are written (a
  // capped file needs its pages for them).
  uint32_t end_row = f.next_row;
  if (next_deleted == f.deleted.size()) {
    uint64_t bytes = 0;
    while (end_row < f.rows.size() &&
           (end_row == f.next_row || bytes < budget)) {
      bytes += f.rows[end_row++].bytes;
    }
  }
  // A log row's bytes, this step's rows only; a later one's are kept until
  // its turn (an update of a job inserted in an earlier row is read there).
  // A map: the views of a row stay valid while others are added.
  std::map<uint32_t, std::string> rows;
  auto read_row = [&](uint32_t row) -> absl::StatusOr<std::string_view> {
    auto [it, added] = rows.try_emplace(row);
    if (!added) return it->second;
    sqlite3_stmt* read = stmts.log_row.get();
    sqlite3_bind_int64(read, 1, f.rows[row].id);
    if (sqlite3_step(read) != SQLITE_ROW) {
      absl::Status s = SqliteError(db_, "reading the log");
      sqlite3_reset(read);
      Rollback();
      return s;
    }
    it->second.assign(ColumnBlob(read, 0));
    sqlite3_reset(read);
    return it->second;
  };
  // A damaged entry writes zero columns (an insert: an unreadable spec, no
  // owner): its row then reads back with its problem named, and costs
  // only its job.
  using RowWrite = Fold::RowWrite;
  LogRecordParser parser;
  std::string ahead;  // An update's bytes, read ahead.
  // The later log row they are read from: one BLOB handle for the step,
  // moved from row to row (opening one compiles a statement each time).
  std::unique_ptr<sqlite3_blob, decltype(&sqlite3_blob_close)> ahead_blob(
      nullptr, &sqlite3_blob_close);
  int64_t ahead_row = 0;
  size_t next = f.next_write;
  uint64_t rows_written = 0, log_bytes = 0, log_deletes = 0;
  for (uint32_t row = f.next_row; row < end_row; ++row) {
    // Its bytes, if a row is written from it (most log rows a fold takes
    // have none: their jobs are forgotten).
    std::string_view body;
    if (next < f.writes.size() && f.writes[next].pos.row == row) {
      absl::StatusOr<std::string_view> read = read_row(row);
      if (!read.ok()) return read.status();
      body = *read;
    }
    sqlite3_bind_int64(stmts.remove_log.get(), 1, f.rows[row].id);
    if (absl::Status s = Step(stmts.remove_log.get()); !s.ok()) return s;
    log_bytes += f.rows[row].bytes;
    log_deletes += f.rows[row].deletes;
    for (; next < f.writes.size() && f.writes[next].pos.row == row; ++next) {
      const RowWrite& w = f.writes[next];
      const bool insert = w.kind != RowWrite::kUpdate;
      // kMerge, its update: in this step's rows, or only its bytes read of
      // a row a later step folds.
      std::string_view update;
      if (w.kind == RowWrite::kMerge) {
        if (w.merge.row < end_row) {
          absl::StatusOr<std::string_view> later = read_row(w.merge.row);
          if (!later.ok()) return later.status();
          update = w.merge.In(*later);
        } else {
          const int64_t id = f.rows[w.merge.row].id;
          int rc = SQLITE_OK;
          if (ahead_blob == nullptr) {
            sqlite3_blob* blob = nullptr;
            rc = sqlite3_blob_open(db_, "main", "log", "body", id, 0, &blob);
            ahead_blob.reset(blob);
          } else if (id != ahead_row) {
            rc = sqlite3_blob_reopen(ahead_blob.get(), id);
          }
          ahead_row = id;
          ahead.resize(w.merge.length);
          if (rc == SQLITE_OK) {
            rc = sqlite3_blob_read(ahead_blob.get(), ahead.data(),
                                   static_cast<int>(w.merge.length),
                                   static_cast<int>(w.merge.offset));
          }
          if (rc != SQLITE_OK) {
            absl::Status s = SqliteError(db_, "reading the log");
            Rollback();
            return s;
          }
          update = ahead;
        }
      }
      const std::string_view own = w.pos.In(body);
      StoredRow columns;
      columns.id = static_cast<int64_t>(w.id);
      bool parsed = parser.Parse(own, insert, 0, &columns);
      if (!parsed && insert) columns.spec = kUnreadableSpec;
      if (w.kind == RowWrite::kMerge) {
        parsed &= parser.Parse(update, /*insert=*/false, 1, &columns);
      }
      if (!parsed) columns.state = 0;
      sqlite3_stmt* st = insert ? stmts.insert.get() : stmts.update.get();
      BindRow(st, columns, insert);
      if (absl::Status s = Step(st); !s.ok()) return s;
      ++rows_written;
    }
    rows.erase(row);
  }
  ahead_blob.reset();  // No statement left open over the COMMIT.
  if (absl::Status c = Run(stmts.commit.get(), "COMMIT"); !c.ok()) {
    Rollback();
    return c;
  }
  f.next_deleted = next_deleted;
  f.next_row = end_row;
  f.next_write = next;
  f.done.rows_deleted += rows_deleted;
  f.done.rows_written += rows_written;
  log_bytes_ -= std::min(log_bytes_, log_bytes);
  log_deletes_ -= std::min(log_deletes_, log_deletes);
  return absl::OkStatus();
}

std::optional<JournalStore::Compacted> JournalStore::FinishFold() {
  const Fold& f = *fold_;
  if (f.replay != nullptr || f.next_deleted < f.deleted.size() ||
      f.next_row < f.rows.size()) {
    return std::nullopt;
  }
  Compacted done = f.done;
  fold_.reset();
  log_from_open_ = false;
  if (log_bytes_ == 0) log_deletes_ = 0;
  Recount(/*now=*/true);
  return done;
}

absl::StatusOr<JournalStore::Compacted> JournalStore::Compact() {
  const absl::Time start = absl::Now();
  constexpr uint64_t kAll = std::numeric_limits<uint64_t>::max();
  absl::Status s = BeginFold(/*take_bytes=*/kAll);
  if (s.ok()) s = ReadLog(kAll);
  if (s.ok()) s = FoldRows(kAll, kAll);
  std::optional<Compacted> done;
  if (s.ok()) done = FinishFold();
  fold_.reset();
  if (!s.ok()) return s;
  done->steps = 1;
  done->took = absl::Now() - start;
  return *done;
}

absl::StatusOr<JournalStore::FoldStep> JournalStore::CompactStep() {
  // Rows deleted in a step: about what a step's bytes of log take to fold.
  constexpr uint64_t kStepDeletes = 8192;
  constexpr uint64_t kAll = std::numeric_limits<uint64_t>::max();
  const absl::Time start = absl::Now();
  absl::Status s;
  if (fold_ == nullptr) {
    // The older half (one row at least); a log found at Open, whole, so
    // that once it is done no row of that log is left (log_from_open_).
    s = BeginFold(log_from_open_ ? kAll
                                 : std::max<uint64_t>(1, log_bytes_ / 2));
    appended_since_step_ = 0;
  }
  // A step takes four times what commits appended to the log since the
  // step before, if that is more than a step's bytes: the fold, which
  // reads its rows and then writes them, outruns the commits twice over
  // (big results make big log rows), and the log grows by at most a
  // quarter meanwhile. Should it still grow to twice the size that starts
  // a fold, the rest goes at once.
  uint64_t budget =
      std::max(options_.compact_step_bytes, 4 * appended_since_step_);
  uint64_t deletes = kStepDeletes;
  if (log_bytes_ >= 2 * CompactAtBytes()) budget = deletes = kAll;
  appended_since_step_ = 0;
  // A step reads, or folds; at once, both.
  const bool read = s.ok() && fold_->replay != nullptr;
  if (read) s = ReadLog(budget);
  if (s.ok() && (!read || budget == kAll)) s = FoldRows(budget, deletes);
  if (!s.ok()) {
    fold_.reset();
    return s;
  }
  FoldStep step{.took = absl::Now() - start};
  ++fold_->done.steps;
  fold_->done.took += step.took;
  step.finished = FinishFold();
  return step;
}

}  // namespace jobd
