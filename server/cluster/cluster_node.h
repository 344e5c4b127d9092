// ClusterNode: cluster mode in one object, which the daemon builds only
// with --cluster. It owns a thread of its own ("jobd-cluster") running an
// Asio io_context, two Redis connections on it (one for commands, one kept
// apart for blocking reads, so that a blocking read never stalls the
// commands behind it) and the Membership (this node's lease, the registry
// and the reaper). Without --cluster none of it exists: the daemon's hot
// path is untouched.
//
// What it does today: membership with leases and the reaper, shown in
// GetStats (AddStats). Work sharing over the partition streams is not
// built yet (docs/SCALE-OUT.md says what is and is not).
//
// Thread-safety: Start and Stop from the owner's thread; AddStats from any
// thread (gRPC's). Ownership: owns its thread, io_context, connections and
// membership; Stop (also run by the destructor) joins the thread.
#ifndef JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_
#define JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_

#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "server/cluster/cluster_options.h"
#include "server/cluster/membership.h"
#include "server/cluster/redis_connection.h"

namespace jobd {
namespace v1 {
class GetStatsResponse;
}  // namespace v1

namespace cluster {

class ClusterNode {
 public:
  explicit ClusterNode(ClusterOptions options);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Starts the thread, connects and joins (in the background: Redis may be
  // down at start; the node keeps trying with backoff). Once.
  void Start();
  // Stops the membership and the connections and joins the thread.
  // Idempotent.
  void Stop();

  // Fills GetStatsResponse.cluster.
  void AddStats(v1::GetStatsResponse& stats) const;
  MembershipSnapshot Snapshot() const { return membership_->Snapshot(); }
  const ClusterOptions& options() const { return options_; }

 private:
  const ClusterOptions options_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::shared_ptr<RedisConnection> commands_;
  std::shared_ptr<RedisConnection> blocking_;
  std::shared_ptr<Membership> membership_;
  std::thread thread_;
  bool started_ = false, stopped_ = false;  // The owner's thread.
};

}  // namespace cluster
}  // namespace jobd

#endif  // JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_
