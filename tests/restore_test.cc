// Unit tests: Restorer turns journal rows back into job records (with the
// events they record) and judges the jobs that were live when jobd
// stopped; KeptAtShutdown says which live jobs the next start takes back.
#include "server/scheduler/restore.h"

#include <deque>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/job_records.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

class RestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        registry_
            .Add({.name = "ok",
                  .default_kind = v1::JOB_KIND_IO_BOUND,
                  .variadic = true,
                  .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
                    return TaskOutput{};
                  }})
            .ok());
    router_.SetEnabled(v1::EXECUTOR_THREAD, true);
  }
  // A row of task `task` in `state`, with its sequences.
  static JournalRow Row(uint64_t id, std::string task, v1::JobState state,
                        v1::Delivery delivery = v1::DELIVERY_AT_MOST_ONCE) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(std::move(task));
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_delivery(delivery);
    JournalRow row;
    row.id = id;
    row.spec = spec;
    row.state = state;
    row.executor = v1::EXECUTOR_THREAD;
    row.accepted_seq = 10 * id + 1;
    if (state != v1::JOB_STATE_QUEUED) row.started_seq = 10 * id + 2;
    return row;
  }
  Restorer::Revived Revive(JournalRow row) {
    return restorer_.Revive(row, &owner_, log_);
  }

  TaskRegistry registry_;
  Router router_;
  std::deque<TaskDef> vanished_;
  Restorer restorer_{registry_, router_, vanished_, 1 << 20};
  std::string owner_ = "alice";
  std::vector<LoggedEvent> log_;
};

TEST_F(RestoreTest, ARowBecomesTheJobItWasWithItsEvents) {
  JournalRow row = Row(3, "ok", v1::JOB_STATE_RUNNING);
  row.attempts = 2;
  Restorer::Revived r = Revive(std::move(row));
  ASSERT_NE(r.job, nullptr);
  EXPECT_TRUE(r.problem.empty());
  EXPECT_FALSE(r.rewrite);
  EXPECT_EQ(r.job->id, 3u);
  EXPECT_EQ(r.job->owner, &owner_);
  EXPECT_EQ(r.job->spec.task(), registry_.Find("ok"));
  EXPECT_EQ(r.job->spec->task(), "ok");  // The spec keeps its task name.
  EXPECT_EQ(r.job->state, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(r.job->attempts, 2u);
  EXPECT_EQ(r.job->last_sequence, 32u);
  ASSERT_EQ(log_.size(), 2u);
  EXPECT_EQ(log_[0].type, v1::EVENT_TYPE_ACCEPTED);
  EXPECT_EQ(log_[1].type, v1::EVENT_TYPE_STARTED);
}

TEST_F(RestoreTest, LiveJobsAreJudgedByStateAndDelivery) {
  auto queued = Revive(Row(1, "ok", v1::JOB_STATE_QUEUED));
  auto v = restorer_.Judge(*queued.job, queued.problem);
  EXPECT_EQ(v.fate, Restorer::Fate::kQueue);
  EXPECT_EQ(v.executor, v1::EXECUTOR_THREAD);
  EXPECT_NE(v.run, nullptr);

  auto again =
      Revive(Row(2, "ok", v1::JOB_STATE_RUNNING, v1::DELIVERY_AT_LEAST_ONCE));
  EXPECT_EQ(restorer_.Judge(*again.job, again.problem).fate,
            Restorer::Fate::kRerun);

  auto lost = Revive(Row(3, "ok", v1::JOB_STATE_RUNNING));
  v = restorer_.Judge(*lost.job, lost.problem);
  EXPECT_EQ(v.fate, Restorer::Fate::kLost);
  ASSERT_NE(v.end, nullptr);
  EXPECT_EQ(v.end->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
  EXPECT_THAT(v.end->error().message(), HasSubstr("DELIVERY_AT_MOST_ONCE"));
}

TEST_F(RestoreTest, AJobOfAVanishedTaskCannotRun) {
  auto r = Revive(Row(1, "gone", v1::JOB_STATE_QUEUED));
  ASSERT_EQ(vanished_.size(), 1u);
  EXPECT_EQ(r.job->spec.task(), &vanished_.back());
  EXPECT_EQ(r.job->spec.task()->name, "gone");
  auto v = restorer_.Judge(*r.job, r.problem);
  EXPECT_EQ(v.fate, Restorer::Fate::kUnrunnable);
  EXPECT_EQ(v.end->error().reason(), v1::ERROR_REASON_INVALID_INPUT);
  EXPECT_THAT(v.end->error().message(),
              HasSubstr("task 'gone' is not registered"));
}

TEST_F(RestoreTest, AnUnreadableRowFailsSayingWhy) {
  JournalRow row = Row(1, "ok", v1::JOB_STATE_SUCCEEDED);
  row.problem = "its end does not parse";
  auto r = Revive(std::move(row));
  EXPECT_EQ(r.job->state, v1::JOB_STATE_QUEUED);  // To be failed as live.
  auto v = restorer_.Judge(*r.job, r.problem);
  EXPECT_EQ(v.fate, Restorer::Fate::kUnreadable);
  EXPECT_EQ(v.end->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
  EXPECT_THAT(v.end->error().message(), HasSubstr("its end does not parse"));
}

TEST_F(RestoreTest, AnEndedResultTooLargeForAMessageIsRewrittenAsAFailure) {
  JournalRow row = Row(1, "ok", v1::JOB_STATE_SUCCEEDED);
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_SUCCEEDED;
  end->mutable_result().set_payload(std::string(2 << 20, 'x'));
  row.end = end;
  row.ended_seq = 13;
  auto r = Revive(std::move(row));
  EXPECT_TRUE(r.rewrite);
  EXPECT_EQ(r.job->state, v1::JOB_STATE_FAILED);
  EXPECT_EQ(r.job->end->error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
  EXPECT_EQ(log_.back().type, v1::EVENT_TYPE_FAILED);  // As it ends now.
}

TEST_F(RestoreTest, ShutdownKeepsQueuedAndAtLeastOnceJobsWithAJournal) {
  const std::string owner;
  auto queued = MakeRecord(1, &owner);
  auto running = MakeRecord(2, &owner, {.state = v1::JOB_STATE_RUNNING});
  auto again = MakeRecord(3, &owner, {.state = v1::JOB_STATE_RUNNING});
  auto spec = std::make_shared<v1::JobSpec>(*again->spec);
  spec->set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  again->spec = spec;
  EXPECT_TRUE(KeptAtShutdown(*queued, true));
  EXPECT_FALSE(KeptAtShutdown(*running, true));
  EXPECT_TRUE(KeptAtShutdown(*again, true));
  EXPECT_FALSE(KeptAtShutdown(*queued, false));  // No journal: none.
  EXPECT_EQ(ShutdownEnd()->error().reason(), v1::ERROR_REASON_SHUTDOWN);
}

}  // namespace
}  // namespace jobd
