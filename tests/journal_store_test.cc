// Unit tests of the journal's SQLite side (server/journal/journal_store.h)
// and its log (server/journal/journal_log.h) on a real database in a temp
// directory: a row encoded into columns decodes to the same row; inserts,
// updates and deletes written (whole, or deletes apart) read back on the
// next open, with the highest sequence; a batch split into many
// transactions writes every record; after a crash (a child process that
// exits without closing) the log is replayed over the table; compaction
// writes only the jobs still kept; a damaged log entry costs only its job.
#include "server/journal/journal_store.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/journal_log.h"

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
  int64_t Count(const char* sql) {
    sqlite3* db = nullptr;
    int64_t n = -1;
    if (sqlite3_open((dir_ + "/jobd.db").c_str(), &db) == SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
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
  std::unique_ptr<JournalStore> Open(Recovered* recovered,
                                     size_t max_batch_records = 16384) {
    JournalOptions options{.path = dir_ + "/jobd.db"};
    options.max_batch_records = max_batch_records;
    auto store = JournalStore::Open(options, recovered);
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
  ASSERT_TRUE(store
                  ->Write({{JournalRecord::kDelete, JournalRow{.id = 9}}}, 0,
                          JournalStore::Part::kAll)
                  .ok());
  compacted = store->Compact();
  ASSERT_TRUE(compacted.ok());
  EXPECT_EQ(compacted->rows_written, 0u);
  EXPECT_EQ(compacted->rows_deleted, 1u);
  store.reset();
  auto reopened = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  ExpectSameRow(Ended(10, v1::JOB_STATE_SUCCEEDED), r.rows[0]);
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
  rest = std::string_view("\x05\x02\x00", 3);
  ASSERT_TRUE(NextLogEntry(rest, &e, &broken));
  EXPECT_EQ(e.id, 5u);
  EXPECT_EQ(e.kind, LogEntry::kDelete);
  EXPECT_TRUE(rest.empty());
}

}  // namespace
}  // namespace jobd
