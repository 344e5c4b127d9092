// Cluster mode's work sharing with real jobd daemons on one real
// redis-server (tests/redis/redis_server.h), on Unix sockets: jobs a
// saturated node cannot start run on another and their ends reach the
// submitter's client; a node killed with SIGKILL while it runs shared
// jobs: its at-least-once jobs run again elsewhere, its at-most-once ones
// end FAILED (never twice), every job has exactly one end at its
// submitter; a frozen node whose jobs were reclaimed cannot complete them
// when it thaws. The jobs are the testing task `ledger`, which appends a
// line to a file as it begins: the ledger counts the runs.
#include <signal.h>

#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_nodes.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_server.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::EndsByLine;
using testing::JobsOn;
using testing::Joined;
using testing::Ledger;
using testing::NodeArgs;
using testing::ReadLedger;
using testing::RedisServer;
using testing::TempDir;

TEST(ClusterWorkTest, ASaturatedNodesJobsRunOnAnotherAndEndAtItsClient) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir("jobd-cluster-work");
  const std::string ledger = dir.path() + "/ledger";
  // a runs one thread job at a time; b has room.
  auto a = Daemon::Start(NodeArgs(**redis, "node-a", 1));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Daemon::Start(NodeArgs(**redis, "node-b", 8));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_a = (*a)->NewStub();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(Joined(*stub_a, 2));
  ASSERT_TRUE(Joined(*stub_b, 2));

  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 16; ++i) {
    specs.push_back(Ledger(ledger, "job-" + std::to_string(i), 300));
  }
  const absl::Time start = absl::Now();
  const testing::StreamResult r = testing::SubmitAll(*stub_a, specs);
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;
    EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_SUCCEEDED)
        << line << ": " << events[0].error().message();
    EXPECT_EQ(events[0].result().value().string_value(), line);
  }
  // Each ran once; most of them on b (a alone would take 16 x 300 ms).
  const auto runs = ReadLedger(ledger);
  EXPECT_EQ(runs.size(), specs.size());
  for (const auto& [line, n] : runs) EXPECT_EQ(n, 1) << line;
  const std::vector<v1::Job> on_b = JobsOn(*stub_b, {v1::JOB_STATE_SUCCEEDED});
  EXPECT_GE(on_b.size(), 8u);
  EXPECT_LT(took, absl::Seconds(16 * 0.3)) << took;
  // a holds every job, ended, as its client sees them, and lists the
  // shared ones it took back itself once its thread was free (foreign
  // jobs there): 15 were shared, b ran the others.
  EXPECT_EQ(JobsOn(*stub_a, {v1::JOB_STATE_SUCCEEDED}).size(),
            specs.size() + (specs.size() - 1 - on_b.size()));
  const v1::ClusterWork wa = testing::GetStats(*stub_a).cluster().work();
  EXPECT_EQ(wa.published(), specs.size() - 1);
  EXPECT_EQ(wa.results(), specs.size() - 1);
  EXPECT_EQ(wa.shared(), 0u);
  const v1::ClusterWork wb = testing::GetStats(*stub_b).cluster().work();
  EXPECT_EQ(wb.completed(), on_b.size());
  // jobctl stats shows work sharing.
  auto shown = testing::RunCommand(
      {testing::JobctlPath(), "--address", (*a)->unix_address(), "stats"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_THAT(shown.out, ::testing::HasSubstr("work:"));
  EXPECT_THAT(shown.out, ::testing::HasSubstr(
                             "published " + std::to_string(specs.size() - 1)));
}

TEST(ClusterWorkTest, AKilledNodesJobsRunAgainOrFailByTheirDeliveryPolicy) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir("jobd-cluster-kill");
  const std::string ledger = dir.path() + "/ledger";
  auto a = Daemon::Start(NodeArgs(**redis, "node-a", 1));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Daemon::Start(NodeArgs(**redis, "node-b", 16));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_a = (*a)->NewStub();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(Joined(*stub_a, 2));
  ASSERT_TRUE(Joined(*stub_b, 2));

  // a's one thread busy; the rest goes to b, which holds them all.
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 1500)};
  for (int i = 0; i < 6; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_LEAST_ONCE));
    specs.push_back(Ledger(ledger, "most-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_MOST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(*stub_a, specs); });
  const bool all_on_b = testing::WaitFor(
      [&] { return JobsOn(*stub_b, {v1::JOB_STATE_RUNNING}).size() == 12; },
      absl::Seconds(15));
  if (!all_on_b) {
    for (const v1::Job& j : JobsOn(*stub_b, {})) {
      std::cerr << "b: " << j.id() << " " << v1::JobState_Name(j.state())
                << "\n";
    }
    std::cerr << testing::GetStats(*stub_a).cluster().work().DebugString();
    std::ifstream in(ledger);
    std::string l;
    while (std::getline(in, l)) std::cerr << "ledger: " << l << "\n";
    for (const v1::Job& j : JobsOn(*stub_a, {})) {
      std::cerr << "a: " << j.id() << " " << v1::JobState_Name(j.state()) << " "
                << j.spec().args(1).string_value() << "\n";
    }
  }
  // c joins, then b dies holding 12 running jobs.
  auto c = Daemon::Start(NodeArgs(**redis, "node-c", 16));
  if (all_on_b && c.ok()) {
    auto stub_c = (*c)->NewStub();
    EXPECT_TRUE(Joined(*stub_c, 3));
  }
  EXPECT_TRUE((*b)->Stop(SIGKILL, absl::Seconds(10)).ok());
  submit.join();
  ASSERT_TRUE(all_on_b) << "ledger: " << ReadLedger(ledger).size();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();

  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  const auto runs = ReadLedger(ledger);
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;  // Exactly one end each.
    const v1::JobEvent& e = events[0];
    if (line.starts_with("least-")) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << line;
      EXPECT_EQ(runs.at(line), 2) << line;  // On b, then again.
    } else if (line.starts_with("most-")) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED) << line;
      EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_LOST_ON_RESTART) << line;
      EXPECT_THAT(e.error().message(), ::testing::HasSubstr("at-most-once"));
      EXPECT_EQ(runs.at(line), 1) << line;  // Never twice.
    } else {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << line;
      EXPECT_EQ(runs.at(line), 1) << line;
    }
  }
  const v1::ClusterStats sa = testing::GetStats(*stub_a).cluster();
  const v1::ClusterStats sc = testing::GetStats(*(*c)->NewStub()).cluster();
  EXPECT_EQ(sa.work().reclaimed() + sc.work().reclaimed(), 12u);
  EXPECT_EQ(sa.work().lost() + sc.work().lost(), 6u);
  EXPECT_EQ(sa.work().results(), 13u - 1u);  // The blocker ran at a.
}

TEST(ClusterWorkTest, AFrozenNodeCannotCompleteWhatWasReclaimedFromIt) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir("jobd-cluster-stale");
  const std::string ledger = dir.path() + "/ledger";
  auto a = Daemon::Start(NodeArgs(**redis, "node-a", 1));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Daemon::Start(NodeArgs(**redis, "node-b", 8));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_a = (*a)->NewStub();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(Joined(*stub_a, 2));
  ASSERT_TRUE(Joined(*stub_b, 2));

  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 1000)};
  for (int i = 0; i < 4; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 1500,
                           v1::DELIVERY_AT_LEAST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(*stub_a, specs); });
  const bool on_b = testing::WaitFor(
      [&] { return JobsOn(*stub_b, {v1::JOB_STATE_RUNNING}).size() == 4; },
      absl::Seconds(15));
  // b freezes (its lease and claims lapse); a, idle again, reclaims and
  // runs its jobs; b thaws after they ended at a.
  ::kill((*b)->pid(), SIGSTOP);
  const bool ended = testing::WaitFor(
      [&] {
        return testing::GetStats(*stub_a).cluster().work().results() == 4;
      },
      absl::Seconds(20));
  ::kill((*b)->pid(), SIGCONT);
  submit.join();
  ASSERT_TRUE(on_b);
  ASSERT_TRUE(ended);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;
    EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_SUCCEEDED) << line;
  }
  // b, thawed, finds its claims gone: what it completes is refused, what
  // it still runs is stopped. Nothing more reaches a.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const v1::ClusterWork w = testing::GetStats(*stub_b).cluster().work();
        return w.refused() + w.claims_lost() == 4;
      },
      absl::Seconds(10)))
      << testing::GetStats(*stub_b).cluster().work().DebugString();
  EXPECT_EQ(testing::GetStats(*stub_b).cluster().work().completed(), 0u);
  EXPECT_EQ(testing::GetStats(*stub_a).cluster().work().results(), 4u);
}

// The submitter is killed after it shared its jobs (no other node is up
// yet): another node runs them while it is down, and once it is back (the
// same journal) each of its jobs has its one end, and none ran twice.
TEST(ClusterWorkTest, ASubmitterKilledAfterSharingFindsItsJobsEndedAtRestart) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir("jobd-cluster-restart");
  const std::string ledger = dir.path() + "/ledger";
  std::vector<std::string> args = NodeArgs(**redis, "node-a", 1);
  args.insert(args.end(), {"--state-dir", dir.path() + "/a-state"});
  auto a = Daemon::Start(args);
  ASSERT_TRUE(a.ok()) << a.status();
  auto stub_a = (*a)->NewStub();
  ASSERT_TRUE(Joined(*stub_a, 1));
  // One runs at a (2 s), the other five are shared: a single node takes
  // nothing while its one thread is busy.
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 2000)};
  for (int i = 0; i < 5; ++i) {
    specs.push_back(Ledger(ledger, "shared-" + std::to_string(i), 10));
  }
  std::vector<std::string> ids;
  {
    grpc::ClientContext ctx;
    testing::Deadline(ctx);
    auto stream = stub_a->Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
    v1::SubmitResponse resp;
    while (ids.size() < specs.size() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids.push_back(e.job_id());
      }
    }
    ctx.TryCancel();
  }
  ASSERT_EQ(ids.size(), specs.size());
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return testing::GetStats(*stub_a).cluster().work().published() == 5;
      },
      absl::Seconds(10)));
  ASSERT_TRUE((*a)->Stop(SIGKILL, absl::Seconds(10)).ok());
  // b runs the five while a is down.
  auto b = Daemon::Start(NodeArgs(**redis, "node-b", 8));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(testing::WaitFor(
      [&] { return JobsOn(*stub_b, {v1::JOB_STATE_SUCCEEDED}).size() == 5; },
      absl::Seconds(15)));
  // a again, on its journal: its shared jobs end with b's results.
  auto again = Daemon::Start(args);
  ASSERT_TRUE(again.ok()) << again.status();
  stub_a = (*again)->NewStub();
  for (size_t i = 1; i < ids.size(); ++i) {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(20));
    v1::GetJobRequest req;
    req.set_job_id(ids[i]);
    req.mutable_wait()->set_seconds(15);
    v1::Job job;
    ASSERT_TRUE(stub_a->GetJob(&ctx, req, &job).ok());
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << ids[i];
    EXPECT_EQ(job.result().value().string_value(),
              specs[i].args(1).string_value());
  }
  const auto runs = ReadLedger(ledger);
  for (size_t i = 1; i < specs.size(); ++i) {
    EXPECT_EQ(runs.at(specs[i].args(1).string_value()), 1);
  }
  EXPECT_EQ(testing::GetStats(*stub_a).cluster().work().results(), 5u);
}

// With --cluster-max-deliveries 1 a job taken over from a dead node (its
// second delivery) is dead-lettered: it ends FAILED DEAD_LETTER at its
// submitter, even at least once, and does not run again.
TEST(ClusterWorkTest, PastMaxDeliveriesAJobIsDeadLettered) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir("jobd-cluster-dead");
  const std::string ledger = dir.path() + "/ledger";
  auto args = [&](const std::string& name, int threads) {
    std::vector<std::string> v = NodeArgs(**redis, name, threads);
    v.insert(v.end(), {"--cluster-max-deliveries", "1"});
    return v;
  };
  auto a = Daemon::Start(args("node-a", 1));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Daemon::Start(args("node-b", 8));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_a = (*a)->NewStub();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(Joined(*stub_a, 2));
  ASSERT_TRUE(Joined(*stub_b, 2));
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 500)};
  for (int i = 0; i < 2; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_LEAST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(*stub_a, specs); });
  const bool on_b = testing::WaitFor(
      [&] { return JobsOn(*stub_b, {v1::JOB_STATE_RUNNING}).size() == 2; },
      absl::Seconds(15));
  EXPECT_TRUE((*b)->Stop(SIGKILL, absl::Seconds(10)).ok());
  submit.join();
  ASSERT_TRUE(on_b);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  const auto runs = ReadLedger(ledger);
  for (int i = 0; i < 2; ++i) {
    const std::string line = "least-" + std::to_string(i);
    ASSERT_EQ(ends.at(line).size(), 1u);
    EXPECT_EQ(ends.at(line)[0].type(), v1::EVENT_TYPE_FAILED);
    EXPECT_EQ(ends.at(line)[0].error().reason(), v1::ERROR_REASON_DEAD_LETTER);
    EXPECT_EQ(runs.at(line), 1);
  }
  EXPECT_EQ(testing::GetStats(*stub_a).cluster().work().dead_lettered(), 2u);
}

}  // namespace
}  // namespace jobd
