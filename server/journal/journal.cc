#include "server/journal/journal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/unknown_field_set.h"
#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// 1: the first; 2: jobs.owner.
constexpr int kSchemaVersion = 2;

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
  owner TEXT NOT NULL DEFAULT 'anonymous');
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql";

int64_t Nanos(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixNanos(t);
}
absl::Time FromNanos(int64_t ns) {
  return ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns);
}

uint64_t FileBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
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
  sqlite3_stmt* get() const { return stmt_; }
  bool ok() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

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
  std::vector<std::string> problems;
  auto spec = std::make_shared<v1::JobSpec>();
  if (!spec->ParseFromArray(in.spec.data(), static_cast<int>(in.spec.size()))) {
    problems.push_back("its spec does not parse");
    spec = std::make_shared<v1::JobSpec>();
    spec->set_task(SalvageTask(in.spec));
  }
  row.spec = std::move(spec);
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

const char* DurabilityName(Durability d) {
  switch (d) {
    case Durability::kNone:
      return "none";
    case Durability::kBatched:
      return "batched";
    case Durability::kEveryCommit:
      return "every-commit";
  }
  return "?";
}

// Records queued since the last swap, in order.
struct Journal::Batch {
  enum Kind : uint8_t { kInsert, kUpdate, kDelete };
  struct Record {
    Kind kind;
    JournalRow row;  // kDelete: only id.
  };
  std::vector<Record> records;
  uint64_t last_sequence = 0;  // 0: none noted.
  absl::Time opened;           // When it became dirty.
  bool dirty() const { return !records.empty() || last_sequence != 0; }
  // Before adding to it (under Journal::mu_).
  Batch& Touch() {
    if (!dirty()) opened = absl::Now();
    return *this;
  }
};

Journal::Journal(JournalOptions options)
    : options_(std::move(options)), open_(std::make_unique<Batch>()) {}

// ---- opening and recovery ------------------------------------------------

namespace {

// Opens the database and reads every row. DataLoss if it is damaged.
absl::Status OpenAndRead(const JournalOptions& options, sqlite3** out,
                         Recovered* recovered) {
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
  }
  if (sqlite3_exec(db, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK ||
      sqlite3_exec(
          db, fmt::format("PRAGMA user_version={}", kSchemaVersion).c_str(),
          nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail("schema");
  }
  Statement rows(db,
                 "SELECT id, state, executor, spec, create_ns, start_ns, "
                 "finish_ns, result, error, accepted_seq, started_seq, "
                 "ended_seq, attempts, owner FROM jobs ORDER BY id");
  if (!rows.ok()) return fail("select");
  auto blob = [](sqlite3_stmt* st, int col) {
    const void* data = sqlite3_column_blob(st, col);
    return data == nullptr
               ? std::string_view()
               : std::string_view(
                     static_cast<const char*>(data),
                     static_cast<size_t>(sqlite3_column_bytes(st, col)));
  };
  auto optional_blob = [&](sqlite3_stmt* st,
                           int col) -> std::optional<std::string_view> {
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
    return blob(st, col);
  };
  int rc;
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
    JournalRow row = DecodeRow(stored);
    recovered->last_sequence =
        std::max({recovered->last_sequence, row.accepted_seq, row.started_seq,
                  row.ended_seq});
    recovered->rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return fail("reading jobs");
  Statement meta(db, "SELECT value FROM meta WHERE key='last_sequence'");
  if (!meta.ok()) return fail("meta");
  if (sqlite3_step(meta.get()) == SQLITE_ROW) {
    recovered->last_sequence =
        std::max(recovered->last_sequence,
                 static_cast<uint64_t>(sqlite3_column_int64(meta.get(), 0)));
  }
  *out = db;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(JournalOptions options,
                                                       Recovered* recovered) {
  std::error_code ec;
  const std::filesystem::path path(options.path);
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return absl::FailedPreconditionError(
          fmt::format("cannot create the state directory {}: {}",
                      path.parent_path().string(), ec.message()));
    }
  }
  std::unique_ptr<Journal> journal(new Journal(std::move(options)));
  const JournalOptions& o = journal->options_;
  *recovered = Recovered{};
  absl::Status s = OpenAndRead(o, &journal->db_, recovered);
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
    absl::Status fresh = OpenAndRead(o, &journal->db_, recovered);
    if (!fresh.ok()) {
      return absl::FailedPreconditionError(
          fmt::format("cannot create the journal {}: {}", o.path,
                      std::string(fresh.message())));
    }
  }
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
  if (journal->Exec(pragmas.c_str()).ok() == false) {
    return SqliteError(journal->db_, "pragmas");
  }
  journal->counted_bytes_ = journal->CountPages().used_bytes;
  const uint64_t used = journal->counted_bytes_;
  {
    absl::MutexLock lock(&journal->mu_);
    journal->rows_ = recovered->rows.size();
    journal->used_bytes_ = used;
  }
  journal->writer_ = std::thread([j = journal.get()] { j->WriterLoop(); });
  return journal;
}

Journal::~Journal() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;  // The writer commits what is queued, then ends.
  }
  if (writer_.joinable()) writer_.join();
  Abandon();  // Waiters of batches the writer gave up on.
  if (db_ != nullptr) {
    sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr,
                 nullptr);
    sqlite3_close(db_);
  }
}

// ---- queueing
// ----------------------------------------------------------------

uint64_t Journal::Insert(JournalRow row) {
  absl::MutexLock lock(&mu_);
  open_->Touch().records.push_back({Batch::kInsert, std::move(row)});
  return open_ticket_;
}

uint64_t Journal::Update(JournalRow row) {
  row.spec.reset();
  absl::MutexLock lock(&mu_);
  open_->Touch().records.push_back({Batch::kUpdate, std::move(row)});
  return open_ticket_;
}

uint64_t Journal::Delete(uint64_t id) {
  absl::MutexLock lock(&mu_);
  open_->Touch().records.push_back({Batch::kDelete, JournalRow{.id = id}});
  return open_ticket_;
}

uint64_t Journal::NoteSequence(uint64_t last_sequence) {
  absl::MutexLock lock(&mu_);
  open_->Touch().last_sequence = std::max(open_->last_sequence, last_sequence);
  return open_ticket_;
}

uint64_t Journal::ticket() const {
  absl::MutexLock lock(&mu_);
  return open_ticket_;
}

uint64_t Journal::durable() const {
  absl::MutexLock lock(&mu_);
  return durable_;
}

bool Journal::accepting() const {
  absl::MutexLock lock(&mu_);
  return !failing_;
}

std::string Journal::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

absl::Duration Journal::commit_latency() const {
  absl::MutexLock lock(&mu_);
  return commit_latency_;
}

Journal::Usage Journal::usage() const {
  absl::MutexLock lock(&mu_);
  return {.used_bytes = used_bytes_,
          .max_bytes = options_.max_bytes,
          .commits = commits_,
          .write_errors = write_errors_,
          .full = full_};
}

void Journal::WhenDurable(uint64_t ticket, DurableFn fn, Wait wait) {
  bool durable;
  {
    absl::MutexLock lock(&mu_);
    durable = ticket <= durable_;
    const bool give_up =
        abandoned_ || (wait == Wait::kFailFast && failing_ &&
                       absl::Now() - failing_since_ >= options_.outage_grace);
    if (!durable && !give_up) {
      (wait == Wait::kFailFast ? fail_fast_ : waiters_)
          .emplace(ticket, std::move(fn));
      // An empty batch commits too (its waiters need a durable point).
      if (ticket == open_ticket_ && open_->last_sequence == 0) {
        open_->Touch().last_sequence = 1;
      }
      return;
    }
  }
  fn(durable);
}

void Journal::Abandon() {
  std::multimap<uint64_t, DurableFn> waiters, fail_fast;
  {
    absl::MutexLock lock(&mu_);
    abandoned_ = true;
    stop_ = true;  // The writer gives up its retries.
    waiters.swap(waiters_);
    fail_fast.swap(fail_fast_);
  }
  for (auto& [ticket, fn] : waiters) fn(false);
  for (auto& [ticket, fn] : fail_fast) fn(false);
}

bool Journal::Flush(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const uint64_t target = open_->dirty() ? open_ticket_ : open_ticket_ - 1;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return durable_ >= target || stop_;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&done), deadline) &&
         durable_ >= target;
}

// ---- the writer
// --------------------------------------------------------------

void Journal::WriterLoop() {
  pthread_setname_np(pthread_self(), "jobd-journal");
  for (;;) {
    std::unique_ptr<Batch> batch;
    uint64_t ticket;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return open_->dirty() || stop_;
      };
      mu_.Await(absl::Condition(&work));
      if (!open_->dirty() && stop_) return;
      batch = std::exchange(open_, std::make_unique<Batch>());
      ticket = open_ticket_++;
    }
    if (!Commit(*batch, ticket)) return;  // Given up on at shutdown.
    std::vector<DurableFn> ready;
    {
      absl::MutexLock lock(&mu_);
      durable_ = ticket;
      for (auto* waiters : {&waiters_, &fail_fast_}) {
        auto end = waiters->upper_bound(ticket);
        for (auto it = waiters->begin(); it != end; ++it) {
          ready.push_back(std::move(it->second));
        }
        waiters->erase(waiters->begin(), end);
      }
    }
    for (auto& fn : ready) fn(true);
  }
}

// Folds each job's records into one row write: an insert absorbs the
// updates after it; a delete replaces what came before it.
void Journal::Fold(Batch& batch) {
  absl::flat_hash_map<uint64_t, size_t> last;  // id -> index in `folded`.
  std::vector<Batch::Record> folded;
  folded.reserve(batch.records.size());
  for (Batch::Record& r : batch.records) {
    auto it = last.find(r.row.id);
    if (it == last.end()) {
      last.emplace(r.row.id, folded.size());
      folded.push_back(std::move(r));
      continue;
    }
    Batch::Record& prev = folded[it->second];
    if (r.kind == Batch::kUpdate && prev.kind != Batch::kDelete) {
      std::shared_ptr<const v1::JobSpec> spec = std::move(prev.row.spec);
      prev.row = std::move(r.row);
      prev.row.spec = std::move(spec);  // An insert keeps its spec.
    } else {
      prev = std::move(r);
    }
  }
  batch.records = std::move(folded);
}

bool Journal::Commit(Batch& batch, uint64_t& ticket) {
  Fold(batch);
  const absl::Time start = absl::Now();
  absl::Duration backoff = absl::Milliseconds(50);
  for (int attempt = 0;; ++attempt) {
    // After a failure, deletes go first, on their own: they free room that a
    // full database needs for the rest. (Every write is idempotent.)
    absl::Status s =
        attempt == 0 ? Apply(batch, Part::kAll) : Apply(batch, Part::kDeletes);
    if (s.ok() && attempt > 0) s = Apply(batch, Part::kAllButDeletes);
    if (s.ok()) break;
    bool stopping;
    // Once the outage has lasted its grace, kFailFast waiters are answered
    // (not durable), and the retries wake up to do that in time.
    std::multimap<uint64_t, DurableFn> fail_fast;
    absl::Duration until_grace;
    {
      absl::MutexLock lock(&mu_);
      ++write_errors_;
      const absl::Time now = absl::Now();
      if (!failing_) failing_since_ = now;
      failing_ = true;
      full_ = absl::IsResourceExhausted(s);
      last_error_ = std::string(s.message());
      stopping = stop_;
      until_grace = failing_since_ + options_.outage_grace - now;
      if (until_grace <= absl::ZeroDuration()) fail_fast.swap(fail_fast_);
    }
    if (attempt == 0 || attempt % 100 == 0) {
      spdlog::error(
          "journal: cannot write {} record(s) to {}: {}; new jobs are refused "
          "until it can (retrying)",
          batch.records.size(), options_.path, std::string(s.message()));
    }
    for (auto& [waiting_for, fn] : fail_fast) fn(false);
    if (stopping && attempt > 3) {
      spdlog::error("journal: giving up on {} record(s) at shutdown",
                    batch.records.size());
      return false;
    }
    absl::SleepFor(until_grace > absl::ZeroDuration()
                       ? std::min(backoff, until_grace)
                       : backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
    // What was queued meanwhile joins the retry: a delete there may be what
    // frees the room this batch needs.
    {
      absl::MutexLock lock(&mu_);
      if (open_->dirty()) {
        for (Batch::Record& r : open_->records) {
          batch.records.push_back(std::move(r));
        }
        batch.last_sequence =
            std::max(batch.last_sequence, open_->last_sequence);
        open_ = std::make_unique<Batch>();
        ticket = open_ticket_++;
      }
    }
    Fold(batch);
  }
  absl::MutexLock lock(&mu_);
  if (failing_) {
    spdlog::info("journal: writing again");
    failing_ = false;
    full_ = false;
  }
  ++commits_;
  records_written_ += batch.records.size();
  const absl::Time now = absl::Now();
  last_commit_ = now - start;
  // From the batch's first record (the one that waited longest) to now.
  const absl::Duration waited = now - batch.opened;
  commit_latency_ = commits_ == 1 ? waited : (commit_latency_ * 7 + waited) / 8;
  return true;
}

absl::Status Journal::Exec(const char* sql) {
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

void Journal::Rollback() {
  // SQLite may have rolled the transaction back itself (it does on some
  // SQLITE_FULL and I/O errors); a ROLLBACK then fails with "no transaction
  // is active", which says nothing about what went wrong.
  if (sqlite3_get_autocommit(db_) == 0) Exec("ROLLBACK").IgnoreError();
}

uint64_t Journal::Pragma(const char* sql) {
  Statement st(db_, sql);
  if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) return 0;
  return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
}

Journal::Pages Journal::CountPages() {
  const uint64_t pages = Pragma("PRAGMA page_count");
  const uint64_t free_pages = std::min(pages, Pragma("PRAGMA freelist_count"));
  const uint64_t page_size = Pragma("PRAGMA page_size");
  return {.used_bytes = (pages - free_pages) * page_size,
          .free_bytes = free_pages * page_size};
}

absl::Status Journal::Apply(const Batch& batch, Part part) {
  Statement insert(db_,
                   "INSERT OR REPLACE INTO jobs(id, state, executor, spec, "
                   "create_ns, start_ns, finish_ns, result, error, "
                   "accepted_seq, started_seq, ended_seq, attempts, owner) "
                   "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  Statement update(db_,
                   "UPDATE jobs SET state=?2, executor=?3, start_ns=?4, "
                   "finish_ns=?5, result=?6, error=?7, started_seq=?8, "
                   "ended_seq=?9, attempts=?10 WHERE id=?1");
  Statement remove(db_, "DELETE FROM jobs WHERE id=?");
  Statement meta(db_,
                 "INSERT INTO meta(key, value) VALUES('last_sequence', ?) "
                 "ON CONFLICT(key) DO UPDATE SET value=max(value, "
                 "excluded.value)");
  if (!insert.ok() || !update.ok() || !remove.ok() || !meta.ok()) {
    return SqliteError(db_, "prepare");
  }
  const bool per_record = options_.durability == Durability::kEveryCommit;
  std::string spec_bytes, result_bytes, error_bytes;
  int64_t rows_delta = 0;
  uint64_t deletes = 0;
  size_t in_transaction = 0;
  uint64_t transaction_bytes = 0;
  uint64_t written = 0;  // Specs and results, in all the transactions.
  auto begin = [&]() { return Exec("BEGIN IMMEDIATE"); };
  auto commit = [&]() {
    in_transaction = 0;
    transaction_bytes = 0;
    return Exec("COMMIT");
  };
  if (absl::Status s = begin(); !s.ok()) return s;
  auto step = [&](sqlite3_stmt* st) -> absl::Status {
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
  };
  for (const Batch::Record& r : batch.records) {
    if (part == Part::kDeletes && r.kind != Batch::kDelete) continue;
    if (part == Part::kAllButDeletes && r.kind == Batch::kDelete) continue;
    const JournalRow& row = r.row;
    absl::Status s;
    if (r.kind == Batch::kDelete) {
      sqlite3_bind_int64(remove.get(), 1, static_cast<int64_t>(row.id));
      s = step(remove.get());
      if (s.ok() && sqlite3_changes(db_) > 0) --rows_delta;
      ++deletes;
    } else {
      result_bytes.clear();
      error_bytes.clear();
      if (row.end != nullptr) {
        row.end->result().SerializeToString(&result_bytes);
        row.end->error().SerializeToString(&error_bytes);
      }
      sqlite3_stmt* st = r.kind == Batch::kInsert && row.spec != nullptr
                             ? insert.get()
                             : update.get();
      int i = 1;
      auto bind_blob = [&](const std::string& bytes, bool present) {
        if (present) {
          sqlite3_bind_blob(st, i, bytes.data(), static_cast<int>(bytes.size()),
                            SQLITE_STATIC);
        } else {
          sqlite3_bind_null(st, i);
        }
        ++i;
      };
      sqlite3_bind_int64(st, i++, static_cast<int64_t>(row.id));
      sqlite3_bind_int(st, i++, row.state);
      sqlite3_bind_int(st, i++, row.executor);
      if (st == insert.get()) {
        spec_bytes.clear();
        row.spec->SerializeToString(&spec_bytes);
        bind_blob(spec_bytes, true);
        sqlite3_bind_int64(st, i++, Nanos(row.create_time));
      }
      sqlite3_bind_int64(st, i++, Nanos(row.start_time));
      sqlite3_bind_int64(st, i++, Nanos(row.finish_time));
      bind_blob(result_bytes, row.end != nullptr);
      bind_blob(error_bytes, row.end != nullptr);
      if (st == insert.get()) {
        sqlite3_bind_int64(st, i++, static_cast<int64_t>(row.accepted_seq));
      }
      sqlite3_bind_int64(st, i++, static_cast<int64_t>(row.started_seq));
      sqlite3_bind_int64(st, i++, static_cast<int64_t>(row.ended_seq));
      sqlite3_bind_int(st, i++, static_cast<int>(row.attempts));
      if (st == insert.get()) {
        sqlite3_bind_text(st, i++, row.owner.data(),
                          static_cast<int>(row.owner.size()), SQLITE_STATIC);
      }
      s = step(st);
      if (s.ok() && st == insert.get()) ++rows_delta;
      const uint64_t row_bytes = result_bytes.size() + error_bytes.size() +
                                 (st == insert.get() ? spec_bytes.size() : 0);
      transaction_bytes += row_bytes;
      written += row_bytes;
    }
    if (!s.ok()) return s;
    ++in_transaction;
    if (per_record || in_transaction >= options_.max_batch_records ||
        transaction_bytes >= options_.max_transaction_bytes) {
      // A failed COMMIT may leave the transaction open; the retry needs it
      // closed (and re-applies the whole batch: every record is idempotent).
      if (absl::Status c = commit(); !c.ok()) {
        Rollback();
        return c;
      }
      if (absl::Status b = begin(); !b.ok()) return b;
    }
  }
  if (part != Part::kDeletes && batch.last_sequence > 1) {
    sqlite3_bind_int64(meta.get(), 1,
                       static_cast<int64_t>(batch.last_sequence));
    if (absl::Status s = step(meta.get()); !s.ok()) return s;
  }
  if (absl::Status c = commit(); !c.ok()) {
    Rollback();
    return c;
  }
  deletes_since_vacuum_ += deletes;
  // How full it is, and whether freed pages add up (a few big results):
  // counted at every commit once half the cap is in use, else every
  // kCountPagesEvery (a few PRAGMAs per commit cost tiny jobs'
  // throughput), with what was written since added meanwhile. Freed pages
  // go back to the disk then, or every so many deletes.
  written_since_count_ += written;
  const absl::Time now = absl::Now();
  if ((options_.max_bytes > 0 &&
       counted_bytes_ + written_since_count_ >= options_.max_bytes / 2) ||
      now - pages_counted_ >= kCountPagesEvery) {
    pages_counted_ = now;
    const Pages pages = CountPages();
    if (deletes_since_vacuum_ > 0 && pages.free_bytes >= kVacuumFreeBytes) {
      deletes_since_vacuum_ = 10000;
    }
    counted_bytes_ = pages.used_bytes;
    written_since_count_ = 0;
  }
  if (deletes_since_vacuum_ >= 10000) {
    deletes_since_vacuum_ = 0;
    Exec("PRAGMA incremental_vacuum").IgnoreError();
  }
  absl::MutexLock lock(&mu_);
  rows_ = static_cast<uint64_t>(static_cast<int64_t>(rows_) + rows_delta);
  used_bytes_ = counted_bytes_ + written_since_count_;
  return absl::OkStatus();
}

void Journal::AddStats(v1::GetStatsResponse& stats) const {
  v1::JournalStats& j = *stats.mutable_journal();
  j.set_path(MakeValidUtf8(options_.path));  // A path is bytes.
  j.set_durability(DurabilityName(options_.durability));
  j.set_file_bytes(FileBytes(options_.path));
  j.set_wal_bytes(FileBytes(options_.path + "-wal"));
  j.set_max_bytes(options_.max_bytes);
  absl::MutexLock lock(&mu_);
  j.set_rows(rows_);
  j.set_commits(commits_);
  j.set_records(records_written_);
  j.set_write_errors(write_errors_);
  j.set_healthy(!failing_);
  j.set_last_error(MakeValidUtf8(last_error_));
  *j.mutable_last_commit() = ToProtoDuration(last_commit_);
}

}  // namespace jobd
