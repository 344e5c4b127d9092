// ScheduleRunner (server/schedules/runner.h) on a ManualClock, over the
// real Scheduler (with the fake executor) and, for restarts, the real
// journal reopened: runs per slot, overlap, catch-up after downtime, the
// crash window between a run and its slot's record, pause, and the
// refusals of bad schedules (each naming its field, nothing else touched).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "server/schedules/runner.h"
#include "tests/scheduler_fixture.h"

namespace jobd::schedules {
namespace {

using ::testing::HasSubstr;

class ScheduleRunnerTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    ASSERT_TRUE(registry_.Add(Def("ok")).ok());
    MakeRunner();
  }
  void TearDown() override {
    runner_.reset();
    SchedulerFixture::TearDown();
  }

  void MakeRunner() {
    runner_.reset();
    runner_ = std::make_unique<ScheduleRunner>(
        *scheduler_, journal_.get(), clock_,
        [this](v1::JobSpec spec) -> absl::StatusOr<NewJob> {
          const TaskDef* task = registry_.Find(spec.task());
          if (task == nullptr) {
            return absl::InvalidArgumentError(
                absl::StrCat("spec.task: unknown task '", spec.task(), "'"));
          }
          auto shared = std::make_shared<v1::JobSpec>(std::move(spec));
          NewJob job;
          job.task = task;
          absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(*task, shared);
          if (!args.ok()) return args.status();
          job.args = *std::move(args);
          job.spec = StoredSpec(shared);
          return job;
        },
        RunnerOptions{.max_schedules = 3});
  }

  // Restarts with the journal kept: what a kill -9 after the last commit
  // leaves (everything queued was made durable first).
  void Restart() {
    ASSERT_TRUE(journal_->Flush(absl::Now() + absl::Seconds(10)));
    runner_.reset();
    scheduler_.reset();
    journal_.reset();
    Recovered recovered;
    JournalOptions options;
    options.path = journal_dir_ + "/jobd.db";
    auto journal = Journal::Open(options, &recovered);
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = *std::move(journal);
    Build({}, 4);
    auto rows = recovered.schedules;
    scheduler_->Restore(std::move(recovered), registry_);
    MakeRunner();
    runner_->Restore(rows);
    runner_->Start();
  }

  static v1::ScheduleSpec Every(
      int seconds, v1::CatchUpPolicy catch_up = v1::CATCH_UP_POLICY_SKIP_MISSED,
      v1::OverlapPolicy overlap = v1::OVERLAP_POLICY_QUEUE) {
    v1::ScheduleSpec spec;
    spec.mutable_interval()->set_seconds(seconds);
    spec.mutable_job()->set_task("ok");
    spec.mutable_job()->set_kind(v1::JOB_KIND_IO_BOUND);
    spec.set_catch_up(catch_up);
    spec.set_overlap(overlap);
    return spec;
  }

  // The runs of schedule `id`: slot label -> job ids.
  std::map<std::string, std::vector<uint64_t>> Runs(const std::string& id) {
    std::map<std::string, std::vector<uint64_t>> out;
    for (const v1::Job& job : scheduler_->ListJobs({.limit = 1000})) {
      auto labels = job.spec().labels();
      if (labels["jobd.schedule"] == id) {
        out[labels["jobd.slot"]].push_back(std::stoull(job.id()));
      }
    }
    return out;
  }

  v1::Schedule Get(const std::string& id) {
    absl::StatusOr<v1::Schedule> s = runner_->Get(id, "");
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::Schedule();
  }

  TaskRegistry registry_;
  std::unique_ptr<ScheduleRunner> runner_;
};

TEST_F(ScheduleRunnerTest, EachSlotSubmitsOneLabelledRun) {
  runner_->Start();
  // The clock starts at 2026-01-01T00:00:00Z: a slot of every minute.
  ASSERT_TRUE(runner_->Create("tick", Every(60), false, "alice").ok());
  EXPECT_EQ(
      google::protobuf::util::TimeUtil::ToString(Get("tick").next_fire_time()),
      "2026-01-01T00:01:00Z");
  clock_.Advance(absl::Seconds(59));
  EXPECT_TRUE(Runs("tick").empty());
  clock_.Advance(absl::Seconds(1));
  for (int i = 0; i < 2; ++i) clock_.Advance(absl::Seconds(60));
  // Slots 00:01, 00:02, 00:03 have fired, each once.
  auto runs = Runs("tick");
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs["2026-01-01T00:01:00Z"].size(), 1u);
  EXPECT_EQ(runs["2026-01-01T00:03:00Z"].size(), 1u);
  auto job = scheduler_->GetJob(runs["2026-01-01T00:02:00Z"][0]);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->owner(), "alice");
  EXPECT_EQ(job->spec().idempotency_key(), "schedule:tick:1767225720");
  const v1::Schedule s = Get("tick");
  EXPECT_EQ(s.runs(), 3u);
  EXPECT_EQ(s.missed(), 0u);
  EXPECT_EQ(google::protobuf::util::TimeUtil::ToString(s.last_slot_time()),
            "2026-01-01T00:03:00Z");
}

TEST_F(ScheduleRunnerTest, OverlapSkipAndCancelPrevious) {
  runner_->Start();
  ASSERT_TRUE(runner_
                  ->Create("skip",
                           Every(60, v1::CATCH_UP_POLICY_SKIP_MISSED,
                                 v1::OVERLAP_POLICY_SKIP),
                           false, "a")
                  .ok());
  clock_.Advance(absl::Seconds(60));  // Runs; the fake keeps it running.
  ASSERT_EQ(Runs("skip").size(), 1u);
  clock_.Advance(absl::Seconds(60));  // Still running: skipped.
  EXPECT_EQ(Runs("skip").size(), 1u);
  EXPECT_EQ(Get("skip").skipped(), 1u);
  DoneAll();
  clock_.Advance(absl::Seconds(60));  // Ended: runs again.
  EXPECT_EQ(Runs("skip").size(), 2u);
  DoneAll();

  ASSERT_TRUE(runner_
                  ->Create("cancel",
                           Every(60, v1::CATCH_UP_POLICY_SKIP_MISSED,
                                 v1::OVERLAP_POLICY_CANCEL_PREVIOUS),
                           false, "a")
                  .ok());
  clock_.Advance(absl::Seconds(60));
  ASSERT_EQ(Runs("cancel").size(), 1u);
  const uint64_t first = Runs("cancel").begin()->second[0];
  DoneAll();  // ("skip" ran too.)
  ASSERT_TRUE(runner_->SetPaused("skip", "", true).ok());
  // The next "cancel" run finds nothing live: none cancelled.
  clock_.Advance(absl::Seconds(60));
  ASSERT_EQ(Runs("cancel").size(), 2u);
  EXPECT_EQ(scheduler_->GetJob(first)->state(), v1::JOB_STATE_SUCCEEDED);
  const uint64_t second = Runs("cancel").rbegin()->second[0];
  clock_.Advance(absl::Seconds(60));  // The second still runs: cancelled.
  EXPECT_EQ(Runs("cancel").size(), 3u);
  EXPECT_EQ(scheduler_->GetJob(second)->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(Get("cancel").runs(), 3u);
}

// Downtime: slots missed while jobd was down are run once (the latest) or
// skipped, by the catch-up policy; the following slots fire as usual.
TEST_F(ScheduleRunnerTest, CatchUpAfterDowntime) {
  BuildWithJournal(4);
  MakeRunner();
  runner_->Start();
  ASSERT_TRUE(
      runner_
          ->Create("once", Every(60, v1::CATCH_UP_POLICY_RUN_ONCE), false, "a")
          .ok());
  ASSERT_TRUE(runner_->Create("skip", Every(60), false, "a").ok());
  clock_.Advance(absl::Seconds(60));  // 00:01 fires for both.
  ASSERT_EQ(Runs("once").size(), 1u);
  ASSERT_EQ(Runs("skip").size(), 1u);
  // Down from 00:01:30 to 00:06:30: slots 00:02 to 00:06 are missed.
  clock_.Advance(absl::Seconds(30));
  ASSERT_NO_FATAL_FAILURE(Restart());
  clock_.Advance(absl::Minutes(5));
  auto once = Runs("once");
  EXPECT_EQ(once.size(), 2u);
  EXPECT_EQ(once.count("2026-01-01T00:06:00Z"), 1u);
  EXPECT_EQ(Get("once").missed(), 4u);
  EXPECT_EQ(Runs("skip").size(), 1u);
  EXPECT_EQ(Get("skip").missed(), 5u);
  // Then on time again.
  clock_.Advance(absl::Seconds(30));
  EXPECT_EQ(Runs("once").size(), 3u);
  EXPECT_EQ(Runs("skip").size(), 2u);
  EXPECT_EQ(Runs("skip").count("2026-01-01T00:07:00Z"), 1u);
}

// The crash window: the run of a slot is durable, the record of that slot
// is not (jobd died in between). At the next start the slot comes again;
// its run's idempotency key finds the one already there: one run per slot.
TEST_F(ScheduleRunnerTest, ASlotWhoseRecordWasLostDoesNotRunTwice) {
  BuildWithJournal(4);
  MakeRunner();
  runner_->Start();
  ASSERT_TRUE(
      runner_
          ->Create("tick", Every(60, v1::CATCH_UP_POLICY_RUN_ONCE), false, "a")
          .ok());
  v1::Schedule before = Get("tick");
  before.clear_next_fire_time();
  clock_.Advance(absl::Seconds(60));
  ASSERT_EQ(Runs("tick").size(), 1u);
  // The row as it was before the slot: what the journal holds if the
  // crash came between the run's record and the slot's.
  journal_->PutSchedule("tick", before.SerializeAsString());
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_FALSE(Get("tick").has_last_slot_time());
  clock_.Advance(absl::ZeroDuration());  // Start's timers fire.
  auto runs = Runs("tick");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs.begin()->second.size(), 1u) << "the slot ran twice";
  EXPECT_EQ(Get("tick").runs(), 0u);  // Found, not submitted again.
  EXPECT_EQ(Get("tick").last_job_id(), std::to_string(runs.begin()->second[0]));
  EXPECT_EQ(
      google::protobuf::util::TimeUtil::ToString(Get("tick").last_slot_time()),
      "2026-01-01T00:01:00Z");
}

TEST_F(ScheduleRunnerTest, PausedSlotsAreNotRun) {
  runner_->Start();
  ASSERT_TRUE(runner_->Create("p", Every(60), false, "a").ok());
  ASSERT_TRUE(runner_->SetPaused("p", "", true).ok());
  EXPECT_FALSE(Get("p").has_next_fire_time());
  clock_.Advance(absl::Minutes(5));
  EXPECT_TRUE(Runs("p").empty());
  ASSERT_TRUE(runner_->SetPaused("p", "", false).ok());
  clock_.Advance(absl::Seconds(30));  // 00:05:30: nothing due.
  EXPECT_TRUE(Runs("p").empty());
  clock_.Advance(absl::Seconds(30));  // 00:06.
  EXPECT_EQ(Runs("p").size(), 1u);
  EXPECT_EQ(Get("p").missed(), 0u);
}

TEST_F(ScheduleRunnerTest, BadSchedulesAreRefusedNamingTheField) {
  runner_->Start();
  ASSERT_TRUE(runner_->Create("good", Every(60), false, "a").ok());
  struct Case {
    std::string id;
    v1::ScheduleSpec spec;
    std::string message;
  };
  std::vector<Case> cases;
  {
    v1::ScheduleSpec s = Every(60);
    s.clear_interval();
    s.set_cron("0 25 * * *");
    cases.push_back({"a", s,
                     "spec.cron: cron expression \"0 25 * * *\": field hour "
                     "at position 3: 25 is out of range 0-23"});
    s.set_cron("0 5 * * *");
    s.set_time_zone("Mars/Olympus_Mons");
    cases.push_back(
        {"b", s, "spec.time_zone: unknown time zone \"Mars/Olympus_Mons\""});
    s.set_time_zone("../../etc/passwd");
    cases.push_back({"b2", s, "spec.time_zone: unknown time zone"});
  }
  {
    v1::ScheduleSpec s = Every(60);
    s.mutable_job()->set_task("nope");
    cases.push_back({"c", s, "spec.job.task: unknown task 'nope'"});
    s = Every(60);
    s.mutable_job()->set_idempotency_key("k");
    cases.push_back({"d", s, "spec.job.idempotency_key: must be empty"});
    s = Every(60);
    s.set_cron("* * * * *");
    cases.push_back({"e", s, "spec: give exactly one of cron and interval"});
    s = Every(0);
    cases.push_back({"f", s, "spec.interval: must be whole seconds"});
    s = Every(60);
    s.clear_job();
    cases.push_back({"g", s, "spec.job: missing"});
    cases.push_back({"bad id!", Every(60), "id: byte 4 is not a letter"});
    cases.push_back({"", Every(60), "id: must be 1 to 64 bytes"});
    cases.push_back({"good", Every(30), "id: schedule 'good' exists with"});
  }
  for (const Case& c : cases) {
    auto r = runner_->Create(c.id, c.spec, false, "a");
    ASSERT_FALSE(r.ok()) << c.id;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message))
        << c.id;
  }
  // The same spec again is the same schedule (a retried create).
  auto again = runner_->Create("good", Every(60), false, "a");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->value.second);
  // Another caller's id is taken, and NotFound to it.
  EXPECT_EQ(runner_->Create("good", Every(60), false, "b").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(runner_->Get("good", "b").status().code(),
            absl::StatusCode::kNotFound);
  // The limit (3 here).
  ASSERT_TRUE(runner_->Create("two", Every(60), false, "a").ok());
  ASSERT_TRUE(runner_->Create("three", Every(60), false, "a").ok());
  EXPECT_EQ(runner_->Create("four", Every(60), false, "a").status().code(),
            absl::StatusCode::kResourceExhausted);
  // Nothing else was touched: "good" still fires.
  clock_.Advance(absl::Seconds(60));
  EXPECT_EQ(Runs("good").size(), 1u);
  EXPECT_EQ(runner_->List("").size(), 3u);
  EXPECT_TRUE(runner_->Delete("good", "a").value().value);
  EXPECT_FALSE(runner_->Delete("good", "a").value().value);  // Idempotent.
}

}  // namespace
}  // namespace jobd::schedules
