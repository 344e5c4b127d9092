// WorkSharing: cluster mode's work sharing between the scheduler and the
// partition streams (docs/SCALE-OUT.md). Built by ClusterNode::ShareWork.
//
// Publish (the outbox): the scheduler hands over a job that would queue
// here (WorkShareHook::Publish, under its lock: queued here, nothing
// more). On the io thread, once the job's journal row (marked "outbox") is
// durable, it goes to partition hash(node, id); the jobs of a partition
// handed over together (one drain of the outbox, published once the last
// one's row is durable) go in one entry (up to --cluster-pack), by a
// script that leaves out any job published before;
// once Redis answered, their rows are marked published. What could not
// be published (Redis down) stays in the outbox and is published again
// (Scheduler::Outbox) each heartbeat while Redis is up, and after a
// restart.
//
// Take: while the scheduler has a free slot for a job of any executor
// (Scheduler::IdleSlots), non-blocking XREADGROUPs take what the
// partitions hold, one partition after another, entries for about as many
// jobs as there are free slots (an entry is taken whole: what cannot start
// at once queues here); with nothing there, an XREADGROUP ... BLOCK on
// the blocking connection waits on all partitions; with no free slot, it
// looks again in 10 ms, or as soon as a job it took ends. The consumer is
// "<node>:<epoch>". The at-most-once jobs of an entry of several jobs
// wait here (unbegun_, not admitted) until a slot is free for them; they
// are then added to the entry's begun set (WorkStream::MarkBegun, one
// fenced script per entry) and only then admitted, so that a reclaim
// after this node's death runs again those it never began (rather than
// failing them as maybe begun). While such jobs wait, nothing more is
// taken. An entry that arrives once the slots seen free are
// gone is given back (Release: its jobs appended again at the stream's
// end; sent as ends are, below). Each job becomes a *foreign* job here:
// validated as a Submit's spec, never journaled (its pending entry is its
// record), its callback left to the submitting node. Its end goes back with the
// fenced CompleteJobs script (the ends of a moment, one script per partition)
// to the origin's results stream; a refused completion (the entry was reclaimed
// from this node) is dropped; one Redis did not answer (down) stays held and is
// sent again every heartbeat until it answers.
//
// Runs seen from their origin: a foreign job's STARTED and its progress
// are noted here and sent to its origin (NotifyFn: a `running` request,
// job_router.h) kNoteDelay after they came, for the jobs still running
// then, one message per origin: a job that ends sooner sends its start
// time with its end instead. Best effort: a note lost (Redis down) is not
// sent again; the end is.
//
// Hand back: a draining node's scheduler hands back the foreign jobs it
// will not run (WorkShareHook::HandBack, then their ends): their places
// are given back (Release, one script per entry) as ends are sent, held
// and renewed until Redis answered; the daemon waits for that (Settle)
// before it stops.
//
// Results: a third connection reads this node's results streams (XREAD
// BLOCK from the start: what a crash left is read again); each result
// ends its shared job (Scheduler::EndShared) and, once those ends are
// durable, the results read and the jobs' publication markers are
// deleted (one XDEL and one DEL per partition).
//
// Renew and reclaim: every heartbeat each held entry is renewed (fenced);
// one found reclaimed by another node has its jobs cancelled here. Every
// reaper period each partition's entries idle longer than the node TTL
// (their node stopped renewing: dead, or cut off from Redis) are
// reclaimed (XAUTOCLAIM, at most the free slots and kReclaimBatch per
// partition; with no free slot then, at the take loop's next one, before
// it takes anything), without their jobs done already: past
// `max_deliveries` an entry's jobs are dead-lettered and FAILED; an
// AT_MOST_ONCE job alone in its entry or in its begun set ends FAILED
// (LOST_ON_RESTART: it may have run), another runs here; an
// AT_LEAST_ONCE job runs here again. (Renewal, reclaim, the trimming of
// results and the backlog: work_sharing_upkeep.cc; the rest:
// work_sharing.cc.)
//
// Thread-safety: Sharing and Publish from any thread (the scheduler's
// lock held: they take only `mu_`, a leaf); Stats from any thread; the
// rest on the io thread. Ownership: shared (handlers hold it); holds the
// connections and the membership shared, the scheduler by reference (it
// outlives this: the daemon stops cluster mode first, and Stop unhooks).
#ifndef JOBD_SERVER_CLUSTER_WORK_SHARING_H_
#define JOBD_SERVER_CLUSTER_WORK_SHARING_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "server/cluster/cluster_options.h"
#include "server/cluster/end_sink.h"
#include "server/cluster/membership.h"
#include "server/cluster/recent_map.h"
#include "server/cluster/redis_connection.h"
#include "server/cluster/work_stream.h"
#include "server/jobs/job_types.h"
#include "server/jobs/work_share.h"

namespace jobd {
class Scheduler;

namespace cluster {

// Validates a spec taken from Redis into a job (the daemon's ValidateSpec).
using MakeJob = std::function<absl::StatusOr<NewJob>(v1::JobSpec spec)>;

struct WorkSharingStats {
  uint64_t published = 0;  // Jobs this node published.
  uint64_t taken = 0;      // Jobs it took (first deliveries).
  uint64_t completed = 0;  // Ends it completed for other nodes (or itself).
  uint64_t refused = 0;    // Completions refused: reclaimed from it.
  uint64_t reclaimed = 0;  // Jobs it reclaimed from dead nodes.
  uint64_t lost = 0;       // Reclaimed AT_MOST_ONCE jobs it ended FAILED.
  uint64_t dead_lettered = 0;
  uint64_t results = 0;      // Ends of its shared jobs it received.
  uint64_t held = 0;         // Jobs it holds now (running or queued here).
  uint64_t shared_live = 0;  // Its jobs waiting in the cluster now.
  // Jobs it held that another node reclaimed (found on renewal): their
  // runs here were cancelled.
  uint64_t claims_lost = 0;
  // Jobs it took and gave back: its free slots were gone by then.
  uint64_t released = 0;
};

// A partition's stream as last read (every reaper period).
struct PartitionBacklog {
  int partition = 0;
  int64_t backlog = 0;  // Entries not delivered yet (the group's lag).
  int64_t pending = 0;  // Delivered, not acknowledged.
  std::vector<std::pair<std::string, int64_t>> by_consumer;  // Pending.
};

class WorkSharing : public WorkShareHook,
                    public std::enable_shared_from_this<WorkSharing> {
 public:
  static constexpr int kReclaimBatch = 64;    // Per partition and period.
  static constexpr int kMaxTake = 32;         // Entries per read.
  static constexpr int kResultsBatch = 256;   // Results per read.
  static constexpr int kCompleteBatch = 256;  // Ends per script.

  WorkSharing(asio::io_context& io, std::shared_ptr<WorkStream> stream,
              std::shared_ptr<RedisConnection> commands,
              std::shared_ptr<RedisConnection> results,
              std::shared_ptr<Membership> membership,
              const ClusterOptions& options, Scheduler& scheduler,
              MakeJob make_job);
  ~WorkSharing() override;

  // WorkShareHook (the scheduler's lock held).
  bool Sharing() const override;
  void Publish(SharedJob job) override;
  // Posts to the io thread the function SetWithdraw gave (job_router.h).
  void Withdraw(uint64_t id, int64_t create_ns) override;
  // Notes the local job `id`: its coming end is not sent to its origin;
  // its place in its entry is given back (Release) instead.
  void HandBack(uint64_t id) override;

  // What withdraws a shared job: (partition, id, create ns), on the io
  // thread. Before Start.
  using WithdrawFn = std::function<void(int, uint64_t, int64_t)>;
  void SetWithdraw(WithdrawFn fn) { withdraw_ = std::move(fn); }
  // What sends notes of runs to their origin: (origin node, a serialized
  // v1::ListJobsResponse of the jobs, each with its id there, create time,
  // state RUNNING, start time and latest progress), on the io thread.
  // Before Start.
  using NotifyFn = std::function<void(const std::string&, std::string)>;
  void SetNotify(NotifyFn fn) { notify_ = std::move(fn); }
  static constexpr absl::Duration kNoteDelay = absl::Milliseconds(100);

  // Cancels the run here of job `index` of entry `entry` of `partition`,
  // if held here (its origin withdrew it); its end goes back as usual. On
  // the io thread.
  void StopEntry(int partition, const std::string& entry, int index);

  // Starts the loops (on the io thread). Once.
  void Start();
  // Stops them and unhooks the scheduler. Idempotent.
  void Stop();
  // The command connection came up or went down (on the io thread).
  void OnConnectionState(bool up);

  // Stops taking and reclaiming, then calls `done(true)` on the io thread
  // once no read that may deliver entries is in flight and no end or
  // give-back of a held job waits to reach Redis (at once if none does);
  // done(false) if Redis is down (they wait in vain). The daemon,
  // stopping, waits for it (bounded) before Stop. On any thread.
  void Settle(std::function<void(bool)> done);

  // Where runs are (StreamJobOutput of a shared job; on the io thread):
  // the local id of the run here of job `id` of node `origin` (0: none
  // known: not taken here, or long ago), and the node that runs or ran
  // this node's shared job `id` (created at `create_ns`): from its result
  // once it ended, else from Redis (who holds its entry); "" if none
  // does yet.
  static constexpr size_t kRunsKept = 65536;  // Of each map.
  uint64_t RunOf(const std::string& origin, uint64_t id,
                 int64_t create_ns) const;
  void Locate(uint64_t id, int64_t create_ns,
              std::function<void(absl::StatusOr<std::string>)> done);

  WorkSharingStats Stats() const;
  std::vector<PartitionBacklog> Backlog() const;

 private:
  // A job of an entry held here: taken or reclaimed, running (or queued)
  // as a foreign job.
  struct Held {
    int partition = 0;
    std::string entry;
    int index = 0;  // Its place in the entry.
    int count = 1;  // The entry's jobs.
    std::string consumer;
    std::string origin;
    uint64_t origin_id = 0;
    int64_t create_ns = 0;
    uint64_t local_id = 0;  // 0 until admitted.
    // Its run here: when it started (0: not yet), its latest progress.
    int64_t start_ns = 0;
    std::shared_ptr<const v1::Progress> progress;
    // Its end once known (the serialized v1::Job for the fenced complete),
    // kept until Redis answered: an end sent while Redis was down is sent
    // again at the next heartbeat, not dropped (the entry, left pending
    // here, would be reclaimed: run twice, or failed at most once).
    std::string result;
    bool dead_letter = false;
    // To give back (Release), not complete: taken when its slot was gone
    // already, or handed back (the node drains); sent as ends are.
    bool give_back = false;
    bool sending = false;  // Its completion (or give-back) is in flight.
    // In unbegun_: waits for a free slot and its begun mark (not admitted).
    bool unbegun = false;
  };

  std::string ConsumerNow() const;  // "" before the node joined.
  int PartitionOf(uint64_t id) const;
  void Prepare();  // Groups, then sharing on.
  // Publishes `jobs` and those handed over whose outbox rows are in
  // journal batches up to `durable` (`ok`: that is durable; else they are
  // dropped here, kept in the outbox for the next start), in packs by
  // partition.
  void PublishNow(std::vector<SharedJob> jobs, uint64_t durable, bool ok);
  void PublishPack(int partition, std::vector<JobEntry> pack);
  void DrainOutbox();
  void TakeLoop();
  // `budget`: jobs it may still take; `got`: taken so far.
  void TakeNow(int start, int tried, std::string consumer, int budget, int got);
  void TakeBlocking(std::string consumer);
  // Runs entries while `room` (free slots) lasts; gives back the rest.
  // The jobs run.
  int RunTaken(std::vector<StreamEntry> entries, const std::string& consumer,
               int room);
  // `busy`: it waits for a free slot (a foreign job's end cuts it short).
  void ArmTake(absl::Duration after, bool busy = false);
  void RunEntry(StreamEntry entry, const std::string& consumer, bool reclaimed);
  // Admits the jobs of held `tags` to the scheduler as foreign jobs.
  void Admit(std::vector<NewJob> jobs, std::vector<uint64_t> tags);
  // Marks begun and then admits the unbegun jobs there is a free slot for,
  // and MarkAhead() more (one fenced script per entry, one round at a
  // time); gives them all back if the node drains or settles.
  void StartUnbegun();
  // Jobs to mark begun beyond the free slots, so that short jobs need not
  // wait for marks: twice as many as ended during a mark lately (Little's
  // law), at most kMaxMarkAhead; about none for jobs much longer than a
  // mark. A crash fails those marked but not begun LOST_ON_RESTART.
  int MarkAhead() const;
  static constexpr int kMaxMarkAhead = 256;
  // Holds `held` with its end `result` and sends it soon (SendEnds).
  void CompleteEntry(Held held, const v1::Job& result, bool dead_letter);
  // Sends the ends in to_send_: one script per partition and consumer.
  // Holds `held` to give back its place in its entry, soon (SendEnds).
  void GiveBack(Held held);
  void SendEnds();
  void PostSendEnds();  // SendEnds soon, once for the ends of a moment.
  // Held job `tag`'s end or give-back goes (again) with the next SendEnds.
  void SendAgain(uint64_t tag);
  void SendEndChunk(int partition, std::string consumer,
                    std::vector<uint64_t> tags);
  // Gives back the held jobs `tags` of one entry (Release).
  void SendGiveBack(int partition, std::string consumer, std::string entry,
                    std::vector<uint64_t> tags);
  // Whether a read is in flight, or an end or give-back waits to reach
  // Redis.
  bool Unsettled() const;
  void SettleLoop(std::function<void(bool)> done);
  // Cancels and forgets the jobs held under `consumer` of an entry found
  // reclaimed from it.
  void DropEntry(int partition, const std::string& entry,
                 const std::string& consumer);
  void OnEnds();
  // Sends the notes of the held jobs in noting_ still running, one
  // message per origin.
  void SendNotes();
  void ResultsLoop();
  void Beat();
  void Reclaim();
  // Reclaims from partition `index` on, at most `budget` entries, then
  // calls `then` (unless stopped).
  void ReclaimFrom(size_t index, std::string consumer, int budget,
                   std::function<void()> then);
  void RefreshBacklog();
  void TrimResults();  // One partition's results streams, in turn.

  // Const after construction.
  asio::io_context& io_;
  const std::shared_ptr<WorkStream> stream_;
  const std::shared_ptr<RedisConnection> commands_;
  const std::shared_ptr<RedisConnection> results_;
  const std::shared_ptr<Membership> membership_;
  const ClusterOptions options_;
  Scheduler& scheduler_;
  const MakeJob make_job_;
  WithdrawFn withdraw_;  // Set before Start.
  NotifyFn notify_;      // Set before Start.
  std::vector<int> all_partitions_;
  std::shared_ptr<EndSink> sink_;

  // The io thread's.
  asio::steady_timer take_timer_, beat_timer_, reap_timer_, results_timer_,
      settle_timer_, note_timer_;
  bool started_ = false, stopped_ = false;
  bool preparing_ = false;
  bool republish_ = false;      // Something failed to publish: try the outbox.
  bool drain_waiting_ = false;  // A drain waits for its commit.
  bool settling_ = false;       // Settle began: nothing more is taken.
  int reads_ = 0;               // Takes and reclaims in flight.
  uint64_t next_tag_ = 1;
  int take_turn_ = 0;        // The partition the next small take starts at.
  int jobs_per_entry_ = 1;   // As the last take found them.
  bool take_busy_ = false;   // The take timer waits for a free slot.
  uint64_t take_armed_ = 0;  // Times the take timer was armed.
  // The reaper found no free slot: the take loop reclaims at its next.
  bool reclaim_due_ = false;
  int trim_turn_ = 0;  // The partition whose results are trimmed next.
  absl::flat_hash_map<uint64_t, Held> held_;  // By subscriber tag.
  // Held jobs waiting for a slot and their begun mark, in take order (a
  // tag no longer held, or no longer `unbegun`, is skipped), and the
  // MarkBegun scripts in flight.
  std::deque<std::pair<uint64_t, NewJob>> unbegun_;
  int marking_ = 0;
  // Ends of held jobs so far, and how many came during a MarkBegun round
  // trip (a moving average, 1/4 weight).
  uint64_t ends_ = 0;
  double ends_per_mark_ = 0;
  std::vector<uint64_t> to_send_;  // Tags whose ends are to send.
  // Tags of held jobs whose start or progress is to note (SendNotes, at
  // the note timer).
  absl::flat_hash_set<uint64_t> noting_;
  bool note_armed_ = false;
  bool send_posted_ = false;                 // A SendEnds is posted.
  std::vector<std::string> results_after_;   // By partition.
  std::vector<std::string> reclaim_cursor_;  // By partition.
  // Runs here of other nodes' jobs ("<origin>:<id>:<create ns>" to the
  // local id), and the nodes that ran this node's shared jobs (by id), the
  // last kRunsKept of each.
  RecentMap<std::string, uint64_t> runs_here_{kRunsKept};
  RecentMap<uint64_t, std::string> ran_at_{kRunsKept};

  std::atomic<bool> ready_{false};  // Groups exist; Redis is up.
  // Stop was called: the journal's callbacks no longer reach the io
  // thread.
  std::atomic<bool> halted_{false};

  mutable absl::Mutex mu_;  // A leaf.
  std::deque<SharedJob> to_publish_ ABSL_GUARDED_BY(mu_);
  bool unhooked_ ABSL_GUARDED_BY(mu_) = false;
  // Local ids of held jobs handed back, until their ends come (OnEnds).
  absl::flat_hash_set<uint64_t> handed_back_ ABSL_GUARDED_BY(mu_);
  WorkSharingStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<PartitionBacklog> backlog_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cluster
}  // namespace jobd

#endif  // JOBD_SERVER_CLUSTER_WORK_SHARING_H_
