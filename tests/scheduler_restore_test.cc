// Unit tests: the Scheduler across a restart, through its facade: the
// jobs a journal held, restored (Restore), and what shutdown keeps for the
// next start (EndForShutdown). restore_test has the part alone; the real
// journal across real restarts is restart_test's.
#include <vector>

#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A journal row as a previous run left it (restart_test covers the real
// journal; rows made by hand reach the edge cases).
JournalRow OldRow(uint64_t id, v1::JobState state, uint64_t first_seq) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("ok");
  spec->set_kind(v1::JOB_KIND_IO_BOUND);
  JournalRow row;
  row.id = id;
  row.spec = spec;
  row.state = state;
  row.executor = v1::EXECUTOR_THREAD;
  row.create_time = absl::Now() - absl::Minutes(1);
  row.accepted_seq = first_seq;
  if (state != v1::JOB_STATE_QUEUED) {
    row.start_time = row.create_time;
    row.started_seq = first_seq + 10;
  }
  if (IsTerminal(state)) {
    row.finish_time = row.create_time;
    row.ended_seq = first_seq + 20;
    auto end = std::make_shared<JobEnd>();
    end->state = state;
    row.end = end;
  }
  return row;
}

class SchedulerRestoreTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    ASSERT_TRUE(registry_.Add(Def("ok")).ok());
  }
  TaskRegistry registry_;
};

TEST_F(SchedulerRestoreTest, RestoreEndsLostJobsBeyondMaxRetained) {
  Build({.max_retained = 2}, 1);
  Recovered old;
  for (uint64_t id = 1; id <= 6; ++id) {  // All running when jobd died.
    old.rows.push_back(OldRow(id, v1::JOB_STATE_RUNNING, id * 100));
  }
  old.last_sequence = 1000;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry_);
  EXPECT_EQ(s.lost, 6u);
  // Ending each evicted the oldest beyond --max-retained meanwhile.
  for (uint64_t id = 1; id <= 4; ++id) {
    EXPECT_EQ(scheduler_->GetJob(id).status().code(),
              absl::StatusCode::kNotFound)
        << id;
  }
  for (uint64_t id = 5; id <= 6; ++id) {
    auto job = scheduler_->GetJob(id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
  }
  EXPECT_TRUE(executor().starts().empty());
}

TEST_F(SchedulerRestoreTest, WatchResumesInARestoredLogWithGapsInTheSequence) {
  Recovered old;  // Events 10, 20, 30 and 40, 50, 60 (progress not kept).
  old.rows.push_back(OldRow(1, v1::JOB_STATE_SUCCEEDED, 10));
  old.rows.push_back(OldRow(2, v1::JOB_STATE_SUCCEEDED, 40));
  old.last_sequence = 60;
  scheduler_->Restore(std::move(old), registry_);
  auto watcher = std::make_shared<RecordingSink>();
  auto r = scheduler_->Watch({}, 25, Subscriber{watcher, 0, kAllEvents});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->events_lost);
  EXPECT_THAT(watcher->Sequences(), ElementsAre(30, 40, 50, 60));
  // New events carry on after the old ones; so do ids.
  const Admission a = Submit(ok_task_);
  EXPECT_EQ(a.job_id, 3u);
  Done(a.job_id);
  watcher->WaitEnd(a.job_id);
  scheduler_->Unwatch(watcher.get(), {});
  EXPECT_EQ(watcher->Sequences().at(4), 61u);
}

// Rows the journal could not read back fail their jobs alone, saying why;
// the other jobs are restored as usual.
TEST_F(SchedulerRestoreTest, RestoreFailsOnlyTheJobsWhoseRowsCouldNotBeRead) {
  Recovered old;
  old.rows.push_back(OldRow(1, v1::JOB_STATE_QUEUED, 10));
  old.rows.push_back(OldRow(2, v1::JOB_STATE_SUCCEEDED, 20));
  old.rows.back().problem = "its result does not parse";
  old.rows.back().end.reset();
  old.rows.push_back(OldRow(3, v1::JOB_STATE_SUCCEEDED, 30));
  old.rows.push_back(OldRow(4, v1::JOB_STATE_QUEUED, 40));
  old.rows.back().problem = "its spec does not parse";
  old.last_sequence = 60;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry_);
  EXPECT_EQ(s.unreadable, 2u);
  EXPECT_EQ(s.retained, 1u);
  EXPECT_EQ(s.queued, 1u);
  for (uint64_t id : {2, 4}) {
    auto job = scheduler_->GetJob(id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
    EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
    EXPECT_EQ(job->error().code(),
              static_cast<int>(absl::StatusCode::kDataLoss));
    EXPECT_THAT(job->error().message(),
                HasSubstr(id == 2 ? "its result does not parse"
                                  : "its spec does not parse"));
  }
  EXPECT_EQ(scheduler_->GetJob(3)->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(sink_->size(), 0u);
  auto watcher = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler_->Watch({1}, 0, Subscriber{watcher, 0}).ok());
  EXPECT_THAT(executor().running(), ElementsAre(1));  // Queued again.
  Done(1);
  EXPECT_EQ(watcher->WaitEnd(1).type, v1::EVENT_TYPE_SUCCEEDED);
}

// An unreadable row whose job retention forgets as it fails (nothing is
// retained) is not written back: its row stays deleted.
TEST_F(SchedulerRestoreTest, AnUnreadableRowForgottenAtOnceStaysForgotten) {
  BuildWithJournal(1, {}, {.max_retained = 0});
  Recovered old;
  old.rows.push_back(OldRow(1, v1::JOB_STATE_QUEUED, 10));
  old.rows.back().problem = "its spec does not parse";
  old.last_sequence = 10;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry_);
  EXPECT_EQ(s.unreadable, 1u);
  EXPECT_EQ(scheduler_->GetJob(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->GetStats().retained(), 0u);
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  scheduler_.reset();
  journal_.reset();
  Recovered again;
  auto reopened = Journal::Open({.path = journal_dir_ + "/jobd.db"}, &again);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE(again.rows.empty());
}

// A result that no longer fits one message with its spec fails its
// restored job (RESULT_TOO_LARGE).
TEST_F(SchedulerRestoreTest, ARestoredResultTooLargeForAMessageFailsItsJob) {
  Build({.max_message_bytes = 256 << 10}, 1);
  Recovered old;
  old.rows.push_back(OldRow(1, v1::JOB_STATE_SUCCEEDED, 10));
  auto spec = std::make_shared<v1::JobSpec>(*old.rows[0].spec);
  spec->set_payload(std::string(100 << 10, 's'));
  old.rows[0].spec = spec;
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_SUCCEEDED;
  end->mutable_result().set_payload(std::string(150 << 10, 'r'));
  old.rows[0].end = end;
  const RestoreSummary s = scheduler_->Restore(std::move(old), registry_);
  EXPECT_EQ(s.unreadable, 1u);
  auto job = scheduler_->GetJob(1);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
}

// With a journal, shutdown keeps queued jobs and running at-least-once
// ones for the next start, and ends only running at-most-once ones; from
// then on Cancel keeps jobs as they are.
TEST_F(SchedulerRestoreTest, WithAJournalShutdownKeepsWhatTheNextStartRuns) {
  BuildWithJournal(2);
  const Admission at_most_once = Submit(ok_task_);
  AwaitStart(at_most_once.job_id);
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("ok");
  spec->set_kind(v1::JOB_KIND_IO_BOUND);
  spec->set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  std::vector<NewJob> jobs(1);
  jobs[0].task = &ok_task_;
  jobs[0].spec = spec;
  std::vector<Admission> out;
  scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
  const uint64_t at_least_once = out.at(0).job_id;
  AwaitStart(at_least_once);
  const Admission queued = Submit(ok_task_);
  scheduler_->BeginDrain();  // As the daemon does, before the grace.
  auto [ended, kept] = scheduler_->EndForShutdown();
  EXPECT_THAT(ended, ElementsAre(at_most_once.job_id));
  EXPECT_EQ(kept, 2u);
  EXPECT_EQ(sink_->WaitEnd(at_most_once.job_id).end()->error().reason(),
            v1::ERROR_REASON_SHUTDOWN);
  EXPECT_THAT(executor().cancelled(),
              ElementsAre(at_most_once.job_id, at_least_once));
  EXPECT_EQ(scheduler_->GetJob(at_least_once)->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(scheduler_->Cancel(queued.job_id).status().code(),
            absl::StatusCode::kUnavailable);
  // What its run returns now is dropped: it is queued for the next start.
  Done(at_least_once);
  EXPECT_EQ(scheduler_->GetJob(at_least_once)->state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(scheduler_->WaitNoneRunning(absl::Now()));
}

}  // namespace
}  // namespace jobd
