// WorkStream: the Redis side of work sharing, first form (not yet used by
// the scheduler; docs/SCALE-OUT.md, "Work sharing: the plan"). One stream
// per partition, {jobd:pN}:jobs, with one consumer group ("jobd") for the
// cluster; results go to {jobd:pN}:results. A consumer is a node's
// incarnation, "<node-name>:<epoch>".
//
// Fencing: XACK takes no consumer, so a node that lost an entry (reclaimed
// by another after it was found dead) could still acknowledge it. Complete
// and Renew therefore run as scripts that first check, atomically, that
// the entry is pending under the caller's consumer (XPENDING); only then
// do they acknowledge it and append the result (Complete), or reset its
// idle time (Renew: XCLAIM ... JUSTID by its owner, which keeps the
// delivery count). A reclaim (XAUTOCLAIM to the reclaiming consumer) moves
// the entry, and with it the right to complete it. Each script touches one
// partition's keys only (one slot on Redis Cluster).
//
// Nothing here trims the job streams: Redis 7.0's MAXLEN/MINID would drop
// entries still pending. Results streams are trimmed by age (TrimResults).
//
// Thread-safety: every method may be called from any thread; callbacks run
// on the connections' io thread. Ownership: shares the connections.
#ifndef JOBD_SERVER_CLUSTER_WORK_STREAM_H_
#define JOBD_SERVER_CLUSTER_WORK_STREAM_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/cluster/redis_connection.h"
#include "server/jobs/job_types.h"

namespace jobd::cluster {

struct StreamEntry {
  std::string id;       // The stream entry's id.
  std::string payload;  // Its "job" field.
  // A shared job's entry (PublishJob) also names the node that published
  // it ("origin"), its id there and create time, and its owner.
  std::string origin;
  std::string origin_id;
  std::string create_ns;
  std::string owner;
  // A result for a mirror (server/cluster/key_claims.h): "<id>:<create
  // ns>" of the job here it ends (the result names the job it mirrors).
  std::string for_job;
  int partition = -1;      // TakeAny, ReclaimAny: the entry's partition.
  int64_t deliveries = 0;  // ReclaimAny: its delivery count.
};

// A shared job to publish (PublishJob).
struct JobEntry {
  std::string origin;  // The publishing node.
  uint64_t id = 0;     // Its id there.
  int64_t create_ns = 0;
  std::string owner;
  std::string spec;  // The serialized v1::JobSpec.
};

// The end a result carries (a serialized v1::Job: its state, result or
// error).
std::shared_ptr<JobEnd> EndOfResult(v1::Job& job);

// What a fenced step found.
enum class Fence {
  kDone,            // The caller owned the entry: done.
  kNotPending,      // Not pending (acknowledged already, or unknown).
  kOwnedByAnother,  // Pending under another consumer (reclaimed).
};

class WorkStream {
 public:
  static constexpr char kGroup[] = "jobd";

  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  // `blocking`: the connection for Take's blocking reads.
  WorkStream(std::shared_ptr<RedisConnection> commands,
             std::shared_ptr<RedisConnection> blocking);

  static std::string JobsKey(int partition);
  static std::string ResultsKey(int partition);
  static std::string Consumer(std::string_view node, uint64_t epoch);
  // A node's own results stream in a partition (one slot with its jobs).
  static std::string ResultsKey(int partition, std::string_view origin);
  // Marks that job `id` (created at `create_ns`) of `origin` was published
  // in `partition`: what makes publishing it again a no-op.
  static std::string MarkerKey(int partition, std::string_view origin,
                               uint64_t id, int64_t create_ns);
  static std::string DeadLetterKey(int partition);
  // The nodes with a results stream in a partition (a set): what
  // TrimResults walks.
  static std::string ResultsNodesKey(int partition);

  // Creates the partition's stream and group if missing (an existing group
  // is fine).
  void EnsureGroup(int partition, Done<bool> done);
  // Appends one entry; its id.
  void Publish(int partition, std::string payload, Done<std::string> done);
  // Up to `count` entries never delivered, waiting up to `block` for them
  // (on the blocking connection); they become pending under `consumer`.
  void Take(int partition, std::string consumer, int count,
            absl::Duration block, Done<std::vector<StreamEntry>> done);
  // Entries pending longer than `min_idle` under any consumer, moved to
  // `consumer` (XAUTOCLAIM from the start, at most `count`).
  void Reclaim(int partition, std::string consumer, absl::Duration min_idle,
               int count, Done<std::vector<StreamEntry>> done);
  // Publishes a shared job once: a script appends it unless its marker
  // (MarkerKey, kept `marker_ttl`) says it was, and answers the entry's id
  // either way (publishing again after a lost reply or a restart makes no
  // duplicate).
  void PublishJob(int partition, const JobEntry& job, absl::Duration marker_ttl,
                  Done<std::string> done);
  // Take without waiting, on the command connection: up to `count`
  // entries of one partition that are there now.
  void TakeNow(int partition, std::string consumer, int count,
               Done<std::vector<StreamEntry>> done);
  // Take over several partitions at once (XREADGROUP over their streams).
  void TakeAny(const std::vector<int>& partitions, std::string consumer,
               int count, absl::Duration block,
               Done<std::vector<StreamEntry>> done);
  // Reclaim with each entry's delivery count (a script: XAUTOCLAIM from
  // the start, then XPENDING per entry), at most `count`.
  void ReclaimCounted(int partition, std::string consumer,
                      absl::Duration min_idle, int count,
                      Done<std::vector<StreamEntry>> done);
  // Gives back an entry the caller owns and cannot run after all: it is
  // acknowledged, deleted and appended again (at the stream's end, with a
  // new id), atomically. kDone, or why not.
  void Release(int partition, std::string consumer, std::string id,
               Done<Fence> done);
  // Complete for a shared job: acknowledges the entry the caller owns,
  // deletes it, and appends `result` to its origin's results stream
  // (ResultsKey(partition, origin)), atomically. `dead_letter`: also
  // appends the entry to the partition's dead-letter stream.
  void CompleteJob(int partition, std::string consumer, std::string id,
                   std::string origin, std::string result, bool dead_letter,
                   Done<Fence> done);
  // The results for `origin` after `after[i]` in each partition's stream
  // (XREAD, blocking up to `block`, on the connection `reader`). Entries'
  // payload is the "result" field.
  static void ReadResults(RedisConnection& reader,
                          const std::vector<int>& partitions,
                          const std::string& origin,
                          const std::vector<std::string>& after, int count,
                          absl::Duration block,
                          Done<std::vector<StreamEntry>> done);
  // Trims the partition's results streams (of every node that has one)
  // to entries younger than `ttl` by Redis's clock (XTRIM MINID: nothing
  // is pending on a results stream), and deletes those left empty. The
  // entries trimmed.
  void TrimResults(int partition, absl::Duration ttl, Done<int64_t> done);
  // Resets the idle time of an entry the caller owns.
  void Renew(int partition, std::string consumer, std::string id,
             Done<Fence> done);
  // Acknowledges an entry the caller owns and appends `result` to the
  // partition's results stream, atomically.
  void Complete(int partition, std::string consumer, std::string id,
                std::string result, Done<Fence> done);

 private:
  const std::shared_ptr<RedisConnection> commands_;
  const std::shared_ptr<RedisConnection> blocking_;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_WORK_STREAM_H_
