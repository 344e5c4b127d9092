// Cluster-wide idempotency keys (server/cluster/key_claims.h) with real
// jobd nodes on one real redis-server: the same caller's key at two nodes
// is one job (the second node answers ACCEPTED duplicate with the first
// job's id, and its client gets that job's end), while it runs, after it
// ended, and when both nodes are given the key at once (exactly one run,
// counted by the `ledger` task's file). And what Redis keeps is bounded:
// the results of a node that never comes back are trimmed by age.
#include <signal.h>

#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_client.h"

namespace jobd {
namespace {

using testing::EndsByLine;
using testing::JobsOn;
using testing::KeysOf;
using testing::Ledger;
using testing::ReadLedger;
using testing::RedisClient;
using testing::StartNodes;

v1::JobSpec Keyed(const std::string& ledger, const std::string& line, int ms,
                  const std::string& key) {
  v1::JobSpec s = Ledger(ledger, line, ms);
  s.set_idempotency_key(key);
  return s;
}

// The ACCEPTED event of the stream's item `tag`.
v1::JobEvent AcceptedOf(const testing::StreamResult& r, uint64_t tag) {
  for (const v1::JobEvent& e : r.events) {
    if (e.type() == v1::EVENT_TYPE_ACCEPTED && e.client_tag() == tag) return e;
  }
  ADD_FAILURE() << "no ACCEPTED for item " << tag;
  return {};
}

TEST(ClusterKeysTest, TheSameKeyAtTwoNodesIsOneJob) {
  auto c = StartNodes("jobd-cluster-keys", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  // At a, running (1.5 s); then the same key at b.
  const std::vector<v1::JobSpec> specs = {Keyed(ledger, "once", 1500, "k-1")};
  testing::StreamResult first;
  std::thread submit([&] { first = testing::SubmitAll(stub_a, specs); });
  ASSERT_TRUE(testing::WaitFor(
      [&] { return JobsOn(stub_a, {v1::JOB_STATE_RUNNING}).size() == 1; },
      absl::Seconds(10)));
  testing::StreamResult second = testing::SubmitAll(stub_b, specs);
  submit.join();
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const v1::JobEvent at_a = AcceptedOf(first, 1);
  const v1::JobEvent at_b = AcceptedOf(second, 1);
  EXPECT_FALSE(at_a.duplicate());
  EXPECT_TRUE(at_b.duplicate());
  EXPECT_EQ(at_b.job_id(), at_a.job_id());
  // b's client gets the end of a's job, under its id.
  for (const testing::StreamResult* r : {&first, &second}) {
    const std::vector<v1::JobEvent> ends = r->Terminal();
    ASSERT_EQ(ends.size(), 1u);
    const v1::JobEvent& end = ends[0];
    EXPECT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.error().message();
    EXPECT_EQ(end.job_id(), at_a.job_id());
    EXPECT_EQ(end.result().value().string_value(), "once");
  }

  // After it ended: at b again, and at a (its own key, found locally).
  for (v1::JobService::Stub* stub : {&stub_b, &stub_a}) {
    const testing::StreamResult again = testing::SubmitAll(*stub, specs);
    ASSERT_TRUE(again.status.ok()) << again.status.error_message();
    EXPECT_TRUE(AcceptedOf(again, 1).duplicate());
    EXPECT_EQ(AcceptedOf(again, 1).job_id(), at_a.job_id());
    const std::vector<v1::JobEvent> ends = again.Terminal();
    ASSERT_EQ(ends.size(), 1u);
    EXPECT_EQ(ends[0].type(), v1::EVENT_TYPE_SUCCEEDED);
    EXPECT_EQ(ends[0].result().value().string_value(), "once");
  }
  EXPECT_EQ(ReadLedger(ledger), (std::map<std::string, int>{{"once", 1}}));
  // Another key is another job.
  const testing::StreamResult other =
      testing::SubmitAll(stub_b, {Keyed(ledger, "other", 10, "k-2")});
  EXPECT_FALSE(AcceptedOf(other, 1).duplicate());
  EXPECT_EQ(ReadLedger(ledger).at("other"), 1);
  // The claims in Redis: each expires (with the node's retention).
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::vector<std::string> claims = KeysOf(**redis, "*:idem:*");
  EXPECT_EQ(claims.size(), 2u);
  for (const std::string& key : claims) {
    const auto ttl = (*redis)->Query({"PTTL", key});
    ASSERT_TRUE(ttl.ok()) << ttl.status();
    EXPECT_GT(ttl->integer, 0) << key;
  }
}

TEST(ClusterKeysTest, KeysGivenToTwoNodesAtOnceRunOnce) {
  auto c = StartNodes("jobd-cluster-keys-race", {{"node-a", 4}, {"node-b", 4}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 24; ++i) {
    const std::string n = std::to_string(i);
    specs.push_back(Keyed(ledger, "job-" + n, 50, "key-" + n));
  }
  testing::StreamResult at_a, at_b;
  grpc::ClientContext ctx_a, ctx_b;
  testing::Deadline(ctx_a, absl::Seconds(20));
  testing::Deadline(ctx_b, absl::Seconds(20));
  std::thread ta([&] { at_a = testing::SubmitAll(ctx_a, stub_a, specs); });
  std::thread tb([&] { at_b = testing::SubmitAll(ctx_b, stub_b, specs); });
  ta.join();
  tb.join();
  if (!at_a.status.ok() || !at_b.status.ok()) {
    for (v1::JobService::Stub* stub : {&stub_a, &stub_b}) {
      for (const v1::Job& j : JobsOn(*stub, {})) {
        std::cerr << j.id() << " " << v1::JobState_Name(j.state()) << " "
                  << j.spec().args(1).string_value() << "\n";
      }
      std::cerr << testing::GetStats(*stub).cluster().work().DebugString();
    }
  }
  ASSERT_TRUE(at_a.status.ok()) << at_a.status.error_message();
  ASSERT_TRUE(at_b.status.ok()) << at_b.status.error_message();
  const auto ends_a = EndsByLine(at_a, specs);
  const auto ends_b = EndsByLine(at_b, specs);
  const auto runs = ReadLedger(ledger);
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string line = specs[i].args(1).string_value();
    EXPECT_EQ(runs.count(line) ? runs.at(line) : 0, 1) << line;
    // One of the two was told it is a duplicate of the other.
    const v1::JobEvent ea = AcceptedOf(at_a, i + 1);
    const v1::JobEvent eb = AcceptedOf(at_b, i + 1);
    EXPECT_NE(ea.duplicate(), eb.duplicate()) << line;
    EXPECT_EQ(ea.job_id(), eb.job_id()) << line;
    // Both clients get its one end.
    ASSERT_EQ(ends_a.at(line).size(), 1u) << line;
    ASSERT_EQ(ends_b.at(line).size(), 1u) << line;
    EXPECT_EQ(ends_a.at(line)[0].type(), v1::EVENT_TYPE_SUCCEEDED) << line;
    EXPECT_EQ(ends_b.at(line)[0].type(), v1::EVENT_TYPE_SUCCEEDED) << line;
  }
}

// A node killed after it accepted a keyed job, whose claim is then gone
// (as if the kill came between the job's insert and its claim), claims it
// again at restart: another node took the key meanwhile, so the job
// becomes a mirror of that node's and ends with its end; it runs once.
TEST(ClusterKeysTest, ARestartClaimsItsKeyedJobsAgain) {
  // a keeps its journal across the restart (TestCluster::Restart).
  auto c =
      StartNodes("jobd-cluster-keys-restart", {{"node-a", 1}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  // At a: a blocker on its one thread, then the keyed job, which queues
  // there (a concurrency key keeps it from being shared).
  v1::JobSpec keyed = Keyed(ledger, "keyed", 10, "k-restart");
  keyed.set_concurrency_key("c");
  const std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 5000),
                                          keyed};
  std::string keyed_id;
  {
    grpc::ClientContext ctx;
    testing::Deadline(ctx);
    auto stream = (*c)->stub(0).Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
    v1::SubmitResponse resp;
    while (keyed_id.empty() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED && e.client_tag() == 2) {
          keyed_id = e.job_id();
        }
      }
    }
    ctx.TryCancel();
  }
  ASSERT_FALSE(keyed_id.empty());
  ASSERT_TRUE((*c)->daemon(0).Stop(SIGKILL, absl::Seconds(10)).ok());
  // Its claim gone; b takes the key and runs the job.
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::vector<std::string> claims = KeysOf(**redis, "*:idem:*");
  ASSERT_EQ(claims.size(), 1u);
  const auto deleted = (*redis)->Query({"DEL", claims[0]});
  EXPECT_TRUE(deleted.ok()) << deleted.status();
  const testing::StreamResult at_b = testing::SubmitAll(stub_b, {keyed});
  ASSERT_TRUE(at_b.status.ok()) << at_b.status.error_message();
  EXPECT_FALSE(AcceptedOf(at_b, 1).duplicate());
  ASSERT_EQ(at_b.Terminal().size(), 1u);
  // a again: its keyed job is claimed again, finds b's, and ends with it.
  const absl::Status again = (*c)->Restart(0, 2);
  ASSERT_TRUE(again.ok()) << again;
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(20));
  v1::GetJobRequest req;
  req.set_job_id(keyed_id);
  req.mutable_wait()->set_seconds(15);
  v1::Job job;
  ASSERT_TRUE((*c)->stub(0).GetJob(&ctx, req, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.result().value().string_value(), "keyed");
  EXPECT_EQ(ReadLedger(ledger).at("keyed"), 1);
}

// The sum of the lengths of the results streams of `node`.
int64_t ResultsOf(RedisClient& redis, const std::string& node,
                  size_t* streams) {
  const std::vector<std::string> keys = KeysOf(redis, "*:results:" + node);
  *streams = keys.size();
  int64_t n = 0;
  for (const std::string& key : keys) {
    const auto len = redis.Query({"XLEN", key});
    EXPECT_TRUE(len.ok()) << len.status();
    if (len.ok()) n += len->integer;
  }
  return n;
}

TEST(ClusterKeysTest, AGoneNodesResultsAreTrimmedByAge) {
  const std::vector<std::string> ttl = {"--cluster-results-ttl", "5s"};
  auto c =
      StartNodes("jobd-cluster-trim", {{"node-a", 1, ttl}, {"node-b", 4, ttl}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  // a shares three jobs, which b runs; a dies before they end.
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 3000)};
  for (int i = 0; i < 3; ++i) {
    specs.push_back(Ledger(ledger, "shared-" + std::to_string(i), 800));
  }
  std::thread submit([&] { (void)testing::SubmitAll(stub_a, specs); });
  const bool on_b = testing::WaitFor(
      [&] { return JobsOn(stub_b, {v1::JOB_STATE_RUNNING}).size() == 3; },
      absl::Seconds(10));
  EXPECT_TRUE((*c)->daemon(0).Stop(SIGKILL, absl::Seconds(10)).ok());
  submit.join();
  ASSERT_TRUE(on_b);
  // Their ends wait in a's results streams, which nobody reads.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return testing::GetStats(stub_b).cluster().work().completed() == 3;
      },
      absl::Seconds(10)));
  size_t streams = 0;
  EXPECT_EQ(ResultsOf(**redis, "node-a", &streams), 3);
  EXPECT_GE(streams, 1u);
  // a's publication markers expire as soon (--cluster-results-ttl is
  // the publisher's).
  const std::vector<std::string> markers = KeysOf(**redis, "*:pub:node-a:*");
  EXPECT_EQ(markers.size(), 3u);
  for (const std::string& key : markers) {
    const auto left = (*redis)->Query({"PTTL", key});
    ASSERT_TRUE(left.ok()) << left.status();
    EXPECT_LE(left->integer, 5000) << key;
  }
  // Past --cluster-results-ttl b trims them, and the emptied streams go.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        return ResultsOf(**redis, "node-a", &streams) == 0 && streams == 0;
      },
      absl::Seconds(15)));
  for (int p = 0; p < 4; ++p) {
    const auto member = (*redis)->Query(
        {"SISMEMBER", "{jobd:p" + std::to_string(p) + "}:results-nodes",
         "node-a"});
    EXPECT_TRUE(member.ok()) << member.status();
    EXPECT_EQ(member.ok() ? member->integer : -1, 0) << p;
  }
  EXPECT_THAT((*c)->daemon(1).Log(), ::testing::HasSubstr("trimmed"));
}

}  // namespace
}  // namespace jobd
