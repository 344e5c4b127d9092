// WorkStream: the Redis side of work sharing (docs/SCALE-OUT.md). One
// stream per partition, {jobd:pN}:jobs, with one consumer group ("jobd")
// for the cluster. A consumer is a node's incarnation, "<node>:<epoch>".
//
// Packing: an entry of a jobs stream carries one or more jobs of one
// origin node (PublishJobs: up to --cluster-pack), as the fields
// origin, n, then job.K, id.K, create.K and owner.K for K in [0, n). An
// entry is taken, renewed, reclaimed and given back whole; each of its
// jobs is completed on its own (CompleteJobs), which marks it in the
// entry's done set ({jobd:pN}:done:<entry>, a hash: index -> "1", or
// "w" for a job its origin withdrew); the completion that fills the set
// acknowledges and deletes the entry. A reclaim, a give-back and a
// withdrawal read the set: what is done is not run again. An entry of
// several jobs also has a begun set ({jobd:pN}:begun:<entry>): its
// at-most-once jobs are added before they start (MarkBegun), so that a
// reclaim runs again those its dead taker never began.
//
// Fencing: XACK takes no consumer, so a node that lost an entry (reclaimed
// by another after it was found dead) could still acknowledge it. Every
// step on a taken entry therefore runs as a script that first checks,
// atomically, that the entry is pending under the caller's consumer
// (XPENDING); only then does it complete (acknowledge, append the result),
// renew (XCLAIM ... JUSTID by its owner, which keeps the delivery count)
// or give it back. A reclaim (XAUTOCLAIM to the reclaiming consumer) moves
// the entry, and with it the right to complete its jobs. Each script
// touches one partition's keys only (one slot on Redis Cluster).
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

// One job of a jobs stream's entry, as read.
struct PackedJob {
  int index = 0;     // Its place in the entry (K).
  std::string spec;  // The serialized v1::JobSpec.
  std::string id;    // Its id at its origin.
  std::string create_ns;
  std::string owner;
};

struct StreamEntry {
  std::string id;       // The stream entry's id.
  std::string payload;  // A results entry's "result".
  std::string origin;   // The node that published it.
  // A jobs entry: how many jobs it packed ("n"), and those to run (a
  // reclaim leaves out those its done set holds).
  int count = 0;
  std::vector<PackedJob> jobs;
  // A result for a mirror (server/cluster/key_claims.h): "<id>:<create
  // ns>" of the job here it ends (the result names the job it mirrors).
  std::string for_job;
  // A result: the consumer ("<node>:<epoch>") that ran the job.
  std::string by;
  int partition = -1;      // The entry's partition.
  int64_t deliveries = 0;  // ReclaimCounted: its delivery count.
  std::vector<int> begun;  // ReclaimCounted: its begun set (indexes).
};

// A shared job to publish (PublishJobs).
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

// What a reclaim took (ReclaimCounted).
struct Reclaimed {
  std::vector<StreamEntry> entries;
  std::string next;  // The cursor to go on from; "0-0": from the start.
};

// One job's end to complete (CompleteJobs).
struct Completion {
  std::string entry;
  int index = 0;  // The job's place in the entry.
  int count = 1;  // The entry's jobs (its "n").
  std::string origin;
  std::string result;  // The serialized v1::Job of its end.
  bool dead_letter = false;
};

// What a withdrawal found (Withdraw).
struct Withdrawal {
  enum class Was {
    kNotPublished,  // Not published (now it never will be).
    kRemoved,       // Removed before any node took it (or already ended).
    kHeld,          // Taken: `consumer` holds it, at `index` of `entry`.
  };
  Was was = Was::kNotPublished;
  std::string entry;
  std::string consumer;
  int index = 0;
};

// What a fenced step found.
enum class Fence {
  kDone,            // The caller owned the entry: done.
  kNotPending,      // Not pending (acknowledged already, or unknown).
  kOwnedByAnother,  // Pending under another consumer (reclaimed).
};

// What a renewal found (Renew).
struct Renewal {
  Fence fence = Fence::kDone;
  std::vector<int> withdrawn;  // kDone: the entry's jobs withdrawn.
};

class WorkStream {
 public:
  static constexpr char kGroup[] = "jobd";

  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  // `blocking`: the connection for blocking reads (TakeAny).
  WorkStream(std::shared_ptr<RedisConnection> commands,
             std::shared_ptr<RedisConnection> blocking);

  static std::string JobsKey(int partition);
  static std::string Consumer(std::string_view node, uint64_t epoch);
  // A node's own results stream in a partition (one slot with its jobs).
  static std::string ResultsKey(int partition, std::string_view origin);
  // Marks that job `id` (created at `create_ns`) of `origin` was published
  // in `partition`: what makes publishing it again a no-op. Holds its
  // entry's id ("0-0": withdrawn before it was published).
  static std::string MarkerKey(int partition, std::string_view origin,
                               uint64_t id, int64_t create_ns);
  // The done set of a taken entry (see the top of this file).
  static std::string DoneKey(int partition, std::string_view entry);
  // The begun set of a taken entry (MarkBegun).
  static std::string BegunKey(int partition, std::string_view entry);
  static std::string DeadLetterKey(int partition);
  // The nodes with a results stream in a partition (a set): what
  // TrimResults walks.
  static std::string ResultsNodesKey(int partition);

  // Creates the partition's stream and group if missing (an existing group
  // is fine).
  void EnsureGroup(int partition, Done<bool> done);
  // Publishes shared jobs of one origin in one entry, each once: a script
  // leaves out every job whose marker (MarkerKey, kept `marker_ttl`) says
  // it was published (or withdrawn), appends the others as one entry and
  // marks them. The new entry's id; "" if every job was left out
  // (publishing again after a lost reply or a restart makes no duplicate).
  void PublishJobs(int partition, const std::vector<JobEntry>& jobs,
                   absl::Duration marker_ttl, Done<std::string> done);
  // Up to `count` entries of one partition never delivered, there now (no
  // wait, on the command connection); they become pending under
  // `consumer`.
  void TakeNow(int partition, std::string consumer, int count,
               Done<std::vector<StreamEntry>> done);
  // The same over several partitions at once (XREADGROUP over their
  // streams: `count` per stream), waiting up to `block` on the blocking
  // connection.
  void TakeAny(const std::vector<int>& partitions, std::string consumer,
               int count, absl::Duration block,
               Done<std::vector<StreamEntry>> done);
  // Entries pending longer than `min_idle` under any consumer, moved to
  // `consumer` (XAUTOCLAIM from `cursor`, "0-0" for the start: at most
  // `count` entries, after looking at most 10 x `count` of the pending),
  // each with its delivery count and begun set and without its done
  // jobs; and the cursor
  // to go on from ("0-0": the end was reached). An entry whose jobs are
  // all done (its last one withdrawn) is acknowledged and deleted instead.
  void ReclaimCounted(int partition, std::string consumer,
                      absl::Duration min_idle, int count, std::string cursor,
                      Done<Reclaimed> done);
  // Gives back jobs of an entry the caller owns and will not run: those
  // at `indexes` (their places in it) not done are appended again (at the
  // stream's end, as a new entry; their markers follow) and marked given
  // back in the entry's done set (a reclaim leaves them out), and the
  // entry is acknowledged and deleted once each of its jobs is done or
  // given back, atomically. kDone, or why not.
  void Release(int partition, std::string consumer, std::string id,
               const std::vector<int>& indexes, Done<Fence> done);
  // Adds the jobs at `indexes` of an entry the caller owns to its begun
  // set, before they start: a reclaim fails those at most once, and runs
  // the others again. kDone, or why not.
  void MarkBegun(int partition, std::string consumer, std::string id,
                 const std::vector<int>& indexes, Done<Fence> done);
  // Completes jobs of entries the caller owns, in one script: for each,
  // fenced, appends its result to its origin's results stream
  // (ResultsKey(partition, origin), with the consumer as "by") and marks
  // it done; the entry is
  // acknowledged and deleted once all its jobs are. `dead_letter`: the
  // job is also appended to the partition's dead-letter stream. One Fence
  // per completion, in order.
  void CompleteJobs(int partition, std::string consumer,
                    const std::vector<Completion>& jobs,
                    Done<std::vector<Fence>> done);
  // Resets the idle time of an entry the caller owns; names its jobs
  // withdrawn meanwhile (their origin's stop notice may have been lost).
  void Renew(int partition, std::string consumer, std::string id,
             Done<Renewal> done);
  // The consumer ("<node>:<epoch>") that holds job `id` (created at
  // `create_ns`) that `origin` published, now: "" if none does (not
  // published, not taken yet, or ended).
  void Holder(int partition, const std::string& origin, uint64_t id,
              int64_t create_ns, Done<std::string> done);
  // Withdraws job `id` (created at `create_ns`) that `origin` published:
  // not taken yet, it leaves its entry (the others are appended again,
  // their markers following); taken, it is marked withdrawn in the
  // entry's done set (a reclaim will not run it) and the holder is
  // answered, to stop its run; not published, its marker (kept
  // `marker_ttl`) keeps a late publication from appending it.
  static void Withdraw(RedisConnection& commands, int partition,
                       const std::string& origin, uint64_t id,
                       int64_t create_ns, absl::Duration marker_ttl,
                       Done<Withdrawal> done);
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
  // is pending on a results stream), and deletes those left empty whose
  // last entry was older (never one read empty and written to since: its
  // reader's cursor would skip the ids of a stream created again). The
  // entries trimmed.
  void TrimResults(int partition, absl::Duration ttl, Done<int64_t> done);

 private:
  const std::shared_ptr<RedisConnection> commands_;
  const std::shared_ptr<RedisConnection> blocking_;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_WORK_STREAM_H_
