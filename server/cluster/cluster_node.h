// ClusterNode: cluster mode in one object, which the daemon builds only
// with --cluster. It owns a thread of its own ("jobd-cluster") running an
// Asio io_context, four Redis connections on it (one for commands, three
// kept apart for blocking reads: taking work, reading results, and the
// router's requests and replies, so that a blocking read never stalls the
// commands behind it) and the Membership (this
// node's lease, the registry and the reaper). Without --cluster none of it
// exists: the daemon's hot path is untouched.
//
// What it does: membership with leases and the reaper, and (ShareWork)
// work sharing over the partition streams (work_sharing.h), shown in
// GetStats (AddStats), and other nodes' jobs reached from here
// (job_router.h); docs/SCALE-OUT.md says what is and is not built.
//
// Thread-safety: Start, Settle and Stop from the owner's thread; AddStats from
// any thread (gRPC's). Ownership: owns its thread, io_context, connections and
// membership; Stop (also run by the destructor) joins the thread.
#ifndef JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_
#define JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_

#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "server/cluster/cluster_options.h"
#include "server/cluster/job_router.h"
#include "server/cluster/key_claims.h"
#include "server/cluster/membership.h"
#include "server/cluster/redis_connection.h"
#include "server/cluster/work_sharing.h"

namespace jobd {
class Scheduler;
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

  // Turns work sharing on (work_sharing.h): jobs `scheduler` cannot start
  // now are published, and this node takes others' when it is idle.
  // `make_job` validates a taken spec as a Submit's. Also builds the
  // JobRouter (job_router.h: other nodes' jobs reached from here, this
  // node's from others, withdrawals of shared jobs) and makes idempotency
  // keys unique across the cluster (key_claims.h); an ended job's claim
  // lasts `retention` (the node's retention of ended jobs). Before Start
  // and the scheduler's Restore.
  void ShareWork(Scheduler& scheduler, MakeJob make_job,
                 absl::Duration retention);
  // What the frontend asks for other nodes' jobs (after ShareWork).
  RemoteJobs* remote_jobs() const { return router_.get(); }

  // Starts the thread, connects and joins (in the background: Redis may be
  // down at start; the node keeps trying with backoff). Once.
  void Start();
  // Waits (up to `deadline`) until what the scheduler handed back or ended
  // of other nodes' jobs reached Redis (WorkSharing::Settle): the daemon,
  // stopping, calls it after ending its jobs and before Stop. True if it
  // did (or there is no work sharing).
  bool Settle(absl::Time deadline);
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
  std::shared_ptr<RedisConnection> results_;  // Work sharing's reads.
  std::shared_ptr<RedisConnection> rpc_;      // The router's reads.
  std::shared_ptr<Membership> membership_;
  std::shared_ptr<WorkStream> stream_;
  std::shared_ptr<WorkSharing> work_;  // With ShareWork.
  std::shared_ptr<JobRouter> router_;  // With ShareWork.
  std::shared_ptr<KeyClaims> claims_;  // With ShareWork.
  std::thread thread_;
  bool started_ = false, stopped_ = false;  // The owner's thread.
};

}  // namespace cluster
}  // namespace jobd

#endif  // JOBD_SERVER_CLUSTER_CLUSTER_NODE_H_
