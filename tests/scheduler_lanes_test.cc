// Unit tests: how the Scheduler starts jobs through its lanes: priority
// order, chunks, stale queue entries, resizing, and with a journal the
// durable-start gate and its claim-ahead window (lane.h has the part
// alone: lane_test).
#include <sqlite3.h>

#include <string>
#include <vector>

#include "server/journal/journal_log.h"
#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

class SchedulerLanesTest : public SchedulerFixture {
 protected:
  // With a journal: runs tiny jobs, so that the lane claims jobs ahead of
  // its slots (Lane::Window).
  void OpenClaimWindow() {
    std::vector<uint64_t> tiny;
    for (int i = 0; i < 200; ++i) tiny.push_back(Submit(ok_task_).job_id);
    for (uint64_t id : tiny) {
      AwaitStart(id);
      executor().Succeed(id, {}, absl::Microseconds(1));
    }
  }
};

TEST_F(SchedulerLanesTest, HigherPriorityFirstFifoWithin) {
  // One slot, held by a gate job; then jobs of mixed priority queue.
  const Admission blocker = Submit(gate_task_);
  std::vector<uint64_t> ids;
  for (int priority : {0, 5, 0, 5, -1}) {
    ids.push_back(Submit(ok_task_, priority).job_id);
  }
  Done(blocker.job_id);
  DoneAll();
  std::vector<uint64_t> order;
  for (const auto& start : executor().starts()) order.push_back(start.at(0));
  EXPECT_THAT(order, ElementsAre(blocker.job_id, ids[1], ids[3], ids[0], ids[2],
                                 ids[4]));
}

TEST_F(SchedulerLanesTest, ManyCancelledQueuedJobsAreCompactedAway) {
  Submit(gate_task_);  // Holds the only slot.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back(Submit(ok_task_, i % 3).job_id);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    ASSERT_TRUE(scheduler_->Cancel(ids[i]).ok());
  }
  EXPECT_EQ(scheduler_->GetStats().executors(1).queued(), 1u);
  DoneAll();
  EXPECT_EQ(sink_->WaitEnd(ids.back()).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(executor().starts().size(), 2u);  // The gate job and the last.
}

TEST_F(SchedulerLanesTest, ChunksTakeQueuedJobsOfOnePriorityThatAllowThem) {
  Build({}, 1, /*max_chunk=*/4);
  const Admission blocker = Submit(gate_task_);
  std::vector<uint64_t> ids;
  // Three that allow chunks of 8 (the executor takes 4 at most), one of
  // another priority, one that travels alone, two more that allow 2.
  for (int i = 0; i < 3; ++i) {
    ids.push_back(Submit(ok_task_, 1, "", absl::ZeroDuration(), 8).job_id);
  }
  ids.push_back(Submit(ok_task_, 0, "", absl::ZeroDuration(), 8).job_id);
  ids.push_back(Submit(ok_task_, 0).job_id);
  ids.push_back(Submit(ok_task_, 0, "", absl::ZeroDuration(), 2).job_id);
  ids.push_back(Submit(ok_task_, 0, "", absl::ZeroDuration(), 2).job_id);
  Done(blocker.job_id);
  // The chunk holds the slot until its last job ends.
  EXPECT_THAT(executor().running(), ElementsAre(ids[0], ids[1], ids[2]));
  Done(ids[0]);
  Done(ids[1]);
  EXPECT_EQ(executor().busy(), 1);
  EXPECT_EQ(executor().starts().size(), 2u);
  DoneAll();
  const auto starts = executor().starts();
  ASSERT_EQ(starts.size(), 5u);
  EXPECT_THAT(starts[1], ElementsAre(ids[0], ids[1], ids[2]));
  EXPECT_THAT(starts[2], ElementsAre(ids[3]));  // The next wants no chunk.
  EXPECT_THAT(starts[3], ElementsAre(ids[4]));
  EXPECT_THAT(starts[4], ElementsAre(ids[5], ids[6]));
  for (uint64_t id : ids) {
    EXPECT_EQ(sink_->WaitEnd(id).type, v1::EVENT_TYPE_SUCCEEDED) << id;
  }
}

TEST_F(SchedulerLanesTest, AGrownExecutorStartsQueuedJobsAtOnce) {
  const Admission first = Submit(ok_task_);
  const Admission second = Submit(ok_task_);
  EXPECT_THAT(executor().running(), ElementsAre(first.job_id));
  EXPECT_TRUE(scheduler_->ResizeExecutor(v1::EXECUTOR_THREAD, 2));
  EXPECT_THAT(executor().running(), ElementsAre(first.job_id, second.job_id));
  EXPECT_FALSE(scheduler_->ResizeExecutor(v1::EXECUTOR_PROCESS, 2));
}

// The newest job's state as the journal file holds it (committed only):
// its last change in the log (server/journal/journal_log.h), else its row.
v1::JobState NewestStateOnDisk(const std::string& path) {
  sqlite3* db = nullptr;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    // The journal's thread may be writing: wait for its lock (bounded).
    sqlite3_busy_timeout(db, 5000);
    // One read transaction: the log and the table as of one commit.
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    auto query = [&](const char* sql, auto&& row) {
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
      while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        row(stmt);
        rc = SQLITE_OK;
      }
      if (rc != SQLITE_DONE) {  // Not "no row": say why.
        ADD_FAILURE() << "reading " << path << ": " << sqlite3_errmsg(db);
      }
      sqlite3_finalize(stmt);
    };
    std::vector<std::string> log;
    query("SELECT body FROM log ORDER BY id", [&](sqlite3_stmt* st) {
      log.emplace_back(static_cast<const char*>(sqlite3_column_blob(st, 0)),
                       static_cast<size_t>(sqlite3_column_bytes(st, 0)));
    });
    int64_t newest = 0;
    query("SELECT id, state FROM jobs ORDER BY id DESC LIMIT 1",
          [&](sqlite3_stmt* st) {
            newest = sqlite3_column_int64(st, 0);
            state = static_cast<v1::JobState>(sqlite3_column_int(st, 1));
          });
    LogReplay replay;
    for (size_t i = 0; i < log.size(); ++i) {
      EXPECT_EQ(replay.Apply(static_cast<uint32_t>(i), log[i]), "");
    }
    if (!replay.jobs().empty() &&
        replay.jobs().rbegin()->first >= static_cast<uint64_t>(newest)) {
      const LogReplay::Job& job = replay.jobs().rbegin()->second;
      const LogPos& pos = job.updated ? job.update : job.insert;
      StoredRow row;
      LogRecordParser parser;
      if (!job.deleted &&
          parser.Parse(pos.In(log[pos.row]), !job.updated, 0, &row)) {
        state = static_cast<v1::JobState>(row.state);
      }
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  sqlite3_close_v2(db);
  return state;
}

TEST_F(SchedulerLanesTest, WithAJournalAJobStartsOnlyOnceItsClaimIsDurable) {
  BuildWithJournal(2);
  v1::JobState on_disk_when_started = v1::JOB_STATE_UNSPECIFIED;
  executor().set_on_start([&](const JobRun&) {
    on_disk_when_started = NewestStateOnDisk(journal_dir_ + "/jobd.db");
  });
  for (int i = 0; i < 20; ++i) {
    on_disk_when_started = v1::JOB_STATE_UNSPECIFIED;
    const Admission a = Submit(ok_task_);
    ASSERT_TRUE(a.status.ok()) << a.status;
    AwaitStart(a.job_id);
    // When it was handed to the executor, the file already said it may
    // have begun: a crash then fails it LOST_ON_RESTART instead of running
    // it again.
    EXPECT_EQ(on_disk_when_started, v1::JOB_STATE_RUNNING)
        << "job " << a.job_id;
    Done(a.job_id);
  }
}

TEST_F(SchedulerLanesTest, WithAJournalAnInMemoryJobWaitsForAFreeSlot) {
  BuildWithJournal(1);
  OpenClaimWindow();
  const Admission running = Submit(gate_task_);
  AwaitStart(running.job_id);
  // Not claimable (no journal row): taken into the claim window, it would
  // be handed to a full executor. It waits at the head of the queue.
  const Admission in_memory =
      SubmitWith([](v1::JobSpec& spec) { spec.set_in_memory(true); });
  const Admission behind = Submit(ok_task_);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  EXPECT_EQ(State(in_memory.job_id), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(executor().running(), std::vector<uint64_t>{running.job_id});
  Done(running.job_id);
  AwaitStart(in_memory.job_id);
  EXPECT_EQ(executor().running(), std::vector<uint64_t>{in_memory.job_id});
  Done(in_memory.job_id);
  AwaitStart(behind.job_id);  // Then the one behind it, in turn.
  Done(behind.job_id);
}

TEST_F(SchedulerLanesTest, WithAJournalAClaimedJobIsQueuedUntilItIsHandedOver) {
  BuildWithJournal(1);
  OpenClaimWindow();
  const Admission running = Submit(gate_task_);
  const Admission next = Submit(ok_task_);
  AwaitStart(running.job_id);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  // The slot is busy: the next job is queued, not started ahead of it.
  EXPECT_EQ(scheduler_->GetJob(next.job_id)->state(), v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(scheduler_->GetJob(next.job_id)->has_start_time());
  for (const Event& e : sink_->EventsOf(next.job_id)) {
    EXPECT_NE(e.type, v1::EVENT_TYPE_STARTED);
  }
  clock_.Advance(absl::Seconds(1));
  Done(running.job_id);
  AwaitStart(next.job_id);
  const Event started = sink_->WaitFor(next.job_id, v1::EVENT_TYPE_STARTED);
  Done(next.job_id);
  // STARTED is stamped when the job is handed to its executor: after the
  // gate job returned, never before.
  EXPECT_GE(absl::Time(started.time),
            absl::Time(sink_->WaitEnd(running.job_id).time));
  EXPECT_EQ(scheduler_->GetJob(next.job_id)->attempts(), 1u);
}

TEST_F(SchedulerLanesTest, WithAJournalPriorityStillOrdersJobsWaitingForASlot) {
  BuildWithJournal(1);
  const Admission blocker = Submit(gate_task_);
  ASSERT_TRUE(blocker.status.ok());
  // The gate job has its slot (its start is durable).
  AwaitStart(blocker.job_id);
  // One at a time, lowest first: none may be marked started ahead of the
  // higher ones that follow while the slot is busy.
  std::vector<uint64_t> ids;
  for (int priority : {1, 3, 2}) {
    const Admission a = Submit(ok_task_, priority);
    ASSERT_TRUE(a.status.ok());
    ids.push_back(a.job_id);
  }
  Done(blocker.job_id);
  for (uint64_t id : {ids[1], ids[2], ids[0]}) {
    AwaitStart(id);
    EXPECT_THAT(executor().running(), ElementsAre(id));
    Done(id);
  }
}

TEST_F(SchedulerLanesTest, WithAJournalATimeoutCountsFromTheRealStart) {
  BuildWithJournal(1);
  // The second job waits while the first holds the only slot for 600 ms;
  // its 300 ms must count from when it really runs.
  const Admission first = Submit(ok_task_);
  const Admission second = Submit(ok_task_, 0, "", absl::Milliseconds(300));
  ASSERT_TRUE(first.status.ok() && second.status.ok());
  AwaitStart(first.job_id);
  clock_.Advance(absl::Milliseconds(600));
  Done(first.job_id);
  EXPECT_EQ(sink_->WaitEnd(first.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  AwaitStart(second.job_id);
  EXPECT_EQ(executor().run(second.job_id)->deadline,
            clock_.Now() + absl::Milliseconds(300));
  clock_.Advance(absl::Milliseconds(299));
  Done(second.job_id);
  const Event end = sink_->WaitEnd(second.job_id);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_SUCCEEDED)
      << (end.end() ? end.end()->error().message() : "");
}

}  // namespace
}  // namespace jobd
