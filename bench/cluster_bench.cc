// cluster_bench: cluster mode (--cluster) with real processes, a
// redis-server and jobd nodes on Unix sockets
// (tests/integration/cluster_fixture.h), each figure against its baseline
// measured in the same run:
//   scale:   10 ms `sleep` jobs, all submitted at one node, run by 1, 2
//            and 3 nodes of --thread-workers 4 (about 400 jobs/s each);
//            against one node without cluster mode
//   through: no-op `echo` jobs submitted at a saturated node (its one
//            thread busy) and run by another, against that other node
//            alone without cluster mode: jobs/s, and CPU per job of the
//            nodes and of Redis (INFO cpu), once per --cluster-pack size
//   reclaim: a node killed (SIGKILL) while it runs an at-least-once job
//            of another's: time from the kill, and from its lease's
//            expiry, to the job's reclaim and to its end at its
//            submitter; p50/p99 over rounds
// See bench/README.md.
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "grpcpp/grpcpp.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_client.h"

namespace jobd::bench {
namespace {

using testing::LoadStream;
using testing::NodeConfig;
using testing::TestCluster;

// Options every node gets: no process pool (a node takes shared work only
// while each of its executors has room), quiet logs.
const std::vector<std::string> kQuiet = {"--process-workers", "0",
                                         "--log-level", "warn"};

std::vector<std::string> With(std::vector<std::string> a,
                              const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// User + system CPU seconds of `pid` so far.
double CpuSeconds(pid_t pid) {
  const std::string stat =
      testing::ReadProcFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f =
      absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
  // Fields 14 and 15 of stat(5): the 12th and 13th after the name.
  if (f.size() < 13) return 0;
  return (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

double RedisCpu(testing::RedisClient& redis) {
  auto user = redis.InfoNumber("cpu", "used_cpu_user");
  auto sys = redis.InfoNumber("cpu", "used_cpu_sys");
  return user.ok() && sys.ok() ? *user + *sys : 0;
}

v1::JobSpec ThreadJob(const std::string& task, double arg) {
  v1::JobSpec s = testing::Spec(task, {arg});
  s.set_executor(v1::EXECUTOR_THREAD);
  return s;
}

struct RunResult {
  double seconds = 0;
  size_t failed = 0;
  bool complete = false;
};

// `specs` on one stream to `stub`, until every job ended.
// `cluster` (if given): whose node 0 `stub` is, to show what became of
// jobs that did not end.
RunResult RunAll(v1::JobService::Stub& stub, std::vector<v1::JobSpec> specs,
                 absl::Duration limit, TestCluster* cluster = nullptr) {
  RunResult r;
  const size_t n = specs.size();
  const absl::Time start = absl::Now();
  LoadStream s(stub, std::move(specs), 1000);
  r.complete = s.Wait(limit);
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (const LoadStream::Item& item : s.items()) {
    r.failed += item.ends.size() != 1 ||
                item.ends[0].type() != v1::EVENT_TYPE_SUCCEEDED;
  }
  if (!r.complete) {
    std::fprintf(stderr, "  only %zu of %zu jobs ended\n", s.ended(), n);
    if (cluster != nullptr) {
      std::fprintf(
          stderr, "%s\n",
          testing::Unended(s, stub, cluster->redis(), cluster->config(0).name)
              .c_str());
    }
  }
  return r;
}

// ------------------------------------------------------------------ scale
void Scale(int per_node, int threads, int max_nodes) {
  std::printf(
      "\n## scale: 10 ms sleep jobs at one node, --thread-workers %d per "
      "node (ideal %d jobs/s per node)\n\n",
      threads, threads * 100);
  std::printf(
      "| nodes | jobs | s | jobs/s | x one node | shared | run by node |\n"
      "|---|---|---|---|---|---|---|\n");
  auto spec_list = [](int n) {
    return std::vector<v1::JobSpec>(n, ThreadJob("sleep", 10));
  };
  double base = 0;
  {
    auto d = testing::Daemon::Start(
        With({"--thread-workers", std::to_string(threads)}, kQuiet));
    if (!d.ok()) {
      std::fprintf(stderr, "jobd: %s\n", d.status().ToString().c_str());
      return;
    }
    RunResult r =
        RunAll(*(*d)->NewStub(), spec_list(per_node), absl::Seconds(600));
    base = per_node / r.seconds;
    std::printf("| 1, no cluster | %d | %.2f | %.0f | 1.00 | - | - |\n",
                per_node, r.seconds, base);
  }
  for (int nodes = 1; nodes <= max_nodes; ++nodes) {
    std::vector<NodeConfig> configs;
    for (int i = 0; i < nodes; ++i) {
      configs.push_back({absl::StrCat("node-", i), threads, kQuiet});
    }
    auto c = testing::StartNodes("jobd-bench-scale", std::move(configs));
    if (!c.ok()) {
      std::fprintf(stderr, "cluster: %s\n", c.status().ToString().c_str());
      return;
    }
    const int jobs = per_node * nodes;
    RunResult r =
        RunAll((*c)->stub(0), spec_list(jobs), absl::Seconds(600), c->get());
    std::string by_node;
    uint64_t published = 0;
    for (int i = 0; i < nodes; ++i) {
      const v1::ClusterWork w = testing::Work((*c)->stub(i));
      published += w.published();
      absl::StrAppend(&by_node, i == 0 ? "" : " / ", w.completed());
    }
    std::printf(
        "| %d | %d | %.2f | %.0f | %.2f | %.0f%% | %s |%s\n", nodes, jobs,
        r.seconds, jobs / r.seconds, jobs / r.seconds / base,
        100.0 * published / jobs, by_node.c_str(),
        r.failed > 0 ? absl::StrCat(" ", r.failed, " failed").c_str() : "");
    std::fflush(stdout);
  }
}

// ---------------------------------------------------------------- through
std::string ListRunning(v1::JobService::Stub& stub) {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(10));
  v1::ListJobsRequest req;
  req.add_states(v1::JOB_STATE_RUNNING);
  req.set_task("sleep");
  v1::ListJobsResponse resp;
  if (!stub.ListJobs(&ctx, req, &resp).ok() || resp.jobs().empty()) return "";
  return resp.jobs(0).id();
}

// A cluster whose first node has one thread worker, held by a long sleep
// job: it shares every job submitted to it and takes none. Stopping it
// cancels the sleep. A Redis client beside it.
struct BusyFirstNode {
  std::unique_ptr<TestCluster> cluster;
  std::unique_ptr<LoadStream> blocker;
  std::string blocker_id;
  std::unique_ptr<testing::RedisClient> redis;

  ~BusyFirstNode() {
    if (blocker == nullptr) return;
    (void)testing::CancelJob(cluster->stub(0), blocker_id);
    blocker->Wait(absl::Seconds(10));
  }
};

// `nodes`' first must have one thread worker.
std::unique_ptr<BusyFirstNode> StartBusyFirstNode(
    const std::string& prefix, std::vector<NodeConfig> nodes) {
  auto c = testing::StartNodes(prefix, std::move(nodes));
  if (!c.ok()) {
    std::fprintf(stderr, "cluster: %s\n", c.status().ToString().c_str());
    return nullptr;
  }
  auto busy = std::make_unique<BusyFirstNode>();
  busy->cluster = *std::move(c);
  TestCluster& cluster = *busy->cluster;
  busy->blocker = std::make_unique<LoadStream>(
      cluster.stub(0), std::vector<v1::JobSpec>{ThreadJob("sleep", 3600000)},
      1);
  testing::WaitFor(
      [&] {
        return !(busy->blocker_id = ListRunning(cluster.stub(0))).empty();
      },
      absl::Seconds(10));
  auto redis = testing::RedisClient::Connect(cluster.redis().socket_path());
  if (!redis.ok()) {
    std::fprintf(stderr, "redis: %s\n", redis.status().ToString().c_str());
    return nullptr;
  }
  busy->redis = *std::move(redis);
  return busy;
}

void Through(int jobs, int threads, const std::vector<int>& packs) {
  std::printf(
      "\n## through: %d no-op echo jobs, run by a node of --thread-workers "
      "%d\n\n",
      jobs, threads);
  std::printf(
      "| path | jobs/s | x alone | jobd CPU µs/job (submitter + runner) | "
      "Redis CPU µs/job |\n|---|---|---|---|---|\n");
  auto specs = [&] {
    return std::vector<v1::JobSpec>(jobs, ThreadJob("echo", 1));
  };
  double alone = 0;
  {
    auto d = testing::Daemon::Start(
        With({"--thread-workers", std::to_string(threads)}, kQuiet));
    if (!d.ok()) return;
    const double cpu0 = CpuSeconds((*d)->pid());
    RunResult r = RunAll(*(*d)->NewStub(), specs(), absl::Seconds(300));
    const double cpu = CpuSeconds((*d)->pid()) - cpu0;
    alone = jobs / r.seconds;
    std::printf("| one node, no cluster | %.0f | 1.00 | %.1f | - |\n", alone,
                1e6 * cpu / jobs);
  }
  // a's one thread busy: it shares every job and takes none. Once per
  // pack size.
  for (int pack : packs) {
    const std::vector<std::string> opts =
        With(kQuiet, {"--cluster-pack", std::to_string(pack)});
    std::unique_ptr<BusyFirstNode> busy = StartBusyFirstNode(
        "jobd-bench-through", {{"node-a", 1, opts}, {"node-b", threads, opts}});
    if (busy == nullptr) return;
    TestCluster* c = busy->cluster.get();
    testing::RedisClient* redis = busy->redis.get();
    const double redis0 = RedisCpu(*redis);
    const double a0 = CpuSeconds(c->daemon(0).pid());
    const double b0 = CpuSeconds(c->daemon(1).pid());
    RunResult r = RunAll(c->stub(0), specs(), absl::Seconds(300));
    const double a = CpuSeconds(c->daemon(0).pid()) - a0;
    const double b = CpuSeconds(c->daemon(1).pid()) - b0;
    const double rcpu = RedisCpu(*redis) - redis0;
    const v1::ClusterWork wb = testing::Work(c->stub(1));
    std::printf(
        "| submitted at a (busy), run by b, --cluster-pack %d | %.0f | %.2f | "
        "%.1f (%.1f + %.1f) | %.1f |\n",
        pack, jobs / r.seconds, jobs / r.seconds / alone, 1e6 * (a + b) / jobs,
        1e6 * a / jobs, 1e6 * b / jobs, 1e6 * rcpu / jobs);
    std::fprintf(stderr, "(pack %d: b ran %lu of them; %zu failed)\n", pack,
                 wb.completed(), r.failed);
  }
}

// ---------------------------------------------------------------- reclaim
struct Times {
  std::vector<double> ms;
  double P(double q) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))];
  }
};

void Reclaim(int rounds, int job_ms, const std::vector<std::string>& timing) {
  std::printf(
      "\n## reclaim: kill -9 of the node running an at-least-once job "
      "(%d ms), %d rounds; %s\n\n",
      job_ms, rounds, absl::StrJoin(timing, " ").c_str());
  const std::vector<std::string> opts = With(kQuiet, timing);
  // a submits, its one thread busy; b and c take (either may).
  std::unique_ptr<BusyFirstNode> busy = StartBusyFirstNode(
      "jobd-bench-reclaim",
      {{"node-a", 1, opts}, {"node-b", 2, opts}, {"node-c", 2, opts}});
  if (busy == nullptr) return;
  TestCluster* c = busy->cluster.get();
  testing::RedisClient* redis = busy->redis.get();
  const int partitions = 4;
  Times to_reclaim, to_end, expiry_to_end, expiry_to_reclaim;
  for (int round = 0; round < rounds; ++round) {
    v1::JobSpec spec =
        testing::Ledger(c->dir() + "/ledger", absl::StrCat("r", round), job_ms,
                        v1::DELIVERY_AT_LEAST_ONCE);
    absl::Time ended = absl::InfinitePast();
    std::thread reader([&] {
      testing::StreamResult r = testing::SubmitAll(c->stub(0), {spec});
      ended = absl::Now();
    });
    // Its holder: b or c.
    size_t holder = 0;
    testing::WaitFor(
        [&] {
          for (size_t i : {1, 2}) {
            const std::string prefix = c->config(i).name + ":";
            if (testing::PendingOf(*redis, partitions, prefix) > 0) {
              holder = i;
            }
          }
          return holder != 0;
        },
        absl::Seconds(10));
    if (holder == 0) {
      std::fprintf(stderr, "round %d: nobody took the job\n", round);
      reader.join();
      continue;
    }
    const std::string prefix = c->config(holder).name + ":";
    auto pttl = redis->Query({"PTTL", "{jobd}:node:" + c->config(holder).name});
    const absl::Time killed = absl::Now();
    (void)c->daemon(holder).Stop(SIGKILL, absl::Seconds(10));
    const absl::Time expiry =
        killed + absl::Milliseconds(pttl.ok() ? pttl->integer : 0);
    testing::WaitFor(
        [&] { return testing::PendingOf(*redis, partitions, prefix) == 0; },
        absl::Seconds(60));
    const absl::Time reclaimed = absl::Now();
    reader.join();
    to_reclaim.ms.push_back(absl::ToDoubleMilliseconds(reclaimed - killed));
    expiry_to_reclaim.ms.push_back(
        absl::ToDoubleMilliseconds(reclaimed - expiry));
    to_end.ms.push_back(absl::ToDoubleMilliseconds(ended - killed));
    expiry_to_end.ms.push_back(absl::ToDoubleMilliseconds(ended - expiry));
    std::fprintf(stderr,
                 "round %d: %s killed, reclaimed after %.0f ms, ended after "
                 "%.0f ms\n",
                 round, c->config(holder).name.c_str(), to_reclaim.ms.back(),
                 to_end.ms.back());
    if (absl::Status s = c->Restart(holder, 3); !s.ok()) {
      std::fprintf(stderr, "restart: %s\n", s.ToString().c_str());
      break;
    }
  }
  std::printf(
      "| from | to | p50 ms | p99 ms |\n|---|---|---|---|\n"
      "| kill | reclaimed (its entry moved) | %.0f | %.0f |\n"
      "| lease expiry | reclaimed | %.0f | %.0f |\n"
      "| kill | end at the submitter's client | %.0f | %.0f |\n"
      "| lease expiry | end at the submitter's client | %.0f | %.0f |\n",
      to_reclaim.P(0.5), to_reclaim.P(0.99), expiry_to_reclaim.P(0.5),
      expiry_to_reclaim.P(0.99), to_end.P(0.5), to_end.P(0.99),
      expiry_to_end.P(0.5), expiry_to_end.P(0.99));
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) {
  CLI::App app{"cluster mode against its baselines (bench/README.md)"};
  std::string only;
  int scale_jobs = 4000, scale_threads = 4, scale_nodes = 3;
  int through_jobs = 20000, through_threads = 2;
  std::vector<int> through_packs = {1, 32};
  int rounds = 15, job_ms = 200;
  std::string heartbeat = "200ms", ttl = "1s", reaper = "200ms";
  app.add_option("--only", only, "scale, through or reclaim (default: all)");
  app.add_option("--scale-jobs", scale_jobs, "scale: jobs per node")
      ->capture_default_str();
  app.add_option("--scale-threads", scale_threads,
                 "scale: --thread-workers of each node")
      ->capture_default_str();
  app.add_option("--scale-nodes", scale_nodes, "scale: up to this many nodes")
      ->capture_default_str();
  app.add_option("--through-jobs", through_jobs, "through: jobs")
      ->capture_default_str();
  app.add_option("--through-packs", through_packs,
                 "through: the --cluster-pack sizes to run, one run each")
      ->delimiter(',');
  app.add_option("--through-threads", through_threads,
                 "through: --thread-workers of the node that runs them")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "reclaim: rounds")->capture_default_str();
  app.add_option("--job-ms", job_ms, "reclaim: the job's length")
      ->capture_default_str();
  app.add_option("--heartbeat", heartbeat, "reclaim: --cluster-heartbeat")
      ->capture_default_str();
  app.add_option("--ttl", ttl, "reclaim: --cluster-node-ttl")
      ->capture_default_str();
  app.add_option("--reaper", reaper, "reclaim: --cluster-reaper-period")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  utsname u{};
  uname(&u);
  std::printf("# cluster_bench on %s (%ld CPUs), Linux %s\n",
              jobd::bench::CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN),
              u.release);
  if (only.empty() || only == "scale") {
    jobd::bench::Scale(scale_jobs, scale_threads, scale_nodes);
  }
  if (only.empty() || only == "through") {
    jobd::bench::Through(through_jobs, through_threads, through_packs);
  }
  if (only.empty() || only == "reclaim") {
    jobd::bench::Reclaim(
        rounds, job_ms,
        {"--cluster-heartbeat", heartbeat, "--cluster-node-ttl", ttl,
         "--cluster-reaper-period", reaper});
  }
  return 0;
}
