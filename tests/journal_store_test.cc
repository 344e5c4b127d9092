// Unit tests of the journal's SQLite side (server/journal/journal_store.h)
// on a real database in a temp directory: a row encoded into columns
// decodes to the same row; inserts, updates and deletes written (whole,
// or deletes apart) read back on the next open, with the highest
// sequence; a batch split into many transactions writes every record.
#include "server/journal/journal_store.h"

#include <unistd.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
    EXPECT_EQ(written->rows_delta, 3);
    EXPECT_GT(written->used_bytes, 0u);
    JournalRow ended = Ended(2, v1::JOB_STATE_SUCCEEDED);
    ended.spec = nullptr;  // Updates carry no spec.
    records = {{JournalRecord::kUpdate, ended},
               {JournalRecord::kDelete, JournalRow{.id = 3}}};
    written = store->Write(records, 77, JournalStore::Part::kAll);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->rows_delta, -1);
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
  EXPECT_EQ(deletes->rows_delta, -1);
  auto rest = store->Write(records, 50, JournalStore::Part::kAllButDeletes);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->rows_delta, 1);
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
    EXPECT_EQ(written->rows_delta, 7);
  }
  Recovered r;
  auto store = Open(&r);
  ASSERT_EQ(r.rows.size(), 7u);
  for (uint64_t id = 1; id <= 7; ++id)
    ExpectSameRow(Queued(id), r.rows[id - 1]);
  EXPECT_EQ(r.last_sequence, 70u);
}

}  // namespace
}  // namespace jobd
