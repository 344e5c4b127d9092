// KeyClaims: cluster-wide idempotency keys (docs/SCALE-OUT.md, "Idempotency
// keys across nodes"). Built by ClusterNode::ShareWork; the scheduler's
// side is server/scheduler/scheduler_claims.cc.
//
// A keyed job accepted while Redis is up is held by the scheduler until
// its key is claimed here, once its journal row is durable (a node that
// dies between the two claims again at restore: every live keyed job is
// held and claimed again). The claim is a hash, in the partition of
// hash(owner, key):
//   {jobd:pN}:idem:<len(owner)>:<owner>:<key>
//     job  "<node>:<id>:<create ns>"   the job that holds the key
//     end  a serialized v1::Job        that job's end, once it ended
//     w:<node>:<id>:<create ns>        a mirror waiting for the end
// made by one script: the first claim wins; a later one (another node, or
// the same node for another job) registers its job as a waiter and gets
// the holder (and its end, if any); the scheduler then makes its job a
// mirror of the holder. When a job whose claim was won ends, a script
// stores its end in the claim, appends it (with the waiter's id, field
// "for") to each waiter's results stream in that partition, and sets the
// claim to expire after the node's retention of ended jobs. A live job's
// claim expires after kLiveTtl plus that retention.
//
// Redis down: a keyed job accepted then is not held (its key is this
// node's alone, as without a cluster); a claim that fails (the
// connection dropped) lets its job go on the same way. At restore, claims
// wait for Redis up to kRestoreGrace (or node-ttl), then go on locally.
//
// Thread-safety: Claiming, Claim and ClaimedEnds from any thread (the
// scheduler's lock held: they take only `mu_`, a leaf); the rest on the io
// thread. Ownership: shared (handlers hold it); shares the command
// connection; the scheduler by reference (it outlives this: Stop unhooks).
#ifndef JOBD_SERVER_CLUSTER_KEY_CLAIMS_H_
#define JOBD_SERVER_CLUSTER_KEY_CLAIMS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "server/cluster/cluster_options.h"
#include "server/cluster/end_sink.h"
#include "server/cluster/redis_connection.h"
#include "server/jobs/key_claim.h"

namespace jobd {
class Scheduler;

namespace cluster {

class KeyClaims : public KeyClaimHook,
                  public std::enable_shared_from_this<KeyClaims> {
 public:
  // A live job's claim lasts this long past the retention of ended jobs.
  static constexpr absl::Duration kLiveTtl = absl::Hours(24);
  // At start, how long claims wait for Redis at least before they go on
  // locally.
  static constexpr absl::Duration kRestoreGrace = absl::Seconds(2);

  // `retention`: how long the node keeps ended jobs (--retention-ttl): an
  // ended job's claim lasts as long.
  KeyClaims(asio::io_context& io, std::shared_ptr<RedisConnection> commands,
            const ClusterOptions& options, Scheduler& scheduler,
            absl::Duration retention);
  ~KeyClaims() override;

  // The claim of `owner`'s key `key` (hash-tagged with its partition).
  static std::string ClaimKey(int partition, std::string_view owner,
                              std::string_view key);
  int PartitionOf(std::string_view owner, std::string_view key) const;

  // KeyClaimHook (the scheduler's lock held).
  bool Claiming() const override;
  void Claim(KeyClaim claim) override;
  std::shared_ptr<EventSink> ClaimedEnds() override;

  // Starts the restore grace (on the io thread). Once.
  void Start();
  // Unhooks the scheduler; nothing more reaches Redis. Idempotent.
  void Stop();
  // The command connection came up or went down (on the io thread).
  void OnConnectionState(bool up);

 private:
  // A claim this node won, until its job's end is recorded.
  struct Won {
    int partition = 0;
    std::string key;  // The claim's Redis key.
    int64_t create_ns = 0;
  };

  std::string Me(uint64_t id, int64_t create_ns) const;
  void Drain();
  void ClaimNow(KeyClaim claim);
  void GoLocal(const KeyClaim& claim);
  void OnEnds();
  void RecordEnd(uint64_t id, const Won& won, const JobEnd& end);

  // Const after construction.
  asio::io_context& io_;
  const std::shared_ptr<RedisConnection> commands_;
  const ClusterOptions options_;
  Scheduler& scheduler_;
  const absl::Duration retention_;
  std::shared_ptr<EndSink> sink_;

  // The io thread's.
  asio::steady_timer grace_timer_;
  bool in_grace_ = true;          // Start's grace: claims wait for Redis.
  std::deque<KeyClaim> waiting_;  // For Redis, during the grace.
  absl::flat_hash_map<uint64_t, Won> won_;  // By job id.
  // Ends not recorded (Redis was down): again when it is back.
  std::deque<std::pair<uint64_t, std::shared_ptr<const JobEnd>>> unrecorded_;

  std::atomic<bool> halted_{false};
  mutable absl::Mutex mu_;  // A leaf.
  std::deque<KeyClaim> to_claim_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cluster
}  // namespace jobd

#endif  // JOBD_SERVER_CLUSTER_KEY_CLAIMS_H_
