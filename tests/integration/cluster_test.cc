// Cluster mode with real jobd daemons on one real redis-server (started by
// the test on a Unix socket, tests/redis/redis_server.h): two nodes see
// each other in GetStats and in `jobctl stats`; one killed with SIGKILL is
// reported dead by the other within --cluster-node-ttl +
// --cluster-reaper-period; a node started while Redis is down joins once
// it is up; bad cluster options are refused by name; without --cluster,
// GetStats has no cluster part.
#include <signal.h>

#include <functional>
#include <memory>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_server.h"

namespace jobd {
namespace {

using testing::Daemon;
using ::testing::HasSubstr;
using testing::RedisServer;

// Fast timings for the tests: a dead node is seen within 1.2 s.
constexpr absl::Duration kNodeTtl = absl::Milliseconds(1000);
constexpr absl::Duration kReaperPeriod = absl::Milliseconds(200);

std::vector<std::string> NodeArgs(const RedisServer& redis,
                                  const std::string& name) {
  return {"--cluster",
          redis.url(),
          "--node-name",
          name,
          "--cluster-partitions",
          "8",
          "--cluster-heartbeat",
          "200ms",
          "--cluster-node-ttl",
          "1s",
          "--cluster-reaper-period",
          "200ms",
          "--durability",
          "none"};
}

// Redis's view as GetStats shows it, which nothing announces: checked
// every 20 ms, bounded.
bool WaitForStats(v1::JobService::Stub& stub,
                  const std::function<bool(const v1::ClusterStats&)>& done,
                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (int i = 0; i < 100000 && absl::Now() < deadline; ++i) {
    const v1::GetStatsResponse s = testing::GetStats(stub);
    if (s.has_cluster() && done(s.cluster())) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

const v1::ClusterNode* Node(const v1::ClusterStats& c,
                            const std::string& name) {
  for (const v1::ClusterNode& n : c.nodes()) {
    if (n.name() == name) return &n;
  }
  return nullptr;
}

bool Alive(const v1::ClusterStats& c, const std::string& name) {
  const v1::ClusterNode* n = Node(c, name);
  return n != nullptr && n->alive();
}

TEST(ClusterTest, TwoNodesSeeEachOtherAndAKilledOneIsFoundDead) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  auto a = Daemon::Start(NodeArgs(**redis, "node-a"));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Daemon::Start(NodeArgs(**redis, "node-b"));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_a = (*a)->NewStub();
  auto stub_b = (*b)->NewStub();
  auto both = [](const v1::ClusterStats& c) {
    return c.redis_connected() && Alive(c, "node-a") && Alive(c, "node-b");
  };
  ASSERT_TRUE(WaitForStats(*stub_a, both, absl::Seconds(20)));
  ASSERT_TRUE(WaitForStats(*stub_b, both, absl::Seconds(20)));

  const v1::ClusterStats c = testing::GetStats(*stub_a).cluster();
  EXPECT_EQ(c.node_name(), "node-a");
  EXPECT_NE(c.node_epoch(), 0u);
  EXPECT_EQ(c.redis(), (*redis)->url());
  EXPECT_EQ(c.partitions(), 8u);
  EXPECT_EQ(c.node_ttl().seconds(), 1);
  EXPECT_TRUE(Node(c, "node-a")->self());
  EXPECT_FALSE(Node(c, "node-b")->self());

  // jobctl stats shows the same.
  auto shown = testing::RunCommand(
      {testing::JobctlPath(), "--address", (*a)->unix_address(), "stats"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_THAT(shown.out, HasSubstr("node node-a (epoch"));
  EXPECT_THAT(shown.out, HasSubstr("redis connected; 8 partitions"));
  EXPECT_THAT(shown.out, HasSubstr("a dead node is seen within 1.2s"));
  EXPECT_THAT(shown.out, HasSubstr("node-b"));

  // kill -9 of node b: node a reports it dead within the bound (with a
  // loaded machine's slack: GetStats is polled every 20 ms).
  const absl::Time killed = absl::Now();
  ASSERT_TRUE((*b)->Stop(SIGKILL, absl::Seconds(10)).ok());
  ASSERT_TRUE(WaitForStats(
      *stub_a,
      [](const v1::ClusterStats& s) {
        const v1::ClusterNode* n = Node(s, "node-b");
        return n != nullptr && !n->alive() && Alive(s, "node-a");
      },
      absl::Seconds(20)));
  const absl::Duration took = absl::Now() - killed;
  EXPECT_LE(took, kNodeTtl + kReaperPeriod + absl::Seconds(1))
      << "found dead after " << took;
  const v1::ClusterStats after = testing::GetStats(*stub_a).cluster();
  EXPECT_EQ(after.nodes_declared_dead(), 1u);
  EXPECT_TRUE(Node(after, "node-b")->has_dead_since());

  shown = testing::RunCommand(
      {testing::JobctlPath(), "--address", (*a)->unix_address(), "stats"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_THAT(shown.out, HasSubstr("dead"));
}

// Redis down at start: jobd serves all the same and joins once it is up.
TEST(ClusterTest, ANodeStartedWithRedisDownJoinsWhenItComesUp) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  (*redis)->Kill();
  auto a = Daemon::Start(NodeArgs(**redis, "node-a"));
  ASSERT_TRUE(a.ok()) << a.status();
  auto stub = (*a)->NewStub();
  const v1::GetStatsResponse down = testing::GetStats(*stub);
  ASSERT_TRUE(down.has_cluster());
  EXPECT_FALSE(down.cluster().redis_connected());
  EXPECT_EQ(down.cluster().node_epoch(), 0u);
  // Local jobs run as ever.
  EXPECT_EQ(testing::RunOne(*stub, testing::Spec("echo", {1})).type(),
            v1::EVENT_TYPE_SUCCEEDED);
  ASSERT_TRUE((*redis)->Restart().ok());
  EXPECT_TRUE(WaitForStats(
      *stub,
      [](const v1::ClusterStats& c) {
        return c.redis_connected() && Alive(c, "node-a") && c.node_epoch() != 0;
      },
      absl::Seconds(20)));
}

// A node that cannot read Redis's TIME (renamed away here) has no start
// point for the requests of other nodes, and says so in its log; it does
// not join (its membership scripts read TIME too, so the epoch alone would
// not tell why) and runs local jobs as ever.
TEST(ClusterTest, ANodeWithoutRedisTimeSaysWhyItDoesNotJoin) {
  auto redis = RedisServer::Start({"--rename-command", "TIME", "TIME-gone"});
  ASSERT_TRUE(redis.ok()) << redis.status();
  auto a = Daemon::Start(NodeArgs(**redis, "node-a"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        return absl::StrContains((*a)->Log(),
                                 "node 'node-a' cannot read Redis's TIME");
      },
      absl::Seconds(10)))
      << (*a)->Log();
  auto stub = (*a)->NewStub();
  EXPECT_EQ(testing::GetStats(*stub).cluster().node_epoch(), 0u);
  EXPECT_EQ(testing::RunOne(*stub, testing::Spec("echo", {1})).type(),
            v1::EVENT_TYPE_SUCCEEDED);
}

TEST(ClusterTest, WithoutClusterGetStatsHasNoClusterPart) {
  auto a = Daemon::Start({"--durability", "none"});
  ASSERT_TRUE(a.ok()) << a.status();
  auto stub = (*a)->NewStub();
  EXPECT_FALSE(testing::GetStats(*stub).has_cluster());
}

TEST(ClusterTest, BadClusterOptionsAreRefusedByName) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--cluster", "http://127.0.0.1:6379"}, "--cluster:"},
      {{"--cluster", "redis://127.0.0.1:99999/0"}, "--cluster:"},
      {{"--cluster", "unix://relative"}, "--cluster:"},
      {{"--cluster", "redis://127.0.0.1:6379/0", "--node-name", "a b"},
       "--node-name:"},
      {{"--cluster", "redis://127.0.0.1:6379/0", "--cluster-heartbeat", "2s",
        "--cluster-node-ttl", "3s"},
       "--cluster-node-ttl:"},
      {{"--cluster-reaper-period", "0s"}, "--cluster-reaper-period"},
      {{"--cluster-partitions", "0"}, "--cluster-partitions"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {testing::JobdPath(), "--unix-socket",
                                     "none", "--tcp", "127.0.0.1:0"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = testing::RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << c.says << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace jobd
