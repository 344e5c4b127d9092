// Helpers of the cluster mode tests that run real jobd nodes on one real
// redis-server (tests/redis/redis_server.h): a node's command line, the
// testing task `ledger` (it appends a line to a file as it begins: the
// ledger counts the runs), waits on membership, listings, and redis-cli.
//
// Thread-safety: plain functions; each call makes its own RPC. Ownership:
// none (the caller owns the daemons and the server).
#ifndef JOBD_TESTS_INTEGRATION_CLUSTER_NODES_H_
#define JOBD_TESTS_INTEGRATION_CLUSTER_NODES_H_

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_server.h"

namespace jobd::testing {

// A node on `redis` named `name` with `threads` thread workers, 4
// partitions and short cluster timings (200 ms heartbeat, 1 s TTL).
inline std::vector<std::string> NodeArgs(const RedisServer& redis,
                                         const std::string& name, int threads) {
  return {"--cluster",
          redis.url(),
          "--node-name",
          name,
          "--cluster-partitions",
          "4",
          "--cluster-heartbeat",
          "200ms",
          "--cluster-node-ttl",
          "1s",
          "--cluster-reaper-period",
          "200ms",
          "--thread-workers",
          std::to_string(threads)};
}

// A job of the testing task `ledger`: appends `line` to `path`, waits
// `ms`, returns `line`.
inline v1::JobSpec Ledger(const std::string& path, const std::string& line,
                          int ms,
                          v1::Delivery delivery = v1::DELIVERY_AT_MOST_ONCE) {
  v1::JobSpec s;
  s.set_task("ledger");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  s.set_executor(v1::EXECUTOR_THREAD);
  s.set_delivery(delivery);
  s.add_args()->set_string_value(path);
  s.add_args()->set_string_value(line);
  s.add_args()->set_number_value(ms);
  return s;
}

// Runs that began, by line.
inline std::map<std::string, int> ReadLedger(const std::string& path) {
  std::map<std::string, int> runs;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) ++runs[line];
  return runs;
}

// Waits until node `stub` joined and sees `nodes` nodes alive.
inline bool Joined(v1::JobService::Stub& stub, int nodes) {
  return WaitFor(
      [&] {
        const v1::GetStatsResponse s = GetStats(stub);
        if (!s.has_cluster() || !s.cluster().redis_connected() ||
            s.cluster().node_epoch() == 0) {
          return false;
        }
        int alive = 0;
        for (const v1::ClusterNode& n : s.cluster().nodes()) alive += n.alive();
        return alive >= nodes;
      },
      absl::Seconds(20));
}

// Jobs of task `ledger` in `states` (any, if empty) that node `stub` holds.
inline std::vector<v1::Job> JobsOn(v1::JobService::Stub& stub,
                                   std::vector<v1::JobState> states) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::ListJobsRequest req;
  for (v1::JobState s : states) req.add_states(s);
  req.set_task("ledger");
  req.set_page_size(1000);
  v1::ListJobsResponse resp;
  EXPECT_TRUE(stub.ListJobs(&ctx, req, &resp).ok());
  return {resp.jobs().begin(), resp.jobs().end()};
}

// The ends of a Submit stream's jobs, by the line each job appends.
inline std::map<std::string, std::vector<v1::JobEvent>> EndsByLine(
    const StreamResult& r, const std::vector<v1::JobSpec>& specs) {
  std::map<std::string, std::vector<v1::JobEvent>> ends;
  for (const v1::JobEvent& e : r.Terminal()) {
    const size_t i = static_cast<size_t>(e.client_tag()) - 1;
    if (i < specs.size()) ends[specs[i].args(1).string_value()].push_back(e);
  }
  return ends;
}

// redis-cli on `redis`'s socket: its output, lines trimmed of the end.
inline std::vector<std::string> RedisCli(const RedisServer& redis,
                                         std::vector<std::string> args) {
  std::vector<std::string> argv = {"/usr/bin/redis-cli", "-s",
                                   redis.socket_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult r = RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_CLUSTER_NODES_H_
