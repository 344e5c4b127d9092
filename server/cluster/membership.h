// Membership: this node's place in the cluster, and what it sees of the
// others, through Redis (keys in cluster_options.h).
//
// Joining: a script takes the next epoch ({jobd}:epoch), writes the node's
// lease ({jobd}:node:<name>, its epoch, with a TTL of node_ttl), enters it
// in the registry ({jobd}:nodes) and takes it off the dead list. Every
// `heartbeat` a second script renews the lease only if it still holds this
// node's epoch; if it expired (the node stalled, or Redis lost it) or a
// newer incarnation took it, the node has lost its lease: it counts it
// and joins again with a new epoch (work it held under the old epoch is
// no longer its own: the fencing of later work sharing relies on it).
//
// The reaper: every `reaper_period` a script reads the registry and each
// node's lease; a registered node without a lease is dead, and the first
// reaper to see it so records when ({jobd}:dead). A node that stopped
// renewing is thus seen dead by every live node within node_ttl +
// reaper_period of its last renewal. Nodes dead for an hour are dropped
// from the registry. The result is the snapshot GetStats shows.
//
// The scripts touch only keys tagged {jobd}: one slot on Redis Cluster.
// Redis down: the heartbeat and the reaper skip their turn (the snapshot
// keeps its last view, marked disconnected); when the connection comes
// back the node renews at once, or joins again if its lease expired
// meanwhile.
//
// Thread-safety: Start and Stop run on any thread (they post); the work
// runs on the io_context's thread; Snapshot may be called from any thread
// (its own mutex, a leaf). Ownership: holds the command connection shared
// with its owner (ClusterNode).
#ifndef JOBD_SERVER_CLUSTER_MEMBERSHIP_H_
#define JOBD_SERVER_CLUSTER_MEMBERSHIP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "server/cluster/cluster_options.h"
#include "server/cluster/redis_connection.h"

namespace jobd::cluster {

// A node as the registry and the leases show it.
struct NodeView {
  std::string name;
  uint64_t epoch = 0;
  bool alive = false;
  absl::Duration lease_left;  // Alive: the lease's remaining TTL.
  absl::Time dead_since = absl::InfinitePast();  // Dead: when found dead.
  bool self = false;
};

struct MembershipSnapshot {
  uint64_t epoch = 0;  // This node's; 0 before it joined.
  bool redis_connected = false;
  std::vector<NodeView> nodes;  // By name; at most kMaxNodesShown.
  absl::Time last_reap = absl::InfinitePast();
  uint64_t lease_losses = 0;
  uint64_t nodes_declared_dead = 0;
  uint64_t redis_reconnects = 0;
};

class Membership : public std::enable_shared_from_this<Membership> {
 public:
  static constexpr size_t kMaxNodesShown = 1000;
  // Nodes dead longer than this leave the registry.
  static constexpr absl::Duration kForgetDeadAfter = absl::Hours(1);

  static std::shared_ptr<Membership> Create(
      asio::io_context& io, std::shared_ptr<RedisConnection> redis,
      const ClusterOptions& options);
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // Joins and starts the heartbeat and the reaper (the connection must
  // call OnConnectionState: ClusterNode wires it). Before Start, the
  // connection coming up joins nothing: the owner starts it once the node
  // can be asked (ClusterNode: once its router reads).
  void Start();
  // Stops the timers; the lease is left to expire (a node that stops is
  // seen dead like one that died, which is what work sharing needs to
  // reclaim its work).
  void Stop();
  // The connection came up or went down (on the io thread).
  void OnConnectionState(bool up);

  MembershipSnapshot Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Membership(asio::io_context& io, std::shared_ptr<RedisConnection> redis,
             const ClusterOptions& options);
  void Beat();
  void Join();
  void Reap();
  void ArmHeartbeat(absl::Duration after);
  void ArmReaper(absl::Duration after);

  // Const after construction.
  asio::io_context& io_;
  const std::shared_ptr<RedisConnection> redis_;
  const ClusterOptions options_;

  // The io thread's.
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer reaper_timer_;
  bool started_ = false;
  bool stopped_ = false;
  bool joining_ = false;  // A join is in flight.
  bool ever_up_ = false;
  uint64_t epoch_io_ = 0;  // The epoch the io thread renews.

  mutable absl::Mutex mu_;  // A leaf.
  MembershipSnapshot snapshot_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_MEMBERSHIP_H_
