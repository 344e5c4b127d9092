// Cluster mode under load, with real processes (three jobd nodes on one
// real redis-server, tests/integration/cluster_fixture.h): many jobs
// submitted at random nodes are shared and each ends exactly once, at its
// submitter, with the nodes' counters in agreement; Redis killed (SIGKILL)
// and restarted on its append-only file under load loses nothing; a node
// killed under load has its entries reclaimed within the documented bound,
// and comes back under a new incarnation with its own jobs ended; a node
// stopped under load hands back what it holds and loses nothing. The jobs
// are the testing task `ledger`: the ledger file counts the runs, so that
// an at-most-once job seen twice there fails the test.
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_client.h"

namespace jobd {
namespace {

using testing::LoadStream;
using testing::NodeConfig;
using testing::StartNodes;
using testing::TestCluster;

// Jobs of the first test; JOBD_CLUSTER_LOAD_JOBS overrides it.
constexpr int kLoadJobs = 100000;
// Jobs per message on a Submit stream.
constexpr size_t kBatch = 1000;
constexpr int kNodes = 3;

int LoadJobs() {
  int n = kLoadJobs;
  if (const char* v = getenv("JOBD_CLUSTER_LOAD_JOBS")) {
    if (!absl::SimpleAtoi(v, &n) || n < kNodes) n = kLoadJobs;
  }
  return n;
}

// Nodes kept saturated: two threads each, no process pool (a node takes
// work only when every executor it runs has room), logs at info.
std::vector<NodeConfig> LoadNodes(std::vector<std::string> extra = {}) {
  std::vector<NodeConfig> nodes;
  for (const char* name : {"node-a", "node-b", "node-c"}) {
    NodeConfig n{name, 2, {"--process-workers", "0", "--log-level", "info"}};
    n.extra.insert(n.extra.end(), extra.begin(), extra.end());
    nodes.push_back(std::move(n));
  }
  return nodes;
}

// What a stream's jobs came to, checked against the ledger: each job ends
// exactly once; an at-most-once job begins at most once and ends
// SUCCEEDED with its line, or FAILED LOST_ON_RESTART: its take was lost,
// or, if `node_lost`, the node that ran it was (then it may have begun);
// an at-least-once job ends SUCCEEDED.
struct Tally {
  int succeeded = 0;
  int lost = 0;        // At-most-once, FAILED LOST_ON_RESTART.
  int duplicates = 0;  // At-least-once runs beyond the first.
};

void Check(const std::vector<LoadStream::Item>& items,
           const std::vector<v1::JobSpec>& specs,
           const std::map<std::string, int>& runs, bool node_lost,
           Tally& tally) {
  ASSERT_EQ(items.size(), specs.size());
  int reported = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const LoadStream::Item& item = items[i];
    const std::string& line = specs[i].args(1).string_value();
    const auto r = runs.find(line);
    const int ran = r == runs.end() ? 0 : r->second;
    const bool once = specs[i].delivery() != v1::DELIVERY_AT_LEAST_ONCE;
    bool ok = item.ends.size() == 1;
    if (ok) {
      const v1::JobEvent& e = item.ends[0];
      if (e.type() == v1::EVENT_TYPE_SUCCEEDED) {
        ok = ran >= 1 && (!once || ran == 1) &&
             e.result().value().string_value() == line;
        ++tally.succeeded;
        tally.duplicates += std::max(0, ran - 1);
      } else {
        ok = once && e.type() == v1::EVENT_TYPE_FAILED &&
             e.error().reason() == v1::ERROR_REASON_LOST_ON_RESTART &&
             ran <= (node_lost ? 1 : 0);
        ++tally.lost;
      }
    }
    if (!ok) {
      ADD_FAILURE() << line << " (" << item.job_id << "): " << item.ends.size()
                    << " ends, ran " << ran << " times"
                    << (item.ends.empty() ? std::string()
                                          : ", " + item.ends[0].DebugString());
      if (++reported == 10) return;
    }
  }
}

// Sums of the nodes' work counters.
struct WorkSum {
  uint64_t published = 0, taken = 0, completed = 0, results = 0, reclaimed = 0,
           lost = 0, refused = 0, released = 0;
};
WorkSum SumWork(TestCluster& c, const std::vector<size_t>& nodes) {
  WorkSum s;
  for (size_t i : nodes) {
    const v1::ClusterWork w = testing::Work(c.stub(i));
    s.published += w.published();
    s.taken += w.taken();
    s.completed += w.completed();
    s.results += w.results();
    s.reclaimed += w.reclaimed();
    s.lost += w.lost();
    s.refused += w.refused();
    s.released += w.released();
  }
  return s;
}

// Jobs for node `node`: `n` ledger jobs of `ms`, every `least_every`-th
// at least once (0: none).
std::vector<v1::JobSpec> Jobs(const std::string& ledger, int node, int n,
                              int ms, int least_every) {
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < n; ++i) {
    const bool least = least_every > 0 && i % least_every == 0;
    specs.push_back(testing::Ledger(
        ledger, absl::StrCat("n", node, "-", i), ms,
        least ? v1::DELIVERY_AT_LEAST_ONCE : v1::DELIVERY_AT_MOST_ONCE));
  }
  return specs;
}

// Jobs for the first `nodes` nodes: `per_node` each (Jobs: `ms` long,
// every 4th at least once).
std::vector<std::vector<v1::JobSpec>> LoadSpecs(const std::string& ledger,
                                                int nodes, int per_node,
                                                int ms) {
  std::vector<std::vector<v1::JobSpec>> specs;
  for (int i = 0; i < nodes; ++i) {
    specs.push_back(Jobs(ledger, i, per_node, ms, 4));
  }
  return specs;
}

// One Submit stream a node: specs[i] at node i.
std::vector<std::unique_ptr<LoadStream>> StreamAll(
    TestCluster& c, const std::vector<std::vector<v1::JobSpec>>& specs) {
  std::vector<std::unique_ptr<LoadStream>> streams;
  for (size_t i = 0; i < specs.size(); ++i) {
    streams.push_back(
        std::make_unique<LoadStream>(c.stub(i), specs[i], kBatch));
  }
  return streams;
}

// Waits up to `limit` (each) until every job of the first `count` streams
// ended; names the first stream that did not, with its jobs unended.
::testing::AssertionResult AllEnded(
    const std::vector<std::unique_ptr<LoadStream>>& streams,
    const std::vector<std::vector<v1::JobSpec>>& specs, size_t count,
    TestCluster& c, absl::Duration limit) {
  for (size_t i = 0; i < count; ++i) {
    if (!streams[i]->Wait(limit)) {
      return ::testing::AssertionFailure()
             << "node " << i << ": " << streams[i]->ended() << " of "
             << specs[i].size() << " ended; "
             << streams[i]->status().error_message()
             << testing::Unended(*streams[i], c.stub(i), c.redis(),
                                 c.config(i).name);
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(ClusterLoadTest, JobsAtRandomNodesAreSharedAndEachEndsOnceAtItsSubmitter) {
  // Packed (as users of many small jobs run it): 16 jobs an entry.
  auto c = StartNodes("jobd-cluster-load", LoadNodes({"--cluster-pack", "16"}));
  ASSERT_TRUE(c.ok()) << c.status();
  const int n = LoadJobs();
  // Each job to a node drawn at random (a fixed seed: the same draw on
  // every run); no-op jobs, so that the nodes stay saturated.
  std::mt19937 rng(20261205);
  std::vector<std::vector<v1::JobSpec>> specs(kNodes);
  for (int i = 0; i < n; ++i) {
    const int node = static_cast<int>(rng() % kNodes);
    specs[node].push_back(
        testing::Ledger((*c)->ledger(), absl::StrCat("j", i), 0));
  }
  const absl::Time start = absl::Now();
  const auto streams = StreamAll(**c, specs);
  ASSERT_TRUE(AllEnded(streams, specs, kNodes, **c, absl::Seconds(150)));
  const absl::Duration took = absl::Now() - start;
  std::fprintf(stderr, "%d jobs on %d nodes in %.1f s (%.0f jobs/s)\n", n,
               kNodes, absl::ToDoubleSeconds(took),
               n / absl::ToDoubleSeconds(took));

  const auto runs = testing::ReadLedger((*c)->ledger());
  EXPECT_EQ(runs.size(), static_cast<size_t>(n));
  Tally tally;
  for (int i = 0; i < kNodes; ++i) {
    Check(streams[i]->items(), specs[i], runs, false, tally);
  }
  EXPECT_EQ(tally.succeeded, n);
  // The counters agree: what was published was taken once, completed
  // once, and its end reached its submitter once; most jobs were shared.
  const WorkSum w = SumWork(**c, {0, 1, 2});
  std::fprintf(stderr,
               "published %lu taken %lu completed %lu results %lu "
               "released %lu\n",
               w.published, w.taken, w.completed, w.results, w.released);
  EXPECT_EQ(w.taken, w.published);
  EXPECT_EQ(w.completed, w.published);
  EXPECT_EQ(w.results, w.published);
  EXPECT_EQ(w.reclaimed, 0u);
  EXPECT_EQ(w.refused, 0u);
  EXPECT_GT(w.published, static_cast<uint64_t>(n) / 2);
  // Every node ran its part of them.
  for (int i = 0; i < kNodes; ++i) {
    EXPECT_GT(testing::Work((*c)->stub(i)).completed(),
              static_cast<uint64_t>(n) / (3 * kNodes))
        << i;
  }
}

// Jobs ended on `streams` so far.
size_t Ended(const std::vector<std::unique_ptr<LoadStream>>& streams) {
  size_t n = 0;
  for (const auto& s : streams) n += s->ended();
  return n;
}

// Node c's consumer ("node-c:<epoch>"), once a quarter of the `jobs` of
// `streams` ended and it holds entries in Redis: the load is under way.
// Empty if that did not come within 60 s.
std::string NodeCHolding(
    TestCluster& c, testing::RedisClient& redis,
    const std::vector<std::unique_ptr<LoadStream>>& streams, size_t jobs) {
  const std::string consumer = absl::StrCat(
      "node-c:", testing::GetStats(c.stub(2)).cluster().node_epoch());
  const bool holding = testing::WaitFor(
      [&] {
        return Ended(streams) >= jobs / 4 &&
               testing::PendingOf(redis, 4, consumer) > 0;
      },
      absl::Seconds(60));
  return holding ? consumer : std::string();
}

// Redis killed (SIGKILL) under load and restarted on its append-only file
// with `appendfsync always`: jobd takes a write Redis acknowledged as done
// (a published entry is never published again, an acknowledged entry
// never taken again), and `always` writes and fsyncs before it answers.
// (With `everysec`, Redis 7.0 holds its writes back, up to 2 s, while a
// background fsync is in progress, and answers meanwhile: a kill then
// loses writes it acknowledged.)
// The node TTL (3 s) outlasts the outage (1 s) and the nodes' reconnect:
// no node is taken for dead.
TEST(ClusterLoadTest, RedisKilledAndRestartedUnderLoadLosesNothing) {
  constexpr absl::Duration kOutage = absl::Seconds(1);
  auto c = StartNodes("jobd-cluster-redis-kill",
                      LoadNodes({"--cluster-node-ttl", "3s"}),
                      {"--appendonly", "yes", "--appendfsync", "always"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  constexpr int kPerNode = 4000;
  const auto specs = LoadSpecs(ledger, kNodes, kPerNode, 0);
  const auto streams = StreamAll(**c, specs);
  ASSERT_TRUE(
      testing::WaitFor([&] { return Ended(streams) >= kNodes * kPerNode / 4; },
                       absl::Seconds(60)));
  const absl::Time killed = absl::Now();
  (*c)->redis().Kill();
  // Nodes keep serving: a job submitted to each while Redis is down runs
  // there.
  for (int i = 0; i < kNodes; ++i) {
    EXPECT_TRUE(testing::WaitFor(
        [&] {
          return !testing::GetStats((*c)->stub(i)).cluster().redis_connected();
        },
        absl::Seconds(10)));
    const v1::JobEvent e = testing::RunOne(
        (*c)->stub(i), testing::Ledger(ledger, absl::StrCat("down-", i), 0));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.DebugString();
  }
  // The outage under test: Redis stays down this long.
  absl::SleepFor(kOutage - (absl::Now() - killed));
  const size_t ended_down = Ended(streams);
  const absl::Duration down = absl::Now() - killed;
  ASSERT_TRUE((*c)->redis().Restart().ok());
  ASSERT_TRUE(AllEnded(streams, specs, kNodes, **c, absl::Seconds(90)));
  const absl::Duration took = absl::Now() - killed;
  const auto runs = testing::ReadLedger(ledger);
  Tally tally;
  for (int i = 0; i < kNodes; ++i) {
    EXPECT_TRUE(testing::Joined((*c)->stub(i), kNodes));
    EXPECT_EQ(runs.at(absl::StrCat("down-", i)), 1);
    Check(streams[i]->items(), specs[i], runs, false, tally);
  }
  const WorkSum w = SumWork(**c, {0, 1, 2});
  std::fprintf(stderr,
               "Redis down %.2f s (%zu jobs ended by then); all ended %.1f s "
               "after the kill: %d succeeded, %d lost (at most once), %d "
               "duplicate runs; published %lu completed %lu results %lu "
               "reclaimed %lu refused %lu\n",
               absl::ToDoubleSeconds(down), ended_down,
               absl::ToDoubleSeconds(took), tally.succeeded, tally.lost,
               tally.duplicates, w.published, w.completed, w.results,
               w.reclaimed, w.refused);
  EXPECT_EQ(tally.succeeded + tally.lost, kNodes * kPerNode);
  EXPECT_EQ(w.results, w.published);
  EXPECT_EQ(tally.duplicates, 0);
}

// kill -9 of one of three nodes under load: its entries are reclaimed
// within node-ttl + reaper-period (measured from the kill, on Redis: the
// dead consumer's pending entries), although the other nodes' slots are
// full (20 ms jobs, a backlog in Redis) whenever their reapers look;
// restarted on its journal, under a new incarnation, it ends each job it
// had accepted; the other nodes' jobs each end once at their submitter.
TEST(ClusterLoadTest, ANodeKilledUnderLoadIsReclaimedWithinTheBound) {
  // Packed: a killed node's packs hold jobs it had not begun.
  auto c =
      StartNodes("jobd-cluster-node-kill", LoadNodes({"--cluster-pack", "16"}));
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  constexpr int kPerNode = 1000;
  const auto specs = LoadSpecs(ledger, kNodes, kPerNode, 20);
  const auto streams = StreamAll(**c, specs);
  auto redis = testing::RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::string consumer =
      NodeCHolding(**c, **redis, streams, kNodes * kPerNode);
  ASSERT_FALSE(consumer.empty()) << "node c held nothing in time";
  auto lease = (*redis)->Query({"PTTL", "{jobd}:node:node-c"});
  ASSERT_TRUE(lease.ok()) << lease.status();
  const absl::Time killed = absl::Now();
  ASSERT_TRUE((*c)->daemon(2).Stop(SIGKILL, absl::Seconds(10)).ok());
  const int64_t held = testing::PendingOf(**redis, 4, consumer);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return testing::PendingOf(**redis, 4, consumer) == 0; },
      absl::Seconds(30)));
  const absl::Duration reclaim = absl::Now() - killed;
  const absl::Duration after_expiry =
      reclaim - absl::Milliseconds(lease->integer);
  streams[2]->Cancel();
  std::fprintf(stderr,
               "node-c killed holding %ld entries; reclaimed %.2f s after "
               "the kill, %.2f s after its lease expired (bound %.1f s)\n",
               held, absl::ToDoubleSeconds(reclaim),
               absl::ToDoubleSeconds(after_expiry),
               absl::ToDoubleSeconds(testing::kTestNodeTtl +
                                     testing::kTestReaperPeriod));
  // The bound, with a loaded machine's slack (Redis is polled).
  EXPECT_LE(reclaim, testing::kTestNodeTtl + testing::kTestReaperPeriod +
                         absl::Seconds(1));

  // c again, on its journal: a new epoch.
  ASSERT_TRUE((*c)->Restart(2, kNodes).ok());
  EXPECT_NE(
      absl::StrCat("node-c:",
                   testing::GetStats((*c)->stub(2)).cluster().node_epoch()),
      consumer);
  ASSERT_TRUE(AllEnded(streams, specs, 2, **c, absl::Seconds(90)));
  // Each job c accepted before it died ends there, and an at-most-once
  // one began at most once.
  const std::vector<LoadStream::Item> at_c = streams[2]->items();
  size_t accepted = 0;
  for (size_t i = 0; i < at_c.size(); ++i) {
    if (at_c[i].job_id.empty()) continue;
    ++accepted;
    const v1::JobSpec& spec = specs[2][i];
    const std::string& line = spec.args(1).string_value();
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(40));
    v1::GetJobRequest req;
    req.set_job_id(at_c[i].job_id);
    req.mutable_wait()->set_seconds(30);
    v1::Job job;
    ASSERT_TRUE((*c)->stub(2).GetJob(&ctx, req, &job).ok()) << line;
    if (job.state() == v1::JOB_STATE_SUCCEEDED) {
      EXPECT_EQ(job.result().value().string_value(), line);
    } else {
      EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED) << line;
      EXPECT_EQ(job.error().reason(), v1::ERROR_REASON_LOST_ON_RESTART) << line;
    }
  }
  const auto runs = testing::ReadLedger(ledger);
  for (size_t i = 0; i < specs[2].size(); ++i) {
    const auto r = runs.find(specs[2][i].args(1).string_value());
    if (specs[2][i].delivery() != v1::DELIVERY_AT_LEAST_ONCE &&
        r != runs.end()) {
      EXPECT_LE(r->second, 1) << r->first;
    }
  }
  Tally tally;
  for (int i = 0; i < 2; ++i) {
    Check(streams[i]->items(), specs[i], runs, true, tally);
  }
  const WorkSum w = SumWork(**c, {0, 1});
  std::fprintf(stderr,
               "a and b: %d succeeded, %d lost, %d duplicate runs; c had "
               "accepted %zu; a+b reclaimed %lu lost %lu\n",
               tally.succeeded, tally.lost, tally.duplicates, accepted,
               w.reclaimed, w.lost);
  EXPECT_GE(w.reclaimed, static_cast<uint64_t>(held));
}
// A node stopped (SIGTERM) under load, packed, hands back what it took
// and has not run before it leaves: nothing stays pending under it in
// Redis once it exited, no node reclaims anything, and every job
// submitted at the other two ends SUCCEEDED, an at-most-once one begun
// once. It comes back (a new epoch) and takes work again.
TEST(ClusterLoadTest, ANodeStoppedUnderLoadHandsBackAndLosesNothing) {
  auto c =
      StartNodes("jobd-cluster-node-stop", LoadNodes({"--cluster-pack", "16"}));
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  constexpr int kPerNode = 1500;
  // c submits nothing: it only runs.
  const auto specs = LoadSpecs(ledger, 2, kPerNode, 20);
  const auto streams = StreamAll(**c, specs);
  auto redis = testing::RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::string consumer =
      NodeCHolding(**c, **redis, streams, 2 * kPerNode);
  ASSERT_FALSE(consumer.empty()) << "node c held nothing in time";
  const int64_t held = testing::PendingOf(**redis, 4, consumer);
  ASSERT_TRUE((*c)->daemon(2).Stop(SIGTERM, absl::Seconds(30)).ok());
  // Gone, and nothing left under it for a reclaim.
  EXPECT_EQ(testing::PendingOf(**redis, 4, consumer), 0);
  std::fprintf(stderr, "node-c stopped holding %ld entries\n", held);
  ASSERT_TRUE((*c)->Restart(2, kNodes).ok());
  ASSERT_TRUE(AllEnded(streams, specs, 2, **c, absl::Seconds(90)));
  const auto runs = testing::ReadLedger(ledger);
  Tally tally;
  for (int i = 0; i < 2; ++i) {
    Check(streams[i]->items(), specs[i], runs, false, tally);
  }
  EXPECT_EQ(tally.succeeded, 2 * kPerNode);
  EXPECT_EQ(tally.lost, 0);
  const WorkSum w = SumWork(**c, {0, 1, 2});
  EXPECT_EQ(w.reclaimed, 0u);
  EXPECT_EQ(w.lost, 0u);
}

}  // namespace
}  // namespace jobd
