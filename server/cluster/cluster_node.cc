#include "server/cluster/cluster_node.h"

#include <pthread.h>

#include <atomic>
#include <memory>
#include <utility>

#include "absl/synchronization/notification.h"
#include "google/protobuf/util/time_util.h"
#include "jobd/v1/jobd.pb.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd::cluster {
namespace {

using google::protobuf::util::TimeUtil;

RedisConnectionOptions ConnectionOptions(const ClusterOptions& o,
                                         const char* name) {
  RedisConnectionOptions c;
  c.endpoint = o.redis;
  c.name = name;
  // A lost connection is retried well within a lease, so that a short
  // outage costs no lease.
  c.first_backoff = absl::Milliseconds(50);
  c.max_backoff = std::max(absl::Milliseconds(100), o.heartbeat);
  c.reply_timeout = std::max(absl::Seconds(1), o.node_ttl);
  return c;
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

}  // namespace

ClusterNode::ClusterNode(ClusterOptions options)
    : options_(std::move(options)), guard_(io_.get_executor()) {
  commands_ =
      RedisConnection::Create(io_, ConnectionOptions(options_, "commands"));
  blocking_ =
      RedisConnection::Create(io_, ConnectionOptions(options_, "blocking"));
  results_ =
      RedisConnection::Create(io_, ConnectionOptions(options_, "results"));
  rpc_ = RedisConnection::Create(io_, ConnectionOptions(options_, "rpc"));
  membership_ = Membership::Create(io_, commands_, options_);
  stream_ = std::make_shared<WorkStream>(commands_, blocking_);
}

void ClusterNode::ShareWork(Scheduler& scheduler, MakeJob make_job,
                            absl::Duration retention) {
  if (started_ || work_ != nullptr) return;
  work_ = std::make_shared<WorkSharing>(io_, stream_, commands_, results_,
                                        membership_, options_, scheduler,
                                        std::move(make_job));
  router_ = std::make_shared<JobRouter>(io_, commands_, rpc_, membership_,
                                        work_, options_, scheduler);
  // Weak: the router holds work sharing.
  work_->SetWithdraw([router = std::weak_ptr<JobRouter>(router_)](
                         int partition, uint64_t id, int64_t create_ns) {
    if (auto r = router.lock()) r->Withdraw(partition, id, create_ns);
  });
  work_->SetNotify([router = std::weak_ptr<JobRouter>(router_)](
                       const std::string& origin, std::string body) {
    if (auto r = router.lock()) r->Notify(origin, std::move(body));
  });
  scheduler.SetWorkShare(work_.get());
  scheduler.SetRemoteJobs(router_);  // depends_on of other nodes' jobs.
  claims_ = std::make_shared<KeyClaims>(io_, commands_, options_, scheduler,
                                        retention);
  scheduler.SetKeyClaims(claims_.get());
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Start() {
  if (started_) return;
  started_ = true;
  spdlog::info(
      "cluster: node '{}' on {} ({} partitions; heartbeat {}, lease {}, "
      "reaper every {}: a dead node is seen within {})",
      options_.node_name, options_.redis.ToString(), options_.partitions,
      absl::FormatDuration(options_.heartbeat),
      absl::FormatDuration(options_.node_ttl),
      absl::FormatDuration(options_.reaper_period),
      absl::FormatDuration(options_.detection_bound()));
  // On the io thread; both outlive the connection's use of them.
  commands_->SetStateListener(
      [m = membership_, w = work_, k = claims_](bool up) {
        m->OnConnectionState(up);
        if (w != nullptr) w->OnConnectionState(up);
        if (k != nullptr) k->OnConnectionState(up);
      });
  commands_->Start();
  blocking_->Start();
  results_->Start();
  rpc_->Start();
  if (work_ != nullptr) work_->Start();
  if (router_ != nullptr) {
    // Seen alive only once asking it works: a request sent before its
    // router's reads began would be skipped as stale.
    router_->Start([m = membership_] { m->Start(); });
  } else {
    membership_->Start();
  }
  if (claims_ != nullptr) claims_->Start();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "jobd-cluster");
    // Handlers catch nothing of ours; a library exception is a bug, but it
    // must not take the daemon down silently.
    for (int i = 0; i < 1000; ++i) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("cluster: the io thread caught: {}", e.what());
      }
    }
  });
}

bool ClusterNode::Settle(absl::Time deadline) {
  if (work_ == nullptr || !started_ || stopped_) return true;
  struct Outcome {
    absl::Notification done;
    std::atomic<bool> settled{false};
  };
  auto outcome = std::make_shared<Outcome>();
  work_->Settle([outcome](bool settled) {
    outcome->settled = settled;
    outcome->done.Notify();
  });
  return outcome->done.WaitForNotificationWithDeadline(deadline) &&
         outcome->settled;
}

void ClusterNode::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (claims_ != nullptr) claims_->Stop();
  if (work_ != nullptr) work_->Stop();
  if (router_ != nullptr) router_->Stop();
  membership_->Stop();
  commands_->Stop();
  blocking_->Stop();
  results_->Stop();
  rpc_->Stop();
  guard_.reset();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    io_.run();  // Never started: run what Stop posted.
  }
}

void ClusterNode::AddStats(v1::GetStatsResponse& stats) const {
  const MembershipSnapshot s = membership_->Snapshot();
  v1::ClusterStats& c = *stats.mutable_cluster();
  c.set_node_name(options_.node_name);
  c.set_node_epoch(s.epoch);
  c.set_redis(options_.redis.ToString());
  c.set_redis_connected(commands_->connected());
  c.set_partitions(static_cast<uint32_t>(options_.partitions));
  *c.mutable_heartbeat() = ToProtoDuration(options_.heartbeat);
  *c.mutable_node_ttl() = ToProtoDuration(options_.node_ttl);
  *c.mutable_reaper_period() = ToProtoDuration(options_.reaper_period);
  c.set_lease_losses(s.lease_losses);
  c.set_nodes_declared_dead(s.nodes_declared_dead);
  c.set_redis_reconnects(s.redis_reconnects);
  if (s.last_reap != absl::InfinitePast()) {
    *c.mutable_last_reap() = ToProtoTime(s.last_reap);
  }
  if (work_ != nullptr) {
    const WorkSharingStats w = work_->Stats();
    v1::ClusterWork& out = *c.mutable_work();
    out.set_published(w.published);
    out.set_taken(w.taken);
    out.set_completed(w.completed);
    out.set_refused(w.refused);
    out.set_reclaimed(w.reclaimed);
    out.set_lost(w.lost);
    out.set_dead_lettered(w.dead_lettered);
    out.set_results(w.results);
    out.set_held(w.held);
    out.set_shared(w.shared_live);
    out.set_claims_lost(w.claims_lost);
    out.set_released(w.released);
    for (const PartitionBacklog& p : work_->Backlog()) {
      v1::ClusterPartition& part = *out.add_partitions();
      part.set_partition(static_cast<uint32_t>(p.partition));
      part.set_backlog(static_cast<uint64_t>(p.backlog));
      part.set_pending(static_cast<uint64_t>(p.pending));
      for (const auto& [consumer, n] : p.by_consumer) {
        (*part.mutable_pending_by_consumer())[ClipUtf8(consumer, 128)] =
            static_cast<uint64_t>(n);
      }
    }
  }
  for (const NodeView& n : s.nodes) {
    v1::ClusterNode& out = *c.add_nodes();
    out.set_name(ClipUtf8(n.name, 128));  // From Redis: made valid.
    out.set_epoch(n.epoch);
    out.set_alive(n.alive);
    out.set_self(n.self);
    if (n.alive) {
      if (n.lease_left != absl::InfiniteDuration()) {
        *out.mutable_lease_left() = ToProtoDuration(n.lease_left);
      }
    } else {
      *out.mutable_dead_since() = ToProtoTime(n.dead_since);
    }
  }
}

}  // namespace jobd::cluster
