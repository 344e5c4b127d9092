#include "server/config/cluster_config.h"

#include <unistd.h>

#include <tuple>

#include "CLI/CLI.hpp"
#include "server/config/duration_flag.h"
#include "server/jobs/job_id.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

void AddClusterFlags(CLI::App& app, cluster::ClusterOptions& options,
                     ClusterFlags& flags) {
  app.add_option("--cluster", options.url,
                 "Cluster mode (preview): the Redis server the nodes share, "
                 "redis://HOST:PORT/DB or unix:///path/to/redis.sock; empty "
                 "(the default): no cluster, nothing touches Redis");
  app.add_option("--node-name", options.node_name,
                 "This node's name in the cluster, unique among its nodes "
                 "(letters, digits, '.', '_', '-'; default: the host name)");
  app.add_option("--cluster-partitions", options.partitions,
                 "Partitions of the cluster's work (the same on every node)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--cluster-heartbeat", flags.heartbeat,
                 "How often a node renews its lease in Redis")
      ->capture_default_str();
  app.add_option("--cluster-node-ttl", flags.node_ttl,
                 "A node's lease: one that has not renewed it for this long "
                 "is dead (at least twice --cluster-heartbeat)")
      ->capture_default_str();
  app.add_option("--cluster-reaper-period", flags.reaper_period,
                 "How often a node looks for dead nodes; a dead node is seen "
                 "within --cluster-node-ttl plus this")
      ->capture_default_str();
  app.add_option("--cluster-max-deliveries", options.max_deliveries,
                 "A shared job taken this many times (its node died each "
                 "time) goes to its partition's dead-letter stream and "
                 "fails; 0: never")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--cluster-pack", options.pack,
                 "At most this many shared jobs go in one stream entry: "
                 "jobs shared at once travel together, taken by one node, "
                 "which queues what it cannot start (should it die or "
                 "restart, those of them that are at-most-once fail "
                 "LOST_ON_RESTART unstarted); faster for many short jobs")
      ->capture_default_str()
      ->check(CLI::Range(1, 512));
  app.add_option("--cluster-results-ttl", flags.results_ttl,
                 "Ends of shared jobs not read by their node (it is down) "
                 "are trimmed from the results streams after this long")
      ->capture_default_str();
}

absl::Status FinishClusterConfig(const ClusterFlags& flags,
                                 cluster::ClusterOptions& options) {
  for (auto [text, flag, out] :
       {std::tuple(&flags.heartbeat, "cluster-heartbeat", &options.heartbeat),
        std::tuple(&flags.node_ttl, "cluster-node-ttl", &options.node_ttl),
        std::tuple(&flags.reaper_period, "cluster-reaper-period",
                   &options.reaper_period),
        std::tuple(&flags.results_ttl, "cluster-results-ttl",
                   &options.results_ttl)}) {
    if (absl::Status s = ParseDurationFlag(*text, flag, out, false); !s.ok()) {
      return s;
    }
  }
  if (options.heartbeat < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError(
        "--cluster-heartbeat: at least 10ms (each beat is a Redis command)");
  }
  if (options.reaper_period < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError(
        "--cluster-reaper-period: at least 10ms (each look is a Redis "
        "script over the registry)");
  }
  if (options.node_ttl < 2 * options.heartbeat) {
    return absl::InvalidArgumentError(fmt::format(
        "--cluster-node-ttl: {} is less than twice --cluster-heartbeat ({}); "
        "one late beat would lose the lease",
        absl::FormatDuration(options.node_ttl),
        absl::FormatDuration(options.heartbeat)));
  }
  if (options.results_ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--cluster-results-ttl: at least 1s (a live node reads its results "
        "at once)");
  }
  if (options.node_ttl > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        "--cluster-node-ttl: at most 1h (a dead node's work waits that long)");
  }
  if (options.node_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
      if (options.url.empty()) return absl::OkStatus();
      return absl::InvalidArgumentError(
          "--node-name: not given and the host name is unknown; name this "
          "node");
    }
    options.node_name = host;
    if (absl::Status s = CheckNodeName(options.node_name,
                                       "--node-name (default: the host name)");
        !s.ok()) {
      if (options.url.empty()) {
        options.node_name.clear();  // Not used without a cluster.
        return absl::OkStatus();
      }
      return s;
    }
  } else if (absl::Status s = CheckNodeName(options.node_name, "--node-name");
             !s.ok()) {
    return s;
  }
  if (options.url.empty()) return absl::OkStatus();
  absl::StatusOr<cluster::RedisEndpoint> redis =
      cluster::ParseRedisUrl(options.url, "--cluster");
  if (!redis.ok()) return redis.status();
  options.redis = *std::move(redis);
  return absl::OkStatus();
}

}  // namespace jobd
