// Membership (server/cluster/membership.h) through ClusterNode, against a
// real redis-server started by the test: nodes see each other, a stopped
// node is found dead within node_ttl + reaper_period, a lost lease is
// noticed and the node joins again with a new epoch, Redis killed and
// restarted (its data gone) is joined again, and the keys are hash-tagged.
#include <functional>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobd/v1/jobd.pb.h"
#include "server/cluster/cluster_node.h"
#include "server/cluster/membership.h"
#include "tests/redis/redis_call.h"
#include "tests/redis/redis_server.h"

namespace jobd::cluster {
namespace {

using testing::Call;
using testing::IoThread;
using testing::RedisServer;

// Checks `done` every 10 ms until it holds or `timeout` passes (what it
// waits for is Redis's view, which nothing announces).
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (int i = 0; i < 100000; ++i) {
    if (done()) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

const NodeView* Find(const MembershipSnapshot& s, const std::string& name) {
  for (const NodeView& n : s.nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

bool SeesAlive(const ClusterNode& node, const std::string& name) {
  const MembershipSnapshot s = node.Snapshot();
  const NodeView* n = Find(s, name);
  return n != nullptr && n->alive;
}

bool SeesDead(const ClusterNode& node, const std::string& name) {
  const MembershipSnapshot s = node.Snapshot();
  const NodeView* n = Find(s, name);
  return n != nullptr && !n->alive;
}

class MembershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
  }

  ClusterOptions Options(const std::string& name) {
    ClusterOptions o;
    o.url = redis_->url();
    o.redis.unix_path = redis_->socket_path();
    o.node_name = name;
    o.partitions = 4;
    // A loaded machine may stall a node for a few hundred ms: the lease
    // outlasts that.
    o.heartbeat = absl::Milliseconds(100);
    o.node_ttl = absl::Milliseconds(1000);
    o.reaper_period = absl::Milliseconds(100);
    return o;
  }

  std::unique_ptr<RedisServer> redis_;
};

TEST_F(MembershipTest, NodesSeeEachOtherAndAStoppedOneDiesWithinTheBound) {
  ClusterNode a(Options("a"));
  ClusterNode b(Options("b"));
  a.Start();
  b.Start();
  ASSERT_TRUE(WaitFor([&] { return SeesAlive(a, "a") && SeesAlive(a, "b"); },
                      absl::Seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return SeesAlive(b, "a") && SeesAlive(b, "b"); },
                      absl::Seconds(10)));
  const MembershipSnapshot sa = a.Snapshot();
  EXPECT_TRUE(Find(sa, "a")->self);
  EXPECT_FALSE(Find(sa, "b")->self);
  EXPECT_NE(Find(sa, "a")->epoch, Find(sa, "b")->epoch);
  EXPECT_EQ(sa.epoch, Find(sa, "a")->epoch);
  EXPECT_TRUE(sa.redis_connected);

  // GetStats's view.
  v1::GetStatsResponse stats;
  a.AddStats(stats);
  ASSERT_TRUE(stats.has_cluster());
  EXPECT_EQ(stats.cluster().node_name(), "a");
  EXPECT_EQ(stats.cluster().partitions(), 4u);
  EXPECT_EQ(stats.cluster().nodes_size(), 2);
  EXPECT_TRUE(stats.cluster().redis_connected());

  // b stops renewing (as a node killed would): a finds it dead within
  // node_ttl + reaper_period of b's last renewal (plus a loaded machine's
  // slack).
  const absl::Time stopped = absl::Now();
  b.Stop();
  ASSERT_TRUE(WaitFor([&] { return SeesDead(a, "b"); }, absl::Seconds(10)));
  const absl::Duration took = absl::Now() - stopped;
  EXPECT_LE(took, a.options().detection_bound() + absl::Seconds(1));
  const MembershipSnapshot after = a.Snapshot();
  EXPECT_TRUE(Find(after, "a")->alive);
  EXPECT_EQ(after.nodes_declared_dead, 1u);
  EXPECT_GT(Find(after, "b")->dead_since, absl::Now() - absl::Seconds(10));

  // b comes back under the same name: a new epoch, alive again.
  ClusterNode b2(Options("b"));
  b2.Start();
  ASSERT_TRUE(WaitFor([&] { return SeesAlive(a, "b"); }, absl::Seconds(10)));
  EXPECT_GT(Find(a.Snapshot(), "b")->epoch, Find(sa, "b")->epoch);
}

TEST_F(MembershipTest, ALostLeaseIsNoticedAndTheNodeJoinsAgain) {
  ClusterNode a(Options("a"));
  a.Start();
  ASSERT_TRUE(
      WaitFor([&] { return a.Snapshot().epoch != 0; }, absl::Seconds(10)));
  const uint64_t first = a.Snapshot().epoch;

  IoThread io;
  RedisConnectionOptions o;
  o.endpoint.unix_path = redis_->socket_path();
  auto raw = RedisConnection::Create(io.io(), o);
  raw->Start();
  // The keys, all hash-tagged.
  auto lease = Call(*raw, {"GET", "{jobd}:node:a"});
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->str, std::to_string(first));
  auto registry = Call(*raw, {"HGET", "{jobd}:nodes", "a"});
  ASSERT_TRUE(registry.ok());
  EXPECT_EQ(registry->str, std::to_string(first));
  auto ttl = Call(*raw, {"PTTL", "{jobd}:node:a"});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 1000);

  // The lease taken away (as if it expired while the node stalled).
  ASSERT_TRUE(Call(*raw, {"DEL", "{jobd}:node:a"}).ok());
  ASSERT_TRUE(WaitFor([&] { return a.Snapshot().lease_losses >= 1; },
                      absl::Seconds(10)));
  ASSERT_TRUE(WaitFor(
      [&] {
        const MembershipSnapshot s = a.Snapshot();
        return s.epoch > first && Find(s, "a") != nullptr &&
               Find(s, "a")->alive && Find(s, "a")->epoch == s.epoch;
      },
      absl::Seconds(10)));
  raw->Stop();
}

TEST_F(MembershipTest, RejoinsAfterRedisIsKilledAndRestarted) {
  ClusterNode a(Options("a"));
  a.Start();
  ASSERT_TRUE(WaitFor([&] { return SeesAlive(a, "a"); }, absl::Seconds(10)));
  redis_->Kill();
  ASSERT_TRUE(WaitFor([&] { return !a.Snapshot().redis_connected; },
                      absl::Seconds(10)));
  v1::GetStatsResponse stats;
  a.AddStats(stats);
  EXPECT_FALSE(stats.cluster().redis_connected());
  // Restarted empty (no persistence): the node's lease is gone with the
  // data; it joins again, with a larger epoch all the same.
  const uint64_t before = a.Snapshot().epoch;
  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        const MembershipSnapshot s = a.Snapshot();
        return s.redis_connected && s.redis_reconnects == 1 &&
               SeesAlive(a, "a") && s.lease_losses >= 1 && s.epoch != 0;
      },
      absl::Seconds(10)));
  EXPECT_GT(a.Snapshot().epoch, before);
}

// Redis down when the node starts: it keeps trying and joins once Redis is
// there.
TEST_F(MembershipTest, JoinsOnceRedisComesUp) {
  redis_->Kill();
  ClusterNode a(Options("a"));
  a.Start();
  ASSERT_TRUE(
      WaitFor([&] { return !a.Snapshot().redis_connected; }, absl::Seconds(2)));
  EXPECT_EQ(a.Snapshot().epoch, 0u);
  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE(WaitFor([&] { return SeesAlive(a, "a"); }, absl::Seconds(10)));
}

}  // namespace
}  // namespace jobd::cluster
