// Unit tests: the Scheduler's events through its facade: WatchJobs resume
// from the event log, what replayed events carry, late watchers of ended
// jobs, owner filters, and the journal batch a replayed event waits for
// (event_log.h has the part alone: event_log_test).
#include <memory>
#include <vector>

#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

using SchedulerEventsTest = SchedulerFixture;

TEST_F(SchedulerEventsTest, WatchReplaysRetainedEventsAndReportsLoss) {
  Build({.event_log_size = 4}, 1);
  const Admission a = Submit(ok_task_);
  Done(a.job_id);
  const Admission b = Submit(ok_task_);
  Done(b.job_id);
  // 6 events so far (3 per job); the log keeps the last 4 (seq 3..6).
  auto watcher = std::make_shared<RecordingSink>();
  auto r = scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->events_lost);
  EXPECT_EQ(r->oldest_retained_sequence, 3u);
  EXPECT_THAT(watcher->Sequences(), ElementsAre(3, 4, 5, 6));
  // Then live events follow.
  const Admission c = Submit(ok_task_);
  Done(c.job_id);
  watcher->WaitEnd(c.job_id);
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_EQ(watcher->size(), 7u);
  // Unwatched: nothing more.
  Done(Submit(ok_task_).job_id);
  EXPECT_EQ(watcher->size(), 7u);
}

TEST_F(SchedulerEventsTest, WatchReplaysWhatEventsCarryButNotForgottenJobs) {
  Build({.max_retained = 1}, 1);
  const Admission a = Submit(ok_task_);
  Done(a.job_id);
  const Admission b = Submit(ok_task_);
  Done(b.job_id);
  scheduler_->SweepRetention();  // Forgets a: one ended job is retained.
  ASSERT_FALSE(scheduler_->GetJob(a.job_id).ok());
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents}).ok());
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_TRUE(watcher->EventsOf(a.job_id).empty());
  const std::vector<Event> replayed = watcher->EventsOf(b.job_id);
  ASSERT_EQ(replayed.size(), 3u);
  EXPECT_EQ(replayed[0].type, v1::EVENT_TYPE_ACCEPTED);
  ASSERT_NE(replayed[0].task(), nullptr);
  EXPECT_EQ(replayed[0].task()->name, ok_task_.name);
  EXPECT_EQ(replayed[1].type, v1::EVENT_TYPE_STARTED);
  EXPECT_EQ(replayed[1].executor, v1::EXECUTOR_THREAD);
  EXPECT_EQ(replayed[2].type, v1::EVENT_TYPE_SUCCEEDED);
  ASSERT_NE(replayed[2].end(), nullptr);
  EXPECT_EQ(replayed[2].end()->result().value().string_value(), "done");
  EXPECT_LT(replayed[0].sequence, replayed[2].sequence);
}

TEST_F(SchedulerEventsTest, WatchOfAnEndedJobDeliversItsEnd) {
  const Admission a = Submit(ok_task_);
  Done(a.job_id);
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({a.job_id}, 0, Subscriber{watcher, 0, kAllEvents})
          .ok());
  EXPECT_EQ(watcher->WaitEnd(a.job_id).type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(scheduler_->Watch({424242}, 0, Subscriber{watcher, 0, kAllEvents})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  // Resuming after its end: nothing more will come, and it says so.
  auto late = std::make_shared<RecordingSink>();
  auto r = scheduler_->Watch({a.job_id}, sink_->Sequences().back(),
                             Subscriber{late, 0, kAllEvents});
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->already_seen_ends, ElementsAre(a.job_id));
  EXPECT_EQ(late->size(), 0u);
}

TEST_F(SchedulerEventsTest, WatchersSeeTheirOwnersJobsAndTheEventsTheyWant) {
  const Admission mine = SubmitBytes(echo_task_, 1, "alice");
  Echo(mine.job_id);
  const Admission theirs = SubmitBytes(echo_task_, 1, "bob");
  Echo(theirs.job_id);
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({}, 1, Subscriber{watcher, 7, kTerminalEvents, "alice"})
          .ok());
  // Bob's job is not Alice's to watch.
  EXPECT_EQ(
      scheduler_->Watch({theirs.job_id}, 0, Subscriber{watcher, 7, 0, "alice"})
          .status()
          .code(),
      absl::StatusCode::kNotFound);
  const Admission later = SubmitBytes(echo_task_, 1, "alice");
  Echo(later.job_id);
  Echo(SubmitBytes(echo_task_, 1, "bob").job_id);
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_TRUE(watcher->EventsOf(theirs.job_id).empty());
  EXPECT_THAT(watcher->TypesOf(mine.job_id),
              ElementsAre(v1::EVENT_TYPE_SUCCEEDED));
  EXPECT_THAT(watcher->TypesOf(later.job_id),
              ElementsAre(v1::EVENT_TYPE_SUCCEEDED));
  EXPECT_THAT(watcher->Tags(), ElementsAre(7, 7));
}

TEST_F(SchedulerEventsTest, WithAJournalAReplayedEventWaitsForItsOwnBatchOnly) {
  BuildWithJournal(1);
  const Admission a = Submit(ok_task_);  // Sequences 1-3.
  AwaitStart(a.job_id);
  Done(a.job_id);
  const Admission b = Submit(ok_task_);
  AwaitStart(b.job_id);
  Done(b.job_id);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  const uint64_t durable = journal_->durable();
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->Watch({}, 1, Subscriber{watcher, 0, kAllEvents}).ok());
  scheduler_->Unwatch(watcher.get(), {});
  const std::vector<Event> live = sink_->EventsOf(b.job_id);
  const std::vector<Event> replayed = watcher->EventsOf(b.job_id);
  ASSERT_EQ(replayed.size(), 3u);
  ASSERT_EQ(live.size(), 3u);
  for (size_t i = 0; i < replayed.size(); ++i) {
    // Durable already: nothing to wait for (not the batch open now).
    EXPECT_LE(replayed[i].ticket, durable) << i;
    EXPECT_TRUE(replayed[i].ticket == 0 || replayed[i].ticket == live[i].ticket)
        << i;
  }
}

}  // namespace
}  // namespace jobd
