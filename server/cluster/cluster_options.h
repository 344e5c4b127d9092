// ClusterOptions: cluster mode's settings (--cluster and the cluster-*
// options; server/config parses and checks them), and the Redis key
// layout every node shares. Every key carries a hash tag ({jobd} for
// membership, {jobd:pN} for partition N) so that the layout works
// unchanged on Redis Cluster: a tag's keys live in one slot, and a script
// touches one tag's keys only. docs/SCALE-OUT.md lists them.
//
// Thread-safety: plain values and pure functions. Ownership: none.
#ifndef JOBD_SERVER_CLUSTER_CLUSTER_OPTIONS_H_
#define JOBD_SERVER_CLUSTER_CLUSTER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/cluster/redis_endpoint.h"

namespace jobd::cluster {

struct ClusterOptions {
  std::string url;        // --cluster as given; empty: cluster mode is off.
  RedisEndpoint redis;    // Parsed from url.
  std::string node_name;  // --node-name; unique in the cluster.
  int partitions = 16;    // --cluster-partitions.
  // A node renews its lease (its liveness key's TTL) every `heartbeat`; a
  // node that stops renewing is dead once `node_ttl` passed, and the
  // others' reapers, which look every `reaper_period`, see it dead within
  // node_ttl + reaper_period of its last renewal.
  absl::Duration heartbeat = absl::Seconds(1);
  absl::Duration node_ttl = absl::Seconds(5);
  absl::Duration reaper_period = absl::Seconds(1);
  // --cluster-max-deliveries: a shared job reclaimed past this many
  // deliveries is dead-lettered (0: never).
  int max_deliveries = 5;
  // --cluster-pack: at most this many shared jobs of one partition go in
  // one stream entry (published, taken, renewed and reclaimed together;
  // completed one by one). A pack is taken whole: what of it cannot start
  // at once queues on its taker, and if that node dies or restarts, its
  // at-most-once jobs end LOST_ON_RESTART though they never began; hence
  // 1 by default.
  int pack = 1;
  // --cluster-results-ttl: results older than this are trimmed from the
  // results streams (MINID), read or not (their node is gone).
  absl::Duration results_ttl = absl::Hours(24);

  bool enabled() const { return !url.empty(); }
  // The bound after which every live node has seen a dead one dead.
  absl::Duration detection_bound() const { return node_ttl + reaper_period; }
};

// The keys (hash-tagged).
namespace keys {
inline constexpr std::string_view kTag = "{jobd}";
// Counter: each time a node joins it takes the next epoch.
inline std::string Epoch() { return "{jobd}:epoch"; }
// Hash: node name -> its epoch (the registry).
inline std::string Nodes() { return "{jobd}:nodes"; }
// Hash: node name -> "<epoch>:<unix ms found dead>" (nodes found dead).
inline std::string Dead() { return "{jobd}:dead"; }
// String with a TTL: a node's lease; holds its epoch.
inline std::string NodePrefix() { return "{jobd}:node:"; }
inline std::string Node(std::string_view name) {
  return NodePrefix() + std::string(name);
}
// FNV-1a: what picks a partition (a job's, a key's), the same on every
// node and at every start (a job's publication marker lives there).
inline uint64_t Fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
// A partition's keys share the tag {jobd:p<N>}.
inline std::string Partition(int p, std::string_view suffix) {
  return "{jobd:p" + std::to_string(p) + "}:" + std::string(suffix);
}
}  // namespace keys

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_CLUSTER_OPTIONS_H_
