// Integration tests of periodic schedules against the real jobd binary: a
// schedule firing across a kill -9 and a restart, with no slot run twice
// and the downtime's slots settled by the catch-up policy (one run for the
// latest missed slot); and bad schedules refused over the RPC, naming the
// field, with the other schedules left as they were.
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/journaled_daemon.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using ScheduleTest = testing::JournaledDaemonTest;

v1::ScheduleSpec EverySecond(v1::CatchUpPolicy catch_up) {
  v1::ScheduleSpec spec;
  spec.mutable_interval()->set_seconds(1);
  *spec.mutable_job() = testing::Spec("echo", {1});
  spec.set_catch_up(catch_up);
  spec.set_overlap(v1::OVERLAP_POLICY_QUEUE);
  return spec;
}

grpc::Status Create(v1::JobService::Stub& stub, const std::string& id,
                    const v1::ScheduleSpec& spec,
                    v1::CreateScheduleResponse* out = nullptr) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::CreateScheduleRequest req;
  req.set_id(id);
  *req.mutable_spec() = spec;
  v1::CreateScheduleResponse resp;
  grpc::Status s = stub.CreateSchedule(&ctx, req, &resp);
  if (out != nullptr) *out = resp;
  return s;
}

// The runs of schedule `id` now: slot (Unix seconds) -> how many jobs.
std::map<int64_t, int> Runs(v1::JobService::Stub& stub, const std::string& id) {
  std::map<int64_t, int> out;
  std::string token;
  for (int page = 0; page < 100; ++page) {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(10));
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListJobsResponse resp;
    if (!stub.ListJobs(&ctx, req, &resp).ok()) break;
    for (const v1::Job& job : resp.jobs()) {
      auto labels = job.spec().labels();
      if (labels["jobd.schedule"] != id) continue;
      // The key says the slot: schedule:<id>:<unix seconds>.
      const std::string& key = job.spec().idempotency_key();
      int64_t slot = 0;
      EXPECT_TRUE(absl::SimpleAtoi(key.substr(key.rfind(':') + 1), &slot))
          << key;
      ++out[slot];
    }
    token = resp.next_page_token();
    if (token.empty()) break;
  }
  return out;
}

v1::Schedule GetSchedule(v1::JobService::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::GetScheduleRequest req;
  req.set_id(id);
  v1::Schedule s;
  EXPECT_TRUE(stub.GetSchedule(&ctx, req, &s).ok());
  return s;
}

TEST_F(ScheduleTest, FiresOncePerSlotAcrossKillNineAndRunsTheMissedOnce) {
  StartDaemon();
  ASSERT_TRUE(
      Create(*stub_, "tick", EverySecond(v1::CATCH_UP_POLICY_RUN_ONCE)).ok());
  ASSERT_TRUE(testing::WaitFor([&] { return Runs(*stub_, "tick").size() >= 3; },
                               absl::Seconds(20)));
  ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
  // The downtime itself is what is tested: several slots pass unfired.
  absl::SleepFor(absl::Seconds(3));
  const int64_t restart = absl::ToUnixSeconds(absl::Now());
  StartDaemon();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto runs = Runs(*stub_, "tick");
        return !runs.empty() && runs.rbegin()->first >= restart + 3;
      },
      absl::Seconds(20)));
  {  // Paused: nothing changes while the runs are read.
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(10));
    v1::PauseScheduleRequest req;
    req.set_id("tick");
    v1::Schedule paused;
    ASSERT_TRUE(stub_->PauseSchedule(&ctx, req, &paused).ok());
  }
  const std::map<int64_t, int> runs = Runs(*stub_, "tick");
  const v1::Schedule schedule = GetSchedule(*stub_, "tick");
  ASSERT_GE(runs.size(), 6u);
  // No slot ran twice.
  for (const auto& [slot, n] : runs) EXPECT_EQ(n, 1) << "slot " << slot;
  // Contiguous slots, but for one gap (the downtime: at least the 3 s
  // slept) closed by one run, for its latest slot (the catch-up).
  std::vector<int64_t> gaps;
  int64_t prev = runs.begin()->first;
  for (auto it = std::next(runs.begin()); it != runs.end(); ++it) {
    if (it->first != prev + 1) gaps.push_back(it->first - prev - 1);
    prev = it->first;
  }
  ASSERT_EQ(gaps.size(), 1u) << "one downtime";
  EXPECT_GE(gaps[0], 2) << "the downtime's slots";
  EXPECT_LE(runs.begin()->first, restart - 3);
  // The gap's slots are those counted missed; one more if the kill came
  // between a run's record and its slot's (that slot came again at the
  // restart, found its run by key and ran no second one).
  EXPECT_GE(static_cast<int64_t>(schedule.missed()), gaps[0]);
  EXPECT_LE(static_cast<int64_t>(schedule.missed()), gaps[0] + 1);
  EXPECT_GE(schedule.runs() + 1, runs.size());
  EXPECT_LE(schedule.runs(), runs.size());
}

TEST_F(ScheduleTest, BadSchedulesAreRefusedNamingTheFieldAndHarmNoOther) {
  StartDaemon();
  ASSERT_TRUE(
      Create(*stub_, "good", EverySecond(v1::CATCH_UP_POLICY_SKIP_MISSED))
          .ok());
  v1::ScheduleSpec cron = EverySecond(v1::CATCH_UP_POLICY_SKIP_MISSED);
  cron.clear_interval();
  cron.set_cron("*/5 * * 13 *");
  grpc::Status s = Create(*stub_, "bad", cron);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("spec.cron: cron expression \"*/5 * * 13 *\": field "
                        "month at position 9: 13 is out of range 1-12"));
  cron.set_cron("0 3 * * *");
  cron.set_time_zone("Europe/Atlantis");
  s = Create(*stub_, "bad", cron);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.time_zone: unknown time zone "
                                           "\"Europe/Atlantis\""));
  v1::ScheduleSpec bad_job = EverySecond(v1::CATCH_UP_POLICY_SKIP_MISSED);
  bad_job.mutable_job()->set_task("no.such.task");
  s = Create(*stub_, "bad", bad_job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("spec.job.task: unknown task 'no.such.task'"));
  bad_job = EverySecond(v1::CATCH_UP_POLICY_SKIP_MISSED);
  bad_job.mutable_job()->set_kind(v1::JOB_KIND_UNSPECIFIED);
  s = Create(*stub_, "bad", bad_job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.job.kind"));
  // A retried create is the same schedule; a different spec is refused.
  v1::CreateScheduleResponse again;
  ASSERT_TRUE(Create(*stub_, "good",
                     EverySecond(v1::CATCH_UP_POLICY_SKIP_MISSED), &again)
                  .ok());
  EXPECT_TRUE(again.existed());
  EXPECT_EQ(Create(*stub_, "good", EverySecond(v1::CATCH_UP_POLICY_RUN_ONCE))
                .error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  // Only "good" exists, and it fires.
  ASSERT_TRUE(testing::WaitFor([&] { return Runs(*stub_, "good").size() >= 2; },
                               absl::Seconds(20)));
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::ListSchedulesResponse list;
  ASSERT_TRUE(
      stub_->ListSchedules(&ctx, v1::ListSchedulesRequest(), &list).ok());
  ASSERT_EQ(list.schedules_size(), 1);
  EXPECT_EQ(list.schedules(0).id(), "good");
}

// jobctl schedule add|ls|get|pause|resume|rm against the daemon.
TEST_F(ScheduleTest, JobctlManagesSchedules) {
  StartDaemon();
  auto jobctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {testing::JobctlPath(), "--address", daemon_->unix_address()});
    return testing::RunCommand(args);
  };
  testing::CommandResult r =
      jobctl({"schedule", "add", "hello", "--cron", "*/2 * * * * *", "--tz",
              "Europe/Berlin", "--overlap", "queue", "echo", "42"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("schedule 'hello' created, next run"));
  r = jobctl({"schedule", "add", "hello", "--cron", "*/2 * * * * *", "--tz",
              "Europe/Berlin", "--overlap", "queue", "echo", "42"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("exists already"));
  // Refusals name the field; jobctl exits non-zero.
  r = jobctl({"schedule", "add", "bad", "--cron", "* * 32 * *", "echo"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("field day-of-month at position 5"));
  r = jobctl({"schedule", "add", "bad", "--every", "1.5s", "echo"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--every"));
  ASSERT_TRUE(testing::WaitFor([&] { return !Runs(*stub_, "hello").empty(); },
                               absl::Seconds(20)));
  r = jobctl({"schedule", "ls"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("hello"));
  EXPECT_THAT(r.out, HasSubstr("*/2 * * * * * (Europe/Berlin)"));
  r = jobctl({"schedule", "pause", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("paused"));
  r = jobctl({"schedule", "get", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("state:      paused"));
  EXPECT_THAT(r.out, HasSubstr("last job:"));
  r = jobctl({"--json", "schedule", "resume", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"next_fire_time\""));
  r = jobctl({"schedule", "rm", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("deleted"));
  r = jobctl({"schedule", "rm", "hello"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("did not exist"));
  r = jobctl({"schedule", "get", "hello"});
  EXPECT_NE(r.exit_code, 0);
}

// [[schedule]] tables in the config file: they run, survive as the file
// says, and a malformed one stops the start naming the key.
TEST_F(ScheduleTest, ConfigFileSchedules) {
  const std::string config = dir_ + "/jobd.toml";
  auto write = [&](const std::string& text) {
    FILE* f = fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs(text.c_str(), f);
    fclose(f);
  };
  write(R"toml(
[[schedule]]
id = "from-config"
every = "1s"
overlap = "queue"
job = { task = "echo", args = [7], labels = { team = "ops" } }
)toml");
  StartDaemon({"--config", config});
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !Runs(*stub_, "from-config").empty(); }, absl::Seconds(20)));
  const v1::Schedule s = GetSchedule(*stub_, "from-config");
  EXPECT_TRUE(s.from_config());
  EXPECT_EQ(s.owner(), "config");
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(10));
    v1::DeleteScheduleRequest req;
    req.set_id("from-config");
    v1::DeleteScheduleResponse resp;
    const grpc::Status st = stub_->DeleteSchedule(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(st.error_message(), HasSubstr("config file"));
  }
  ASSERT_TRUE(daemon_->Stop(SIGTERM, absl::Seconds(20)).ok());
  // Malformed: jobd refuses to start, naming the key.
  write(R"toml(
[[schedule]]
id = "x"
cron = "0 0 * * mon-xyz"
job = { task = "echo" }
)toml");
  testing::CommandResult r = testing::RunCommand(testing::DaemonArgs(
      testing::JobdPath(), dir_, {"--config", config, "--state-dir", state_}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("schedule[0].cron: cron expression \"0 0 * * "
                               "mon-xyz\": field day-of-week at position 13: "
                               "unknown name \"xyz\""));
  // Removed from the file: gone at the next start.
  write("");
  StartDaemon({"--config", config});
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::ListSchedulesResponse list;
  ASSERT_TRUE(
      stub_->ListSchedules(&ctx, v1::ListSchedulesRequest(), &list).ok());
  EXPECT_EQ(list.schedules_size(), 0);
}

}  // namespace
}  // namespace jobd
