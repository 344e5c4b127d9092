// Unit tests of the journal (server/journal.h) on a real SQLite database in
// a temp directory: rows survive a reopen, a batch folds a job's records,
// tickets become durable, a corrupt file is moved aside (a newer one is
// not), a full database
// refuses writes until deletes free room, and the sequence carries on.
#include "server/journal/journal.h"

#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/sqlite_integer.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/jobd-journal-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::unique_ptr<Journal> Open(
      Recovered* recovered, uint64_t max_bytes = 0,
      absl::Duration outage_grace = JournalOptions{}.outage_grace,
      absl::Duration linger = JournalOptions{}.linger) {
    auto j = Journal::Open({.path = dir_ + "/jobd.db",
                            .durability = Durability::kBatched,
                            .max_bytes = max_bytes,
                            .outage_grace = outage_grace,
                            .linger = linger},
                           recovered);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *std::move(j) : nullptr;
  }
  static JournalRow Row(uint64_t id, v1::JobState state,
                        std::string payload = "") {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task("echo");
    spec->set_payload(std::move(payload));
    JournalRow row;
    row.id = id;
    row.spec = spec;
    row.state = state;
    row.executor = v1::EXECUTOR_THREAD;
    row.create_time = absl::FromUnixSeconds(1000 + id);
    row.accepted_seq = id * 10;
    return row;
  }
  static JournalRow Ended(uint64_t id) {
    JournalRow row = Row(id, v1::JOB_STATE_SUCCEEDED);
    row.start_time = absl::FromUnixSeconds(2000);
    row.finish_time = absl::FromUnixSeconds(3000);
    auto end = std::make_shared<JobEnd>();
    end->state = v1::JOB_STATE_SUCCEEDED;
    end->mutable_result().mutable_value()->set_string_value("done " +
                                                            std::to_string(id));
    row.end = end;
    row.started_seq = id * 10 + 1;
    row.ended_seq = id * 10 + 2;
    row.attempts = 1;
    return row;
  }
  // When `ticket` became durable (the notifier ran its waiter), or
  // InfiniteFuture if it did not within 10 s.
  static absl::Time DurableAt(Journal& j, uint64_t ticket) {
    struct Seen {
      absl::Notification durable;
      absl::Time when;
    };
    auto seen = std::make_shared<Seen>();  // The waiter may outlive a wait.
    j.WhenDurable(ticket, [seen](bool ok) {
      EXPECT_TRUE(ok);
      seen->when = absl::Now();
      seen->durable.Notify();
    });
    return seen->durable.WaitForNotificationWithTimeout(absl::Seconds(10))
               ? seen->when
               : absl::InfiniteFuture();
  }
  std::string dir_;
};

TEST_F(JournalTest, TheSpecIsStoredAsGivenWithItsTaskName) {
  {
    Recovered r;
    auto j = Open(&r);
    JournalRow row = Row(1, v1::JOB_STATE_QUEUED, "x");
    auto spec = std::make_shared<v1::JobSpec>(*row.spec);
    spec->set_task("sleep");  // As the scheduler keeps its specs.
    row.spec = spec;
    j->Insert(std::move(row));
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].spec->task(), "sleep");
  EXPECT_EQ(r.rows[0].spec->payload(), "x");
}

TEST_F(JournalTest, ACallbackIsKeptWithItsJobsEndUntilItIsDone) {
  CallbackRecord first;
  first.job_id = 2;
  first.url = "http://127.0.0.1:1/hook";
  first.event = "event bytes";
  {
    Recovered r;
    auto j = Open(&r);
    EXPECT_TRUE(r.callbacks.empty());
    j->Insert(Row(1, v1::JOB_STATE_QUEUED));
    j->Insert(Row(2, v1::JOB_STATE_QUEUED));
    j->Insert(Row(3, v1::JOB_STATE_QUEUED));
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    j->Update(Ended(2), first);
    CallbackRecord third = first;
    third.job_id = 3;
    j->Update(Ended(3), third);
    // A retry's status in the same batch keeps the URL and the event.
    j->PutCallback({.job_id = 2, .attempts = 1, .last_error = "HTTP 503"});
  }
  {
    Recovered r;
    auto j = Open(&r);
    ASSERT_EQ(r.callbacks.size(), 2u);
    const CallbackRecord& cb = r.callbacks[0];
    EXPECT_EQ(cb.job_id, 2u);
    EXPECT_EQ(cb.state, v1::CALLBACK_STATE_PENDING);
    EXPECT_EQ(cb.attempts, 1u);
    EXPECT_EQ(cb.last_error, "HTTP 503");
    EXPECT_EQ(cb.url, "http://127.0.0.1:1/hook");
    EXPECT_EQ(cb.event, "event bytes");
    // Job 2's callback is delivered, then the job forgotten: both go. Job
    // 3 is forgotten with its callback pending: the callback stays.
    j->PutCallback(
        {.job_id = 2, .state = v1::CALLBACK_STATE_DELIVERED, .attempts = 2});
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    j->Delete(2);
    j->Delete(3);
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_EQ(r.callbacks.size(), 1u);
  EXPECT_EQ(r.callbacks[0].job_id, 3u);
  EXPECT_EQ(r.callbacks[0].state, v1::CALLBACK_STATE_PENDING);
  EXPECT_EQ(r.callbacks[0].event, "event bytes");
  // Delivered once its job is gone: the row goes too.
  j->PutCallback(
      {.job_id = 3, .state = v1::CALLBACK_STATE_DELIVERED, .attempts = 1});
  j.reset();
  Recovered after;
  j = Open(&after);
  EXPECT_TRUE(after.callbacks.empty());
}

TEST_F(JournalTest, RowsSurviveAReopen) {
  {
    Recovered r;
    auto j = Open(&r);
    EXPECT_TRUE(r.rows.empty());
    EXPECT_TRUE(r.moved_aside.empty());
    j->Insert(Row(1, v1::JOB_STATE_QUEUED, "one"));
    j->Insert(Row(2, v1::JOB_STATE_QUEUED));
    j->Insert(Row(3, v1::JOB_STATE_QUEUED));
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    j->Update(Ended(2));
    j->Delete(3);
    j->ReserveSequences(77);
  }  // Closing flushes.
  Recovered r;
  auto j = Open(&r);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].id, 1u);
  EXPECT_EQ(r.rows[0].state, v1::JOB_STATE_QUEUED);
  EXPECT_EQ(r.rows[0].spec->payload(), "one");
  EXPECT_EQ(r.rows[0].create_time, absl::FromUnixSeconds(1001));
  EXPECT_EQ(r.rows[0].start_time, absl::InfinitePast());
  EXPECT_EQ(r.rows[0].end, nullptr);
  EXPECT_EQ(r.rows[1].state, v1::JOB_STATE_SUCCEEDED);
  ASSERT_NE(r.rows[1].end, nullptr);
  EXPECT_EQ(r.rows[1].end->result().value().string_value(), "done 2");
  EXPECT_EQ(r.rows[1].finish_time, absl::FromUnixSeconds(3000));
  EXPECT_EQ(r.rows[1].ended_seq, 22u);
  EXPECT_EQ(r.last_sequence, 77u);
}

TEST_F(JournalTest, ForgottenJobsGoInRunsOfConsecutiveIdsAndNoOtherRow) {
  const std::vector<uint64_t> forgotten = {12, 2, 3, 11, 5, 4, 9, 20};
  {
    Recovered r;
    auto j = Open(&r);
    for (uint64_t id = 1; id <= 20; ++id) {
      j->Insert(Row(id, v1::JOB_STATE_QUEUED));
    }
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    // One batch: runs [2, 5], [9], [11, 12], [20]; an end beside them.
    for (uint64_t id : forgotten) j->Delete(id);
    j->Update(Ended(7));
  }  // Closing flushes.
  Recovered r;
  auto j = Open(&r);
  std::vector<uint64_t> kept;
  for (const JournalRow& row : r.rows) kept.push_back(row.id);
  EXPECT_EQ(kept, (std::vector<uint64_t>{1, 6, 7, 8, 10, 13, 14, 15, 16, 17, 18,
                                         19}));
  EXPECT_EQ(r.rows[2].state, v1::JOB_STATE_SUCCEEDED);
}

// Cluster mode's outbox: a job inserted in the outbox (1) and updated to
// published (2) comes back so; the others stay local (0).
TEST_F(JournalTest, AJobsPlaceInWorkSharingSurvivesAReopen) {
  {
    Recovered r;
    auto j = Open(&r);
    JournalRow outbox = Row(1, v1::JOB_STATE_QUEUED);
    outbox.cluster = 1;
    j->Insert(outbox);
    JournalRow published = Row(2, v1::JOB_STATE_QUEUED);
    published.cluster = 1;
    j->Insert(published);
    j->Insert(Row(3, v1::JOB_STATE_QUEUED));
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    published.cluster = 2;
    j->Update(published);
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].cluster, 1);
  EXPECT_EQ(r.rows[1].cluster, 2);
  EXPECT_EQ(r.rows[2].cluster, 0);
}

TEST_F(JournalTest, ABatchFoldsAJobsRecordsIntoOneWrite) {
  Recovered r;
  auto j = Open(&r);
  j->Insert(Row(1, v1::JOB_STATE_QUEUED, "spec kept"));
  JournalRow running = Row(1, v1::JOB_STATE_RUNNING);
  running.spec = nullptr;  // Updates carry no spec.
  j->Update(running);
  j->Update(Ended(1));
  j->Insert(Row(2, v1::JOB_STATE_QUEUED));
  j->Delete(2);  // Inserted and forgotten in one batch: never written.
  ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
  v1::GetStatsResponse stats;
  j->AddStats(stats);
  // The writer may have taken the first records alone; at most 4 writes,
  // fewer when they shared a batch.
  EXPECT_LE(stats.journal().records(), 4u);
  EXPECT_TRUE(stats.journal().healthy());
  j.reset();
  auto again = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].state, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(r.rows[0].spec->payload(), "spec kept");
}

// A job's accept, start and end with its callback in one batch: one row
// write (the spec kept), its callback's right after it.
TEST_F(JournalTest, ABatchFoldsAJobsRecordsBesideItsCallback) {
  const CallbackRecord cb{.job_id = 1,
                          .url = "http://127.0.0.1:1/hook",
                          .event = "event bytes"};
  {
    Recovered r;
    // A bound no test waits out: the end starts the commit.
    auto j = Open(&r, 0, JournalOptions{}.outage_grace, absl::Hours(1));
    j->Insert(Row(2, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
    j->Insert(Row(1, v1::JOB_STATE_QUEUED, "spec kept"),
              Journal::Linger::kYes);
    JournalRow running = Row(1, v1::JOB_STATE_RUNNING);
    running.spec = nullptr;
    j->Update(running, Journal::Linger::kYes);
    j->Update(Ended(1), cb);
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    v1::GetStatsResponse stats;
    j->AddStats(stats);
    EXPECT_EQ(stats.journal().commits(), 1u);
    EXPECT_EQ(stats.journal().records(), 3u);  // Two rows, one callback.
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].id, 1u);
  EXPECT_EQ(r.rows[0].state, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(r.rows[0].spec->payload(), "spec kept");
  ASSERT_NE(r.rows[0].end, nullptr);
  EXPECT_EQ(r.rows[0].end->result().value().string_value(), "done 1");
  EXPECT_EQ(r.rows[0].started_seq, 11u);
  EXPECT_EQ(r.rows[1].state, v1::JOB_STATE_QUEUED);
  ASSERT_EQ(r.callbacks.size(), 1u);
  EXPECT_EQ(r.callbacks[0].job_id, 1u);
  EXPECT_EQ(r.callbacks[0].event, "event bytes");
}

TEST_F(JournalTest, LingeringRecordsWaitToShareTheCommitOfOneThatMustNot) {
  Recovered r;
  // A bound no test waits out: only the end can start the commit.
  auto j = Open(&r, 0, JournalOptions{}.outage_grace, absl::Hours(1));
  const uint64_t accepted = j->Insert(Row(1, v1::JOB_STATE_QUEUED, "spec kept"),
                                      Journal::Linger::kYes);
  JournalRow running = Row(1, v1::JOB_STATE_RUNNING);
  running.spec = nullptr;
  EXPECT_EQ(j->Update(running, Journal::Linger::kYes), accepted);
  // Neither a reservation nor a waiter hurries it.
  j->ReserveSequences(12);
  absl::Notification durable;
  j->WhenDurable(accepted, [&](bool ok) {
    EXPECT_TRUE(ok);
    durable.Notify();
  });
  EXPECT_EQ(j->usage().commits, 0u);
  EXPECT_EQ(j->Update(Ended(1)), accepted);  // The end: one commit for all.
  ASSERT_TRUE(durable.WaitForNotificationWithTimeout(absl::Seconds(10)));
  v1::GetStatsResponse stats;
  j->AddStats(stats);
  EXPECT_EQ(stats.journal().commits(), 1u);
  EXPECT_EQ(stats.journal().records(), 1u);  // Folded into one row write.
  j.reset();
  auto again = Open(&r);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].state, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(r.rows[0].spec->payload(), "spec kept");
}

TEST_F(JournalTest, ALingeringRecordAloneIsCommittedAtItsBound) {
  Recovered r;
  constexpr absl::Duration kLinger = absl::Milliseconds(40);
  auto j = Open(&r, 0, JournalOptions{}.outage_grace, kLinger);
  const absl::Time start = absl::Now();
  const uint64_t ticket =
      j->Insert(Row(1, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
  const absl::Time when = DurableAt(*j, ticket);
  ASSERT_NE(when, absl::InfiniteFuture());
  EXPECT_GE(when - start, kLinger);  // Not before its bound.
  // A flush does not wait for the bound; nor does closing.
  j.reset();
  auto slow = Open(&r, 0, JournalOptions{}.outage_grace, absl::Hours(1));
  slow->Insert(Row(2, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
  EXPECT_TRUE(slow->Flush(absl::Now() + absl::Seconds(10)));
  slow->Insert(Row(3, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
  slow.reset();  // Commits what lingers.
  ASSERT_NE(Open(&r), nullptr);
  EXPECT_EQ(r.rows.size(), 3u);
}

TEST_F(JournalTest, AForgottenJobsDeleteLingersLikeAnAccept) {
  Recovered r;
  constexpr absl::Duration kLinger = absl::Milliseconds(40);
  auto j = Open(&r, 0, JournalOptions{}.outage_grace, kLinger);
  j->Insert(Row(1, v1::JOB_STATE_QUEUED));
  ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
  const absl::Time start = absl::Now();
  const absl::Time when = DurableAt(*j, j->Delete(1));
  ASSERT_NE(when, absl::InfiniteFuture());
  EXPECT_GE(when - start, kLinger);  // Alone, not before its bound.
  j.reset();
  ASSERT_NE(Open(&r), nullptr);
  EXPECT_TRUE(r.rows.empty());  // But deleted all the same.
}

TEST_F(JournalTest, EachCommitIsCountedInTheHistograms) {
  Recovered r;
  auto j = Open(&r);
  uint64_t payload_bytes = 0;
  for (uint64_t id = 1; id <= 20; ++id) {
    const std::string payload(100, 'x');
    j->Insert(Row(id, v1::JOB_STATE_QUEUED, payload));
    // Every other record in a batch of its own (a commit at least).
    if (id % 2 == 0) {
      ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
    }
    payload_bytes += payload.size();
  }
  ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
  const Journal::Commits c = j->commits();
  v1::GetStatsResponse stats;
  j->AddStats(stats);
  // One observation per commit, in both; the records add up to the row
  // writes; every spec's bytes were written.
  EXPECT_GE(stats.journal().commits(), 10u);
  EXPECT_EQ(c.seconds.count, stats.journal().commits());
  EXPECT_EQ(c.records.count, stats.journal().commits());
  EXPECT_EQ(static_cast<uint64_t>(c.records.sum), stats.journal().records());
  EXPECT_EQ(stats.journal().records(), 20u);
  EXPECT_GE(c.bytes, payload_bytes);
  EXPECT_EQ(stats.journal().bytes_written(), c.bytes);
  uint64_t in_buckets = 0;
  for (uint64_t n : c.seconds.buckets) in_buckets += n;
  EXPECT_EQ(in_buckets, c.seconds.count);
}

// A grown log is folded a step at a time after the commit that grew it,
// and the steps go on with no commit to follow: reading the log's older
// half and planning, then folding it; a log of one row is taken whole (a
// fold takes one row at least), every job kept written to the table.
TEST_F(JournalTest, AFoldGoesOnInStepsWhileNothingIsCommitted) {
  Recovered r;
  auto j = Journal::Open({.path = dir_ + "/jobd.db",
                          .durability = Durability::kBatched,
                          .linger = absl::Seconds(30),
                          .compact_log_bytes = 8192,
                          .compact_step_bytes = 256},
                         &r);
  ASSERT_TRUE(j.ok()) << j.status();
  // One commit (the records linger until the flush), one log row of about
  // 9 KiB: past the fold's size (short of twice it, which folds at once).
  for (uint64_t id = 1; id <= 40; ++id) {
    (*j)->Insert(Row(id, v1::JOB_STATE_QUEUED, std::string(200, 'x')),
                 Journal::Linger::kYes);
  }
  ASSERT_TRUE((*j)->Flush(absl::Now() + absl::Seconds(10)));
  auto count = [&](const char* sql) {
    return SqliteInteger(dir_ + "/jobd.db", sql);
  };
  // The fold is done once the table holds jobs (the log is one row here:
  // the step that folds it writes every job's row) and that step is
  // counted (after its commit): up to 10 s.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((count("SELECT COUNT(*) FROM jobs") == 0 ||
          (*j)->commits().compaction_seconds.count < 2) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(count("SELECT COUNT(*) FROM log"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM jobs"), 40);
  const Journal::Commits c = (*j)->commits();
  EXPECT_EQ(c.compaction_errors, 0u);
  // The row read (over 256 bytes, and half the log) and planned, then
  // folded: two steps, one after the commit, one with none.
  EXPECT_EQ(c.compaction_seconds.count, 2u);
}

TEST_F(JournalTest, TicketsBecomeDurableAndWaitersRun) {
  Recovered r;
  auto j = Open(&r);
  const uint64_t ticket = j->Insert(Row(1, v1::JOB_STATE_QUEUED));
  absl::Notification durable;
  j->WhenDurable(ticket, [&](bool ok) {
    EXPECT_TRUE(ok);
    durable.Notify();
  });
  ASSERT_TRUE(durable.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_GE(j->durable(), ticket);
  // A ticket with nothing in its batch still becomes durable.
  absl::Notification empty;
  j->WhenDurable(j->ticket(), [&](bool ok) {
    EXPECT_TRUE(ok);
    empty.Notify();
  });
  EXPECT_TRUE(empty.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // An old ticket runs at once.
  bool at_once = false;
  j->WhenDurable(ticket, [&](bool ok) { at_once = ok; });
  EXPECT_TRUE(at_once);
}

// A small batch's waiters may run on the writer itself, a large one's on
// the notifier: never before those of an earlier batch still running.
TEST_F(JournalTest, WaitersRunInTicketOrderWhateverTheBatchSize) {
  // What the waiters touch outlives the journal (whose end runs them).
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification first_running, second_ran;
  Recovered r;
  auto j = Open(&r, 0, JournalOptions{}.outage_grace, absl::Seconds(30));
  ASSERT_NE(j, nullptr);
  auto note = [&](int which) {
    absl::MutexLock lock(&mu);
    order.push_back(which);
  };
  // A large batch (lingering records, then one that hurries it), whose
  // waiter is slow.
  for (uint64_t id = 1; id <= 10; ++id) {
    j->Insert(Row(id, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
  }
  j->WhenDurable(j->ticket(), [&](bool ok) {
    EXPECT_TRUE(ok);
    first_running.Notify();
    absl::SleepFor(absl::Milliseconds(300));
    note(1);
  });
  const uint64_t first = j->Insert(Row(11, v1::JOB_STATE_QUEUED));
  ASSERT_TRUE(first_running.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // A lone record's batch, committed while that waiter still runs.
  j->Insert(Row(12, v1::JOB_STATE_QUEUED), Journal::Linger::kYes);
  j->WhenDurable(j->ticket(), [&](bool ok) {
    EXPECT_TRUE(ok);
    note(2);
    second_ran.Notify();
  });
  const uint64_t second = j->Insert(Row(13, v1::JOB_STATE_QUEUED));
  EXPECT_GT(second, first);
  ASSERT_TRUE(second_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  j.reset();
  absl::MutexLock lock(&mu);
  EXPECT_THAT(order, ElementsAre(1, 2));
}

TEST_F(JournalTest, ACorruptFileIsMovedAsideAndAFreshOneStarted) {
  std::ofstream(dir_ + "/jobd.db") << std::string(8192, 'x');
  Recovered r;
  auto j = Open(&r);
  ASSERT_NE(j, nullptr);
  EXPECT_THAT(r.moved_aside, HasSubstr("jobd.db.corrupt-"));
  EXPECT_TRUE(r.rows.empty());
  int aside = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    aside +=
        e.path().filename().string().find(".corrupt-") != std::string::npos;
  }
  EXPECT_EQ(aside, 1);
  j->Insert(Row(1, v1::JOB_STATE_QUEUED));
  EXPECT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
}

// A message serialized as is: one with a string that is not UTF-8 is
// written (with a logged complaint) but never parsed back.
std::string Serialized(const google::protobuf::Message& m) {
  std::string bytes;
  m.SerializeToString(&bytes);
  return bytes;
}

// Rows that cannot be read back come back named, each alone; the database
// is not moved aside (only SQLite's own verdict does that).
TEST_F(JournalTest, ARowThatDoesNotParseComesBackWithItsProblem) {
  {
    Recovered r;
    auto j = Open(&r);
    for (uint64_t id = 1; id <= 5; ++id) j->Insert(Ended(id));
    j->Insert(Row(6, v1::JOB_STATE_QUEUED));
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/jobd.db").c_str(), &db), SQLITE_OK);
    auto set = [&](const char* sql, const std::string& blob) {
      sqlite3_stmt* st = nullptr;
      ASSERT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK);
      if (sqlite3_bind_parameter_count(st) > 0) {
        sqlite3_bind_blob(st, 1, blob.data(), static_cast<int>(blob.size()),
                          SQLITE_TRANSIENT);
      }
      EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
      sqlite3_finalize(st);
    };
    v1::JobResult result;
    result.mutable_value()->set_string_value("\xff\xfe");
    set("UPDATE jobs SET result=? WHERE id=2", Serialized(result));
    v1::JobSpec spec;
    spec.set_task("echo");
    spec.set_idempotency_key("\xff\xfe");
    set("UPDATE jobs SET spec=? WHERE id=3", Serialized(spec));
    set("UPDATE jobs SET state=99 WHERE id=4", "");
    set("UPDATE jobs SET result=NULL, error=NULL WHERE id=5", "");
    set("UPDATE jobs SET owner=CAST(X'FF6F' AS TEXT) WHERE id=6", "");
    sqlite3_close(db);
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_NE(j, nullptr);
  EXPECT_TRUE(r.moved_aside.empty());
  ASSERT_EQ(r.rows.size(), 6u);
  EXPECT_EQ(r.rows[0].problem, "");
  EXPECT_EQ(r.rows[0].end->result().value().string_value(), "done 1");
  EXPECT_EQ(r.rows[1].problem, "its result does not parse");
  EXPECT_EQ(r.rows[1].end, nullptr);
  EXPECT_EQ(r.rows[2].problem, "its spec does not parse");
  EXPECT_EQ(r.rows[2].spec->task(), "echo");  // Salvaged.
  EXPECT_EQ(r.rows[3].problem, "its state 99 is not a job state");
  EXPECT_EQ(r.rows[4].problem, "it ended but its result is missing");
  EXPECT_EQ(r.rows[5].problem, "");
  EXPECT_EQ(r.rows[5].owner, "\xEF\xBF\xBDo");
}

TEST_F(JournalTest, AbandonRunsTheWaitersOfWhatCannotBeWritten) {
  Recovered r;
  auto j = Open(&r, /*max_bytes=*/256 << 10);
  const std::string big(40 << 10, 'p');
  uint64_t ticket = 0;
  for (uint64_t id = 1; id <= 10; ++id) {
    ticket = j->Insert(Row(id, v1::JOB_STATE_QUEUED, big));
  }
  absl::Notification ran;
  bool result = true;
  j->WhenDurable(ticket, [&](bool ok) {
    result = ok;
    ran.Notify();
  });
  // The batch cannot be written (too big for the cap): the waiter waits.
  EXPECT_FALSE(j->Flush(absl::Now() + absl::Milliseconds(300)));
  EXPECT_FALSE(ran.HasBeenNotified());
  j->Abandon();
  ASSERT_TRUE(ran.HasBeenNotified());
  EXPECT_FALSE(result);
  // After it, a ticket that is not durable is answered at once, with false.
  bool late = true;
  j->WhenDurable(j->ticket(), [&](bool ok) { late = ok; });
  EXPECT_FALSE(late);
}

TEST_F(JournalTest, AFailFastWaiterIsAnsweredOnceWritesFailedForTheGrace) {
  Recovered r;
  constexpr absl::Duration kGrace = absl::Milliseconds(400);
  auto j = Open(&r, /*max_bytes=*/256 << 10, kGrace);
  const std::string big(40 << 10, 'p');
  uint64_t ticket = 0;
  for (uint64_t id = 1; id <= 10; ++id) {
    ticket = j->Insert(Row(id, v1::JOB_STATE_QUEUED, big));
  }
  const absl::Time t0 = absl::Now();
  absl::Notification fast_ran, patient_ran;
  std::atomic<bool> fast_result{true};
  absl::Time fast_at;
  j->WhenDurable(
      ticket,
      [&](bool ok) {
        fast_at = absl::Now();
        fast_result = ok;
        fast_ran.Notify();
      },
      Journal::Wait::kFailFast);
  j->WhenDurable(ticket, [&](bool) { patient_ran.Notify(); });
  // The batch cannot be written: after the grace (not before, not never),
  // the fail-fast waiter hears "not durable"; the other one waits on.
  ASSERT_TRUE(fast_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(fast_result);
  EXPECT_GE(fast_at - t0, kGrace);
  EXPECT_LT(fast_at - t0, kGrace + absl::Seconds(1));
  EXPECT_FALSE(patient_ran.HasBeenNotified());
  EXPECT_FALSE(j->last_error().empty());
  // While the outage lasts, a new fail-fast waiter is answered at once.
  bool late = true;
  j->WhenDurable(
      j->ticket(), [&](bool ok) { late = ok; }, Journal::Wait::kFailFast);
  EXPECT_FALSE(late);
  // Room again: the patient waiter's ticket becomes durable.
  for (uint64_t id = 1; id <= 8; ++id) j->Delete(id);
  ASSERT_TRUE(patient_ran.WaitForNotificationWithTimeout(absl::Seconds(20)));
}

TEST_F(JournalTest, ANewerSchemaStopsTheStartAndKeepsTheFile) {
  const std::string path = dir_ + "/jobd.db";
  {
    Recovered r;
    auto j = Open(&r);
    j->Insert(Row(1, v1::JOB_STATE_QUEUED));
    ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
  }
  auto set_version = [&](int v) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const std::string sql = "PRAGMA user_version=" + std::to_string(v);
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  };
  set_version(99);  // As a future jobd would leave it.
  Recovered r;
  auto j = Journal::Open({.path = path}, &r);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(j.status().message(), HasSubstr("newer"));
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".corrupt-"), std::string::npos)
        << e.path();
  }
  // Nothing was lost: back at this jobd's version, the job is there.
  set_version(3);
  Recovered again;
  ASSERT_NE(Open(&again), nullptr);
  ASSERT_EQ(again.rows.size(), 1u);
  EXPECT_TRUE(again.moved_aside.empty());
}

TEST_F(JournalTest, ASchema2FileGainsDueTimesAndHistoriesAndKeepsItsJobs) {
  const std::string path = dir_ + "/jobd.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    // As the jobd before delays and retries left it.
    EXPECT_EQ(sqlite3_exec(
                  db,
                  "CREATE TABLE jobs(id INTEGER PRIMARY KEY, state INTEGER NOT "
                  "NULL, executor INTEGER NOT NULL, spec BLOB NOT NULL, "
                  "create_ns INTEGER NOT NULL, start_ns INTEGER, finish_ns "
                  "INTEGER, result BLOB, error BLOB, accepted_seq INTEGER NOT "
                  "NULL, started_seq INTEGER NOT NULL, ended_seq INTEGER NOT "
                  "NULL, attempts INTEGER NOT NULL, owner TEXT NOT NULL "
                  "DEFAULT 'anonymous'); INSERT INTO jobs VALUES(7, 1, 2, "
                  "x'0a026f6b', 1, 0, 0, NULL, NULL, 3, 0, 0, 0, 'me'); "
                  "PRAGMA user_version=2;",
                  nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  Recovered r;
  auto j = Open(&r);
  ASSERT_NE(j, nullptr);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].id, 7u);
  EXPECT_EQ(r.rows[0].due_time, absl::InfinitePast());
  EXPECT_EQ(r.rows[0].history, nullptr);
  // And it takes the new columns.
  JournalRow row = Row(8, v1::JOB_STATE_WAITING);
  row.due_time = absl::FromUnixSeconds(1767225600);
  row.history = std::make_shared<const std::string>();
  j->Insert(row);
  ASSERT_TRUE(j->Flush(absl::Now() + absl::Seconds(10)));
  j.reset();
  Recovered again;
  ASSERT_NE(Open(&again), nullptr);
  ASSERT_EQ(again.rows.size(), 2u);
  EXPECT_EQ(again.rows[1].due_time, absl::FromUnixSeconds(1767225600));
  EXPECT_NE(again.rows[1].history, nullptr);
}

TEST_F(JournalTest, AFullDatabaseRefusesUntilDeletesFreeRoom) {
  Recovered r;
  auto j = Open(&r, /*max_bytes=*/256 << 10);
  const std::string big(40 << 10, 'p');
  uint64_t id = 0;
  for (; id < 10; ++id) j->Insert(Row(id + 1, v1::JOB_STATE_QUEUED, big));
  // 400 KiB of payloads into 256 KiB: the batch cannot be written.
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (j->accepting() && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_FALSE(j->accepting());
  v1::GetStatsResponse stats;
  j->AddStats(stats);
  EXPECT_FALSE(stats.journal().healthy());
  EXPECT_GT(stats.journal().write_errors(), 0u);
  // What went wrong, not what the cleanup after it said (SQLite may have
  // rolled the transaction back itself).
  EXPECT_THAT(stats.journal().last_error(),
              HasSubstr("database or disk is full"));
  EXPECT_THAT(stats.journal().last_error(),
              Not(HasSubstr("no transaction is active")));
  EXPECT_TRUE(j->usage().full);
  EXPECT_EQ(j->usage().max_bytes, 256u << 10);
  // Forgetting most of them lets the rest in.
  for (uint64_t k = 1; k <= 8; ++k) j->Delete(k);
  EXPECT_TRUE(j->Flush(absl::Now() + absl::Seconds(20)));
  EXPECT_TRUE(j->accepting());
  EXPECT_FALSE(j->usage().full);
  // Two rows of 40 KiB are in use, not the pages the others had.
  EXPECT_GT(j->usage().used_bytes, 80u << 10);
  EXPECT_LT(j->usage().used_bytes, 160u << 10);
  j.reset();
  auto again = Open(&r, 256 << 10);
  EXPECT_EQ(r.rows.size(), 2u);
}

}  // namespace
}  // namespace jobd
