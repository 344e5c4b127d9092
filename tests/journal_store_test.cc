// Unit tests of the journal's SQLite side (server/journal/journal_store.h)
// and its log (server/journal/journal_log.h) on a real database in a temp
// directory: a row encoded into columns decodes to the same row; inserts,
// updates and deletes written (whole, or deletes apart) read back on the
// next open, with the highest sequence; a batch split into many
// transactions writes every record; after a crash (a child process that
// exits without closing) the log is replayed over the table; compaction
// writes only the jobs still kept, and in steps takes the log's older half
// only; a damaged log entry costs only its job.
#include "server/journal/journal_store.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobd/journal/log.pb.h"
#include "server/journal/journal_log.h"
#include "tests/fakes/sqlite_integer.h"

namespace jobd {
namespace {

JournalRow Queued(uint64_t id) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("echo");
  spec->set_payload("payload " + std::to_string(id));
  spec->set_priority(3);
  JournalRow row;
  row.id = id;
  row.owner = "alice";
  row.spec = spec;
  row.state = v1::JOB_STATE_QUEUED;
  row.executor = v1::EXECUTOR_PROCESS;
  row.create_time = absl::FromUnixNanos(1'700'000'000'123'456'789);
  row.accepted_seq = id * 10;
  return row;
}

JournalRow Ended(uint64_t id, v1::JobState state) {
  JournalRow row = Queued(id);
  row.state = state;
  row.start_time = absl::FromUnixSeconds(2000);
  row.finish_time = absl::FromUnixSeconds(3000);
  auto end = std::make_shared<JobEnd>();
  end->state = state;
  if (state == v1::JOB_STATE_SUCCEEDED) {
    end->mutable_result().mutable_value()->set_string_value("done");
  } else {
    end->mutable_error().set_message("boom");
    end->mutable_error().set_reason(v1::ERROR_REASON_TASK_ERROR);
  }
  row.end = end;
  row.started_seq = id * 10 + 1;
  row.ended_seq = id * 10 + 2;
  row.attempts = 2;
  return row;
}

// The update record of `row` (updates carry no spec).
JournalRecord Update(JournalRow row) {
  row.spec = nullptr;
  return {JournalRecord::kUpdate, std::move(row)};
}

// What DecodeRow must give back of `in`.
void ExpectSameRow(const JournalRow& in, const JournalRow& out) {
  EXPECT_EQ(out.problem, "");
  EXPECT_EQ(out.id, in.id);
  EXPECT_EQ(out.owner, in.owner);
  ASSERT_NE(out.spec, nullptr);
  EXPECT_EQ(out.spec->SerializeAsString(), in.spec->SerializeAsString());
  EXPECT_EQ(out.state, in.state);
  EXPECT_EQ(out.executor, in.executor);
  EXPECT_EQ(out.create_time, in.create_time);
  EXPECT_EQ(out.start_time, in.start_time);
  EXPECT_EQ(out.finish_time, in.finish_time);
  EXPECT_EQ(out.accepted_seq, in.accepted_seq);
  EXPECT_EQ(out.started_seq, in.started_seq);
  EXPECT_EQ(out.ended_seq, in.ended_seq);
  EXPECT_EQ(out.attempts, in.attempts);
  ASSERT_EQ(out.end == nullptr, in.end == nullptr);
  if (in.end != nullptr) {
    EXPECT_EQ(out.end->state, in.end->state);
    EXPECT_EQ(out.end->result().SerializeAsString(),
              in.end->result().SerializeAsString());
    EXPECT_EQ(out.end->error().SerializeAsString(),
              in.end->error().SerializeAsString());
  }
}

TEST(EncodeRowTest, ARowDecodesToWhatWasEncoded) {
  for (const JournalRow& row :
       {Queued(1), Ended(2, v1::JOB_STATE_SUCCEEDED),
        Ended(3, v1::JOB_STATE_FAILED), Ended(4, v1::JOB_STATE_CANCELLED)}) {
    EncodedBytes bytes;
    StoredRow stored;
    EncodeRow(row, /*insert=*/true, bytes, &stored);
    ExpectSameRow(row, DecodeRow(stored));
  }
}

TEST(EncodeRowTest, AnEndHasBothColumnsAndNoEndHasNeither) {
  EncodedBytes bytes;
  StoredRow stored;
  EncodeRow(Queued(1), true, bytes, &stored);
  EXPECT_FALSE(stored.result.has_value());
  EXPECT_FALSE(stored.error.has_value());
  EncodeRow(Ended(2, v1::JOB_STATE_SUCCEEDED), true, bytes, &stored);
  ASSERT_TRUE(stored.result.has_value());
  ASSERT_TRUE(stored.error.has_value());
  EXPECT_FALSE(stored.result->empty());
  EXPECT_TRUE(stored.error->empty());  // The one its state does not use.
  // An update leaves what only an insert writes.
  EncodeRow(Ended(3, v1::JOB_STATE_FAILED), /*insert=*/false, bytes, &stored);
  EXPECT_TRUE(stored.spec.empty());
  EXPECT_TRUE(stored.owner.empty());
  EXPECT_EQ(stored.create_ns, 0);
  EXPECT_EQ(stored.accepted_seq, 0);
  EXPECT_EQ(stored.ended_seq, 32);
}

class JournalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/jobd-journal-store-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Runs `fn` in a child process that then ends without closing anything,
  // as a crash would leave the database; true if it ran to its end.
  static bool InCrashingChild(const std::function<bool()>& fn) {
    const pid_t pid = fork();
    if (pid == 0) _exit(fn() ? 0 : 1);
    int status = 0;
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
  }
  // The value of a one-integer query on the database.
  int64_t Count(const char* sql) { return CountIn(dir_, sql); }
  // The same, on the database in `dir`.
  static int64_t CountIn(const std::string& dir, const char* sql) {
    return SqliteInteger(dir + "/jobd.db", sql);
  }
  // Appends a row of bytes to the log, as a commit would.
  void AppendLogRow(const std::string& body) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/jobd.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO log(body) VALUES(?)", -1, &st,
                                 nullptr),
              SQLITE_OK);
    sqlite3_bind_blob(st, 1, body.data(), static_cast<int>(body.size()),
                      SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  std::unique_ptr<JournalStore> Open(
      Recovered* recovered, size_t max_batch_records = 16384,
      uint64_t compact_step_bytes = JournalOptions{}.compact_step_bytes) {
    JournalOptions options{.path = dir_ + "/jobd.db"};
    options.max_batch_records = max_batch_records;
    options.compact_step_bytes = compact_step_bytes;
    auto store = JournalStore::Open(options, recovered);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  // Writes one record to `store`, alone in its commit.
  static void WriteOne(JournalStore& store, JournalRecord record) {
    EXPECT_TRUE(
        store.Write({std::move(record)}, 0, JournalStore::Part::kAll).ok());
  }
  // The bytes a one-integer query on the database counts.
  uint64_t LogBytes(const char* sql) {
    return static_cast<uint64_t>(Count(sql));
  }
  // The insert of job `id` whose log entry (a log row, alone in a commit)
  // is the longest not over `max_bytes`: its payload padded.
  static JournalRecord PaddingJob(uint64_t id, uint64_t max_bytes) {
    LogWriter writer;
    JournalRecord best{JournalRecord::kInsert, Queued(id)};
    for (size_t n = 0; n <= max_bytes; ++n) {
      JournalRecord r{JournalRecord::kInsert, Queued(id)};
      auto spec = std::make_shared<v1::JobSpec>(*r.row.spec);
      spec->set_payload(std::string(n, 'x'));
      r.row.spec = spec;
      std::string body;
      writer.Append(r, &body);
      if (body.size() > max_bytes) break;
      best = r;
    }
    return best;
  }
  // Reads back in `r` exactly the rows of `expected`, in id order.
  static void ExpectRows(const std::map<uint64_t, JournalRow>& expected,
                         const Recovered& r) {
    ASSERT_EQ(r.rows.size(), expected.size());
    size_t i = 0;
    for (const auto& [id, row] : expected) ExpectSameRow(row, r.rows[i++]);
  }
  // What a crash would leave now reads back exactly `expected`.
  void ExpectCrashImageHolds(const std::map<uint64_t, JournalRow>& expected,
                             const std::string& when) {
    SCOPED_TRACE(when);
    Recovered image;
    auto crashed =
        OpenCrashImage(dir_, dir_ + "/image", JournalOptions{}, &image);
    ASSERT_NE(crashed, nullptr);
    ExpectRows(expected, image);
  }
  // Folds the log in steps until the fold is done (at most 200).
  static std::optional<JournalStore::Compacted> FoldInSteps(
      JournalStore& store) {
    for (int i = 0; i < 200; ++i) {
      auto step = store.CompactStep();
      EXPECT_TRUE(step.ok()) << step.status();
      if (!step.ok() || step->finished.has_value()) {
        return step.ok() ? step->finished : std::nullopt;
      }
    }
    return std::nullopt;
  }
  // What a crash would leave of the journal in `from` now: its database
  // and WAL copied to the new directory `to` (no transaction is open
  // between two calls on a store), opened there.
  std::unique_ptr<JournalStore> OpenCrashImage(const std::string& from,
                                               const std::string& to,
                                               JournalOptions options,
                                               Recovered* r) {
    std::filesystem::remove_all(to);
    std::filesystem::create_directory(to);
    for (const char* file : {"/jobd.db", "/jobd.db-wal"}) {
      if (std::filesystem::exists(from + file)) {
        std::filesystem::copy_file(from + file, to + file);
      }
    }
    options.path = to + "/jobd.db";
    auto store = JournalStore::Open(options, r);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string dir_;
};

TEST_F(JournalStoreTest, WrittenRowsReadBackOnTheNextOpen) {
  {
    Recovered r;
    auto store = Open(&r);
    ASSERT_NE(store, nullptr);
    EXPECT_TRUE(r.rows.empty());
    std::vector<JournalRecord> records = {
        {JournalRecord::kInsert, Queued(1)},
        {JournalRecord::kInsert, Queued(2)},
        {JournalRecord::kInsert, Queued(3)},
    };
    auto written = store->Write(records, 0, JournalStore::Part::kAll);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->rows, 3u);
    EXPECT_GT(written->used_bytes, 0u);
    JournalRow ended = Ended(2, v1::JOB_STATE_SUCCEEDED);
    ended.spec = nullptr;  // Updates carry no spec.
    records = {{JournalRecord::kUpdate, ended},
               {JournalRecord::kDelete, JournalRow{.id = 3}}};
    written = store->Write(records, 77, JournalStore::Part::kAll);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->rows, 2u);
  }
  Recovered r;
  auto store = Open(&r);
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(r.rows.size(), 2u);
  ExpectSameRow(Queued(1), r.rows[0]);
  ExpectSameRow(Ended(2, v1::JOB_STATE_SUCCEEDED), r.rows[1]);
  EXPECT_EQ(r.last_sequence, 77u);
  EXPECT_EQ(r.moved_aside, "");
}

TEST_F(JournalStoreTest, DeletesCanBeWrittenApartFromTheRest) {
  Recovered r;
  auto store = Open(&r);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store
                  ->Write({{JournalRecord::kInsert, Queued(1)}}, 0,
                          JournalStore::Part::kAll)
                  .ok());
  const std::vector<JournalRecord> records = {
      {JournalRecord::kDelete, JournalRow{.id = 1}},
      {JournalRecord::kInsert, Queued(2)}};
  auto deletes = store->Write(records, 50, JournalStore::Part::kDeletes);
  ASSERT_TRUE(deletes.ok());
  EXPECT_EQ(deletes->rows, 0u);
  auto rest = store->Write(records, 50, JournalStore::Part::kAllButDeletes);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->rows, 1u);
  store.reset();
  auto reopened = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].id, 2u);
  EXPECT_EQ(r.last_sequence, 50u);
}

TEST_F(JournalStoreTest, ABatchSplitIntoManyTransactionsWritesEveryRecord) {
  {
    Recovered r;
    auto store = Open(&r, /*max_batch_records=*/2);
    ASSERT_NE(store, nullptr);
    std::vector<JournalRecord> records;
    for (uint64_t id = 1; id <= 7; ++id) {
      records.push_back({JournalRecord::kInsert, Queued(id)});
    }
    auto written = store->Write(records, 70, JournalStore::Part::kAll);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->rows, 7u);
  }
  Recovered r;
  auto store = Open(&r);
  ASSERT_EQ(r.rows.size(), 7u);
  for (uint64_t id = 1; id <= 7; ++id)
    ExpectSameRow(Queued(id), r.rows[id - 1]);
  EXPECT_EQ(r.last_sequence, 70u);
}

// A crash leaves the changes since the last compaction in the log; the
// next open replays them over the table, and a clean close folds them in.
TEST_F(JournalStoreTest, AfterACrashTheLogIsReplayedOverTheTable) {
  {
    Recovered r;
    auto store = Open(&r);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store
                    ->Write({{JournalRecord::kInsert, Queued(1)},
                             {JournalRecord::kInsert, Queued(2)},
                             {JournalRecord::kInsert, Queued(3)}},
                            0, JournalStore::Part::kAll)
                    .ok());
  }  // A clean close: folded into the table.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 3);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 0);
  JournalRow ended = Ended(2, v1::JOB_STATE_SUCCEEDED);
  JournalRow running = Queued(6);
  running.state = v1::JOB_STATE_RUNNING;
  running.start_time = absl::FromUnixSeconds(2000);
  running.started_seq = 61;
  ASSERT_TRUE(InCrashingChild([&] {
    Recovered r;
    auto store = JournalStore::Open({.path = dir_ + "/jobd.db"}, &r);
    if (!store.ok() || r.rows.size() != 3) return false;
    JournalRow update = ended;
    update.spec = nullptr;  // Updates carry no spec.
    JournalRow start = running;
    start.spec = nullptr;
    const std::vector<std::vector<JournalRecord>> commits = {
        {{JournalRecord::kUpdate, update},
         {JournalRecord::kDelete, JournalRow{.id = 3}},
         {JournalRecord::kInsert, Queued(4)},
         {JournalRecord::kInsert, Queued(5)},
         {JournalRecord::kInsert, Queued(6)}},
        {{JournalRecord::kDelete, JournalRow{.id = 5}},
         {JournalRecord::kUpdate, start}},
    };
    for (const auto& commit : commits) {
      if (!(*store)->Write(commit, 90, JournalStore::Part::kAll).ok()) {
        return false;
      }
    }
    _exit(0);  // No close, no compaction: as a crash.
  }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 3);  // 1, 2, 3 as they were.
  EXPECT_EQ(Count("SELECT state FROM jobs WHERE id=2"), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 2);
  {
    Recovered r;
    auto store = Open(&r);
    ASSERT_NE(store, nullptr);
    ASSERT_EQ(r.rows.size(), 4u);
    ExpectSameRow(Queued(1), r.rows[0]);
    ExpectSameRow(ended, r.rows[1]);
    ExpectSameRow(Queued(4), r.rows[2]);
    ExpectSameRow(running, r.rows[3]);
    EXPECT_EQ(r.last_sequence, 90u);
  }  // Closed: the log folded into the table.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 4);
  EXPECT_EQ(Count("SELECT state FROM jobs WHERE id=6"), v1::JOB_STATE_RUNNING);
  Recovered r;
  auto store = Open(&r);
  ASSERT_EQ(r.rows.size(), 4u);
  ExpectSameRow(ended, r.rows[1]);
  ExpectSameRow(running, r.rows[3]);
}

// A job inserted, ended and forgotten between two compactions never
// touches the jobs table.
TEST_F(JournalStoreTest, CompactionWritesOnlyTheJobsStillKept) {
  Recovered r;
  auto store = Open(&r);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->compaction_due(), JournalStore::Due::kNo);
  std::vector<JournalRecord> records;
  for (uint64_t id = 1; id <= 10; ++id) {
    records.push_back({JournalRecord::kInsert, Queued(id)});
  }
  ASSERT_TRUE(store->Write(records, 0, JournalStore::Part::kAll).ok());
  records.clear();
  for (uint64_t id = 1; id <= 10; ++id) {
    JournalRow end = Ended(id, v1::JOB_STATE_SUCCEEDED);
    end.spec = nullptr;
    records.push_back({JournalRecord::kUpdate, end});
  }
  ASSERT_TRUE(store->Write(records, 0, JournalStore::Part::kAll).ok());
  records.clear();
  for (uint64_t id = 1; id <= 8; ++id) {
    records.push_back({JournalRecord::kDelete, JournalRow{.id = id}});
  }
  auto written = store->Write(records, 0, JournalStore::Part::kAll);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->rows, 2u);
  auto compacted = store->Compact();
  ASSERT_TRUE(compacted.ok()) << compacted.status();
  EXPECT_EQ(compacted->entries, 28u);
  // Jobs 9 and 10: their insert and their end, one row write each.
  EXPECT_EQ(compacted->rows_written, 2u);
  EXPECT_EQ(compacted->rows_deleted, 0u);  // 1 to 8 never got there.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 0);
  WriteOne(*store, {JournalRecord::kDelete, JournalRow{.id = 9}});
  compacted = store->Compact();
  ASSERT_TRUE(compacted.ok());
  EXPECT_EQ(compacted->rows_written, 0u);
  EXPECT_EQ(compacted->rows_deleted, 1u);
  store.reset();
  auto reopened = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  ExpectSameRow(Ended(10, v1::JOB_STATE_SUCCEEDED), r.rows[0]);
}

// A fold in steps takes the log's older half (by bytes), one log row per
// step here, and commits go on between its steps: a job inserted in one
// row and updated in a later one is written once, whole; a job inserted
// and forgotten within the fold is never looked for in the table, one that
// was there is deleted, one inserted again replaced; the younger half stays
// in the log, and what a crash leaves after any step reads back the same.
TEST_F(JournalStoreTest, AFoldInStepsTakesTheOlderHalfAndWritesEachKeptJob) {
  Recovered r;
  auto store = Open(&r, 16384, /*compact_step_bytes=*/1);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store
                  ->Write({{JournalRecord::kInsert, Queued(10)},
                           {JournalRecord::kInsert, Queued(11)}},
                          0, JournalStore::Part::kAll)
                  .ok());
  ASSERT_TRUE(store->Compact().ok());  // 10 and 11 in the table.
  JournalRow running = Queued(3);
  running.state = v1::JOB_STATE_RUNNING;
  running.start_time = absl::FromUnixSeconds(2000);
  running.started_seq = 31;
  JournalRow again = Queued(10);  // Its spec rewritten.
  auto spec = std::make_shared<v1::JobSpec>(*again.spec);
  spec->set_payload("rewritten");
  again.spec = spec;
  const std::vector<std::vector<JournalRecord>> commits = {
      {{JournalRecord::kInsert, Queued(1)},
       {JournalRecord::kInsert, Queued(2)},
       {JournalRecord::kInsert, Queued(3)},
       Update(Ended(10, v1::JOB_STATE_FAILED))},
      {Update(Ended(1, v1::JOB_STATE_SUCCEEDED)),
       {JournalRecord::kDelete, JournalRow{.id = 2}},
       {JournalRecord::kDelete, JournalRow{.id = 11}}},
      {Update(running), {JournalRecord::kInsert, again}},
  };
  for (const auto& commit : commits) {
    ASSERT_TRUE(store->Write(commit, 0, JournalStore::Part::kAll).ok());
  }
  // The younger half: one job as big as those three commits.
  const JournalRecord padding =
      PaddingJob(50, LogBytes("SELECT sum(length(body)) FROM log"));
  WriteOne(*store, padding);
  std::map<uint64_t, JournalRow> expected = {
      {1, Ended(1, v1::JOB_STATE_SUCCEEDED)},
      {3, running},
      {10, again},
      {50, padding.row}};
  std::optional<JournalStore::Compacted> done;
  int steps = 0;
  for (; steps < 20 && !done.has_value(); ++steps) {
    auto step = store->CompactStep();
    ASSERT_TRUE(step.ok()) << step.status();
    done = step->finished;
    EXPECT_EQ(store->compacting(), !done.has_value());
    if (steps == 1) {  // A commit while the fold reads the log.
      WriteOne(*store, {JournalRecord::kInsert, Queued(4)});
      expected[4] = Queued(4);
    }
    ExpectCrashImageHolds(expected, "step " + std::to_string(steps));
  }
  ASSERT_TRUE(done.has_value());
  // Three rows read, one at a time, then planned; the rows folded.
  EXPECT_GE(steps, 5);
  EXPECT_EQ(done->steps, static_cast<uint32_t>(steps));
  EXPECT_EQ(done->entries, 10u);      // Job 10's delete before its insert too.
  EXPECT_EQ(done->rows_written, 3u);  // 1 and 3 (merged), 10 (replaced).
  EXPECT_EQ(done->rows_deleted, 1u);  // 11.
  EXPECT_EQ(done->looked_for, 1u);    // 2 never reached the table.
  EXPECT_EQ(done->skipped, 0u);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 3);
  // The younger half and job 4's commit, as they were.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 2);
  store.reset();
  auto reopened = Open(&r);
  ExpectRows(expected, r);
}

// A job of the older half forgotten since (its delete is in the younger
// half) gets no row, and one that has a row keeps it as it was: a crash
// after any step reads back without either, and a later fold takes their
// deletes.
TEST_F(JournalStoreTest, AJobForgottenAfterTheFoldedRowsGetsNoRow) {
  Recovered r;
  auto store = Open(&r, 16384, /*compact_step_bytes=*/1);
  ASSERT_NE(store, nullptr);
  WriteOne(*store, {JournalRecord::kInsert, Queued(5)});
  ASSERT_TRUE(store->Compact().ok());  // 5 in the table, queued.
  ASSERT_TRUE(store
                  ->Write({{JournalRecord::kInsert, Queued(1)},
                           {JournalRecord::kInsert, Queued(2)}},
                          0, JournalStore::Part::kAll)
                  .ok());
  ASSERT_TRUE(store
                  ->Write({Update(Ended(1, v1::JOB_STATE_SUCCEEDED)),
                           Update(Ended(2, v1::JOB_STATE_FAILED)),
                           Update(Ended(5, v1::JOB_STATE_SUCCEEDED))},
                          0, JournalStore::Part::kAll)
                  .ok());
  const uint64_t older = LogBytes("SELECT sum(length(body)) FROM log");
  ASSERT_TRUE(store
                  ->Write({{JournalRecord::kDelete, JournalRow{.id = 1}},
                           {JournalRecord::kDelete, JournalRow{.id = 5}}},
                          0, JournalStore::Part::kAll)
                  .ok());
  const uint64_t delete_row =
      LogBytes("SELECT sum(length(body)) FROM log") - older;
  // The younger half: the delete, and a job as big as the rest of the two
  // commits before it.
  const JournalRecord padding = PaddingJob(50, older - delete_row);
  WriteOne(*store, padding);
  const std::map<uint64_t, JournalRow> expected = {
      {2, Ended(2, v1::JOB_STATE_FAILED)}, {50, padding.row}};
  std::optional<JournalStore::Compacted> done;
  for (int i = 0; i < 20 && !done.has_value(); ++i) {
    auto step = store->CompactStep();
    ASSERT_TRUE(step.ok()) << step.status();
    done = step->finished;
    ExpectCrashImageHolds(expected, "step " + std::to_string(i));
  }
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->skipped, 2u);       // 1 and 5.
  EXPECT_EQ(done->rows_written, 1u);  // 2.
  EXPECT_EQ(done->looked_for, 0u);
  // 2, and 5's row as the first fold left it (its end not written).
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 2);
  EXPECT_EQ(Count("SELECT state FROM jobs WHERE id = 5"),
            static_cast<int64_t>(v1::JOB_STATE_QUEUED));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 2);
  // The whole log: the deletes of 1 (no row) and 5 (its row).
  auto whole = store->Compact();
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->looked_for, 2u);
  EXPECT_EQ(whole->rows_deleted, 1u);
  EXPECT_EQ(whole->rows_written, 1u);                // 50.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 2);  // 2 and 50.
  ExpectCrashImageHolds(expected, "after the whole fold");
}

// A fold in steps leaves the younger half of the log in place: each job
// is in the table or the log, never both nor neither, and the next fold is
// due once commits have appended about half as much as the first took.
TEST_F(JournalStoreTest, AFoldInStepsLeavesTheYoungerHalfInTheLog) {
  Recovered r;
  JournalOptions options{.path = dir_ + "/jobd.db"};
  options.compact_log_bytes = 4096;
  options.compact_step_bytes = 1;
  auto opened = JournalStore::Open(options, &r);
  ASSERT_TRUE(opened.ok()) << opened.status();
  JournalStore& store = **opened;
  uint64_t id = 1;
  while (store.compaction_due() == JournalStore::Due::kNo && id < 1000) {
    WriteOne(store, PaddingJob(id++, 200));
  }
  ASSERT_EQ(store.compaction_due(), JournalStore::Due::kSize);
  const uint64_t first = id - 1;
  const uint64_t total = LogBytes("SELECT sum(length(body)) FROM log");
  const auto done = FoldInSteps(store);
  ASSERT_TRUE(done.has_value());
  const uint64_t left = LogBytes("SELECT sum(length(body)) FROM log");
  EXPECT_LE(left, (total + 1) / 2);
  EXPECT_GT(left + 200, total / 2);  // Rows of 200 bytes.
  EXPECT_EQ(
      Count("SELECT COUNT(*) FROM jobs") + Count("SELECT COUNT(*) FROM log"),
      static_cast<int64_t>(first));
  EXPECT_EQ(done->rows_written,
            static_cast<uint64_t>(Count("SELECT COUNT(*) FROM jobs")));
  EXPECT_EQ(store.compaction_due(), JournalStore::Due::kNo);
  const uint64_t before = id;
  while (store.compaction_due() == JournalStore::Due::kNo && id < 2000) {
    WriteOne(store, PaddingJob(id++, 200));
  }
  EXPECT_EQ(store.compaction_due(), JournalStore::Due::kSize);
  EXPECT_NEAR(static_cast<double>(id - before), first / 2.0, 2);
}

// Failing commits on demand: an SQLite commit hook (on every connection
// opened, through an auto extension) lets the next commits_to_pass
// COMMITs through, then turns the next commits_to_fail into rollbacks, as
// a write error at commit would.
std::atomic<int> commits_to_fail{0};
std::atomic<int> commits_to_pass{0};  // Before those that fail.
int FailCommit(void*) {
  if (commits_to_pass.load() > 0) {
    --commits_to_pass;
    return 0;
  }
  if (commits_to_fail.load() <= 0) return 0;
  --commits_to_fail;
  return 1;
}
int InstallCommitHook(sqlite3* db, const char**, const sqlite3_api_routines*) {
  sqlite3_commit_hook(db, FailCommit, nullptr);
  return SQLITE_OK;
}

// Commits and folds (whole, or in steps of one or a few log rows) in a
// random order, some of them failing (a failed commit retried whole, as
// the journal does), and now and then a restart from what a crash left;
// after each, what a crash would leave reads back as a model of the jobs
// says.
TEST_F(JournalStoreTest, ACrashAnywhereInFoldsAndCommitsLosesNothing) {
  sqlite3_auto_extension(reinterpret_cast<void (*)()>(&InstallCommitHook));
  for (const uint64_t step_bytes : {1u, 300u}) {
    SCOPED_TRACE(step_bytes);
    std::mt19937 random(static_cast<uint32_t>(step_bytes));
    auto pick = [&](size_t n) {
      return std::uniform_int_distribution<size_t>(0, n - 1)(random);
    };
    std::map<uint64_t, JournalRow> model;  // What a start must read back.
    uint64_t next_id = 1;
    int images = 0;
    std::string current = dir_ + "/run" + std::to_string(step_bytes);
    std::filesystem::create_directory(current);
    Recovered r;
    // Folds due at 512 bytes of log: a count of its bytes gone wrong shows.
    const JournalOptions options{.path = current + "/jobd.db",
                                 .compact_log_bytes = 512,
                                 .compact_step_bytes = step_bytes};
    auto opened = JournalStore::Open(options, &r);
    ASSERT_TRUE(opened.ok()) << opened.status();
    std::unique_ptr<JournalStore> store = *std::move(opened);
    int folds_finished = 0, failed = 0, restarts = 0;
    for (int op = 0; op < 400; ++op) {
      const size_t what = pick(10);
      const bool fail = pick(8) == 0;
      if (what < 6) {  // A commit of a few jobs' records.
        std::vector<JournalRecord> records;
        std::set<uint64_t> touched;
        for (size_t n = 1 + pick(4); n > 0; --n) {
          const size_t kind = pick(4);
          if (kind == 0 || model.empty()) {
            const uint64_t id = next_id++;
            model[id] = Queued(id);
            records.push_back({JournalRecord::kInsert, model[id]});
            touched.insert(id);
            continue;
          }
          auto it = model.begin();
          std::advance(it, pick(model.size()));
          const uint64_t id = it->first;
          if (!touched.insert(id).second) continue;  // One record per job.
          if (kind == 1) {
            JournalRow row =
                op % 2 ? Ended(id, v1::JOB_STATE_SUCCEEDED) : Queued(id);
            if (op % 2 == 0) {
              row.state = v1::JOB_STATE_RUNNING;
              row.start_time = absl::FromUnixSeconds(op);
            }
            row.spec = it->second.spec;
            row.attempts = static_cast<uint32_t>(op);
            it->second = row;
            row.spec = nullptr;
            records.push_back({JournalRecord::kUpdate, row});
          } else if (kind == 2) {
            JournalRow row = it->second;  // Its spec rewritten: whole.
            auto spec = std::make_shared<v1::JobSpec>(*row.spec);
            spec->set_payload("rewritten at " + std::to_string(op));
            row.spec = spec;
            it->second = row;
            records.push_back({JournalRecord::kInsert, row});
          } else {
            model.erase(it);
            records.push_back({JournalRecord::kDelete, JournalRow{.id = id}});
          }
        }
        // Now and then deletes apart first, as after a full disk.
        const bool apart = pick(5) == 0;
        for (int attempt = 0;; ++attempt) {
          commits_to_fail = fail && attempt == 0 ? 1 : 0;
          bool ok;
          if (apart) {
            ok = store->Write(records, 0, JournalStore::Part::kDeletes).ok() &&
                 store->Write(records, 0, JournalStore::Part::kAllButDeletes)
                     .ok();
          } else {
            ok = store->Write(records, 0, JournalStore::Part::kAll).ok();
          }
          ASSERT_TRUE(ok || attempt == 0) << "op " << op;
          failed += !ok;
          if (ok) break;
        }
      } else if (what < 9) {
        commits_to_fail = fail ? 1 : 0;
        auto step = store->CompactStep();
        ASSERT_TRUE(step.ok() || fail) << step.status();
        failed += !step.ok();
        folds_finished += step.ok() && step->finished.has_value();
      } else {
        commits_to_fail = fail ? 1 : 0;
        auto whole = store->Compact();
        ASSERT_TRUE(whole.ok() || fail) << whole.status();
        failed += !whole.ok();
        folds_finished += whole.ok();
      }
      commits_to_fail = 0;
      const std::string image = dir_ + "/image" + std::to_string(++images);
      Recovered got;
      auto restarted = OpenCrashImage(current, image, options, &got);
      ASSERT_NE(restarted, nullptr);
      ASSERT_EQ(got.rows.size(), model.size()) << "op " << op;
      size_t i = 0;
      for (const auto& [id, row] : model) {
        SCOPED_TRACE(testing::Message() << "op " << op << ", job " << id);
        ExpectSameRow(row, got.rows[i++]);
        if (HasFailure()) return;
      }
      // An empty log is never due for a fold (failed commits added no
      // bytes to its count).
      if (CountIn(current, "SELECT COUNT(*) FROM log") == 0) {
        EXPECT_EQ(store->compaction_due(), JournalStore::Due::kNo) << op;
      }
      if (pick(25) == 0) {  // Restarted from there: its log replayed.
        store = std::move(restarted);
        current = image;
        ++restarts;
      }
    }
    EXPECT_GT(folds_finished, 20);
    EXPECT_GT(failed, 20);
    EXPECT_GT(restarts, 5);
    store.reset();
    Recovered reopened;
    auto last = JournalStore::Open({.path = current + "/jobd.db"}, &reopened);
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(reopened.rows.size(), model.size());
  }
}

// A batch split into transactions whose last one fails: the deletes it
// held never committed, so their jobs stay live (a delete is taken out of
// the live set in the transaction that writes it, not before a commit
// that precedes it), and a fold after the failure still writes them.
TEST_F(JournalStoreTest, DeletesOfAFailedLastTransactionLeaveTheirJobsKept) {
  sqlite3_auto_extension(reinterpret_cast<void (*)()>(&InstallCommitHook));
  Recovered r;
  auto store = Open(&r, /*max_batch_records=*/2);
  ASSERT_NE(store, nullptr);
  WriteOne(*store, {JournalRecord::kInsert, Queued(1)});
  WriteOne(*store, Update(Ended(1, v1::JOB_STATE_SUCCEEDED)));
  // Two transactions: the delete and insert 2 (committed), insert 3 with
  // the delete's log entry (its commit fails).
  commits_to_pass = 1;
  commits_to_fail = 1;
  EXPECT_FALSE(store
                   ->Write({{JournalRecord::kDelete, JournalRow{.id = 1}},
                            {JournalRecord::kInsert, Queued(2)},
                            {JournalRecord::kInsert, Queued(3)}},
                           0, JournalStore::Part::kAll)
                   .ok());
  commits_to_pass = 0;
  commits_to_fail = 0;
  ASSERT_TRUE(store->Compact().ok());
  ExpectCrashImageHolds(
      {{1, Ended(1, v1::JOB_STATE_SUCCEEDED)}, {2, Queued(2)}},
      "after the failed write and a fold");
}

// Forgotten jobs' rows go a bounded number at a time, a step each, the
// rest of the journal intact after each.
TEST_F(JournalStoreTest, ManyForgottenJobsLeaveTheTableInSeveralSteps) {
  Recovered r;
  auto store = Open(&r, 16384, /*compact_step_bytes=*/1);
  ASSERT_NE(store, nullptr);
  constexpr uint64_t kJobs = 20000;
  std::vector<JournalRecord> records;
  for (uint64_t id = 1; id <= kJobs + 1; ++id) {
    records.push_back({JournalRecord::kInsert, Queued(id)});
  }
  ASSERT_TRUE(store->Write(records, 0, JournalStore::Part::kAll).ok());
  ASSERT_TRUE(store->Compact().ok());
  records.clear();
  for (uint64_t id = 1; id <= kJobs; ++id) {
    records.push_back({JournalRecord::kDelete, JournalRow{.id = id}});
  }
  ASSERT_TRUE(store->Write(records, 0, JournalStore::Part::kAll).ok());
  std::optional<JournalStore::Compacted> done;
  int steps = 0;
  for (; steps < 20 && !done.has_value(); ++steps) {
    auto step = store->CompactStep();
    ASSERT_TRUE(step.ok()) << step.status();
    done = step->finished;
    Recovered image;
    ASSERT_NE(OpenCrashImage(dir_, dir_ + "/image" + std::to_string(steps),
                             {.compact_step_bytes = 1}, &image),
              nullptr);
    ASSERT_EQ(image.rows.size(), 1u) << steps;
    ExpectSameRow(Queued(kJobs + 1), image.rows[0]);
  }
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->rows_deleted, kJobs);
  EXPECT_EQ(done->looked_for, kJobs);
  // Read and planned (the log's one row is over half of it); 8,192 rows
  // at a time: three steps (the last one folds the log's row too).
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 1);
}

// A log entry whose body does not parse costs its job alone (named as its
// problem), before and after a compaction; a row whose framing breaks
// keeps the entries before the break.
TEST_F(JournalStoreTest, ADamagedLogEntryCostsOnlyItsJob) {
  {
    Recovered r;
    ASSERT_NE(Open(&r), nullptr);  // The schema.
  }
  LogWriter writer;
  std::string body;
  for (uint64_t id = 1; id <= 3; ++id) {
    writer.Append({JournalRecord::kInsert, Queued(id)}, &body);
  }
  // Job 2's body: its first byte made a field of an invalid wire type.
  std::string_view rest = body;
  LogEntry e;
  std::string broken;
  ASSERT_TRUE(NextLogEntry(rest, &e, &broken));
  ASSERT_TRUE(NextLogEntry(rest, &e, &broken));
  ASSERT_EQ(e.id, 2u);
  body[static_cast<size_t>(e.body.data() - body.data())] = '\xff';
  AppendLogRow(body);
  std::string cut;
  writer.Append({JournalRecord::kInsert, Queued(4)}, &cut);
  writer.Append({JournalRecord::kInsert, Queued(5)}, &cut);
  cut.resize(cut.size() - 3);  // Job 5's entry runs past the row's end.
  AppendLogRow(cut);
  for (int round = 0; round < 2; ++round) {  // Replayed, then compacted.
    Recovered r;
    auto store = Open(&r);
    ASSERT_NE(store, nullptr);
    EXPECT_TRUE(r.moved_aside.empty());
    ASSERT_EQ(r.rows.size(), 4u) << round;
    ExpectSameRow(Queued(1), r.rows[0]);
    EXPECT_EQ(r.rows[1].id, 2u);
    EXPECT_THAT(r.rows[1].problem,
                round == 0
                    ? ::testing::HasSubstr(
                          "its last change in the journal's log does not parse")
                    : ::testing::HasSubstr("its state 0 is not a job state"));
    ExpectSameRow(Queued(3), r.rows[2]);
    ExpectSameRow(Queued(4), r.rows[3]);
    store.reset();
    // Folded at the close all the same: the damaged job's row included.
    EXPECT_EQ(Count("SELECT COUNT(*) FROM log"), 0) << round;
    EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), 4) << round;
  }
}

// The entry LogWriter::Append must write for `r`: its columns set into
// the generated jobd.journal.LogRecord, serialized by protobuf, framed.
std::string GeneratedEntry(const JournalRecord& r) {
  const bool insert = r.kind == JournalRecord::kInsert && r.row.spec != nullptr;
  EncodedBytes bytes;
  StoredRow row;
  EncodeRow(r.row, insert, bytes, &row);
  journal::LogRecord m;
  m.set_state(row.state);
  m.set_executor(row.executor);
  if (insert) {
    m.set_spec(std::string(row.spec));
    m.set_create_ns(row.create_ns);
    m.set_accepted_seq(row.accepted_seq);
    m.set_owner(std::string(row.owner));
  }
  m.set_start_ns(row.start_ns);
  m.set_finish_ns(row.finish_ns);
  if (row.result) m.set_result(std::string(*row.result));
  if (row.error) m.set_error(std::string(*row.error));
  if (row.history) m.set_history(std::string(*row.history));
  m.set_started_seq(row.started_seq);
  m.set_ended_seq(row.ended_seq);
  m.set_attempts(row.attempts);
  m.set_due_ns(row.due_ns);
  m.set_cluster(row.cluster);
  std::string entry;
  const std::string body = m.SerializeAsString();
  AppendLogEntry({.id = r.row.id,
                  .kind = insert ? LogEntry::kInsert : LogEntry::kUpdate,
                  .body = body},
                 &entry);
  return entry;
}

TEST(LogWriterTest, EntriesAreTheBytesOfTheGeneratedClass) {
  std::vector<JournalRow> rows = {Queued(1), Ended(2, v1::JOB_STATE_SUCCEEDED),
                                  Ended(300, v1::JOB_STATE_FAILED)};
  JournalRow waiting = Ended(1ull << 40, v1::JOB_STATE_CANCELLED);
  waiting.state = v1::JOB_STATE_WAITING;
  waiting.end = nullptr;
  waiting.due_time = absl::FromUnixSeconds(-5);  // Negative: ten bytes.
  waiting.start_time = absl::InfinitePast();
  waiting.history = std::make_shared<const std::string>();  // Present, empty.
  waiting.cluster = 2;  // Field 16: a two-byte tag.
  waiting.owner = "";
  rows.push_back(waiting);
  JournalRow big = Ended(7, v1::JOB_STATE_SUCCEEDED);
  auto end = std::make_shared<JobEnd>(*big.end);
  end->mutable_result().mutable_value()->set_string_value(
      std::string(300, 'x'));
  big.end = end;
  big.history = std::make_shared<const std::string>(200, 'h');
  rows.push_back(big);
  LogWriter writer;
  for (const JournalRow& row : rows) {
    for (const JournalRecord& r :
         {JournalRecord{JournalRecord::kInsert, row}, Update(row)}) {
      std::string entry;
      writer.Append(r, &entry);
      EXPECT_EQ(entry, GeneratedEntry(r)) << row.id << " " << r.kind;
    }
  }
}

TEST(LogEntryTest, FramingThatDoesNotHoldIsNamed) {
  LogEntry e;
  std::string broken;
  std::string_view rest("\x05\x07\x00", 3);
  EXPECT_FALSE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(broken, "an entry of job 5 has kind 7");
  rest = std::string_view("\x05\x01\x09zz", 5);
  EXPECT_FALSE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(broken, "an entry of job 5 runs past the row's end");
  rest = std::string_view("\x85", 1);
  EXPECT_FALSE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(broken, "an entry's header is cut short");
  const std::string eleven_byte_id = std::string(10, '\x80') + "\x01\x02\x00";
  rest = eleven_byte_id;  // A varint is ten bytes at most.
  EXPECT_FALSE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(broken, "an entry's header is cut short");
  // A length of 2^32 + 1 is not read as 1.
  rest = std::string_view("\x05\x01\x81\x80\x80\x80\x10z", 8);
  EXPECT_FALSE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(broken, "an entry of job 5 runs past the row's end");
  rest = std::string_view("\x05\x02\x00", 3);
  ASSERT_TRUE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(e.id, 5u);
  EXPECT_EQ(e.kind, LogEntry::kDelete);
  EXPECT_TRUE(rest.empty());
}

}  // namespace
}  // namespace jobd
