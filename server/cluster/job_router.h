// JobRouter: cluster mode's way to reach a job from any node
// (docs/SCALE-OUT.md, "Reaching a job from any node"). A job id names its
// node ("42@node-a", server/jobs/job_id.h); GetJob, WaitJob and CancelJob
// of another node's job travel as requests through Redis, the nodes'
// trusted backplane (no gRPC between nodes), and the job's node answers
// with its usual owner checks. It also withdraws a shared job cancelled
// here from the cluster, stopping its run on the node that holds it.
//
// Keys (per node; one hash tag, so one slot on Redis Cluster):
//   {jobd:rpc:<node>}:in       requests to <node> (a stream, capped near
//                              kStreamCap, expiring kStreamTtl after its
//                              last write)
//   {jobd:rpc:<node>}:replies  replies to <node> (the same)
// A request: `req` (the asker's request number), `from` (the asker),
// `op` (get, cancel, list, output, watch, stop, running), `job` (the job's
// number at its node), `owner` (the caller the asker authenticated; empty for
// an admin), `wait_ms` (get: how long to wait for its end), `body` and
// `max_bytes` (list: the serialized ListJobsRequest, its page token a number at
// the node asked), `offset`, `max_bytes` and `run_of` (output; "1": `job` is
// the asker's id of a shared job the node asked runs or ran), `after`,
// `progress` and `wait_ms` (watch), `partition`, `entry` and `index` (stop: the
// job's place in the entry), `body` (running, one-way: a serialized
// v1::ListJobsResponse of jobs this node shared that the asker runs: id
// here, create time, start time, latest progress). A reply: `req`, `code` (a
// google.rpc code), `msg`, `body` (the serialized v1::Job,
// v1::CancelJobResponse, v1::ListJobsResponse or v1::StreamJobOutputResponse;
// for watch, "<the horizon> <ended 0|1>\n" and a serialized
// v1::WatchJobsResponse). The job's node answers an output request at once (a
// follower's wait for more is polls from the asker, RemoteJobs::kOutputPoll); a
// watch request when the job's first event after `after` comes (it subscribes
// to the job for up to `wait_ms`), once durable there.
//
// Each node reads both of its streams with one XREAD BLOCK on a
// connection of its own, from the moment it started (older requests are
// stale: their askers gave up); the node joins the membership only then
// (Start's `reading`). An asker waits for its reply until its
// deadline (the RPC's); it answers NOT_FOUND at once for a node the
// registry does not know, UNAVAILABLE for a dead node, with Redis down, or
// when the deadline passes without an answer.
//
// Withdraw (a shared job cancelled or expired at its node): a script in
// the job's partition (WorkStream::Withdraw) reads its publication marker
// (its entry's id): no marker yet (still in the outbox, or its
// publication in flight) sets it to "0-0", so that a late publication
// appends nothing; from an entry no node took, the job is removed (the
// entry's other jobs are appended again); in an entry a node holds, the
// job is marked withdrawn in the entry's done set (a reclaim skips it)
// and the holder, named by its consumer, is told at once with a `stop`
// request: it cancels its run, whose end its origin drops.
//
// A node numbers its requests (`req`) from a random start: a late reply to
// a request of an earlier incarnation of it (the same name, before a
// restart) matches none of this one's, and is dropped like any late one.
//
// Thread-safety: Get, Cancel and Withdraw from any thread (they post);
// the rest on the io thread. Ownership: made shared; holds the
// connections, membership and work sharing shared, the scheduler by
// reference (the daemon stops cluster mode before the scheduler goes).
#ifndef JOBD_SERVER_CLUSTER_JOB_ROUTER_H_
#define JOBD_SERVER_CLUSTER_JOB_ROUTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
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
#include "server/cluster/membership.h"
#include "server/cluster/redis_connection.h"
#include "server/cluster/work_sharing.h"
#include "server/jobs/remote_jobs.h"

namespace jobd {
class Scheduler;

namespace cluster {

class JobRouter : public RemoteJobs,
                  public std::enable_shared_from_this<JobRouter> {
 public:
  static constexpr int kStreamCap = 1000;  // Entries per stream, about.
  static constexpr absl::Duration kStreamTtl = absl::Minutes(10);
  static constexpr absl::Duration kAnswerFor = absl::Seconds(5);

  // `reader`: a connection for this router's blocking reads alone.
  // `work`: null without work sharing.
  JobRouter(asio::io_context& io, std::shared_ptr<RedisConnection> commands,
            std::shared_ptr<RedisConnection> reader,
            std::shared_ptr<Membership> membership,
            std::shared_ptr<WorkSharing> work, const ClusterOptions& options,
            Scheduler& scheduler);

  static std::string RequestsKey(std::string_view node);
  static std::string RepliesKey(std::string_view node);

  // RemoteJobs.
  void Get(const JobRef& job, std::string owner, absl::Time wait_until,
           absl::Time deadline,
           std::function<void(absl::StatusOr<v1::Job>)> done) override;
  void Cancel(
      const JobRef& job, std::string owner, absl::Time deadline,
      std::function<void(absl::StatusOr<v1::CancelJobResponse>)> done) override;
  void ReadOutput(
      const JobRef& job, std::string owner, uint64_t offset, size_t max_bytes,
      absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done)
      override;
  void ReadSharedOutput(
      uint64_t id, int64_t create_ns, std::string owner, uint64_t offset,
      size_t max_bytes, absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done)
      override;
  void Watch(const JobRef& job, std::string owner, uint64_t after_sequence,
             bool include_progress, absl::Time wait_until,
             std::function<void(absl::StatusOr<RemoteEvents>)> done) override;
  std::vector<std::string> LiveNodes() const override;
  void List(
      const std::string& node, v1::ListJobsRequest request, std::string owner,
      size_t max_bytes, absl::Time deadline,
      std::function<void(absl::StatusOr<v1::ListJobsResponse>)> done) override;

  // Tells `origin` that jobs it shared run here (WorkSharing::NotifyFn: a
  // one-way `running` request; applied here at once if it is this node).
  // On the io thread.
  void Notify(const std::string& origin, std::string body);

  // Withdraws this node's shared job `id` (see above). On the io thread.
  void Withdraw(int partition, uint64_t id, int64_t create_ns);

  // Starts reading (on the io thread). Once. `reading` runs on the io
  // thread once the reads have their start point (requests written from
  // then on are served): the node joins the membership then, so that no
  // asker sees it alive before it reads.
  void Start(std::function<void()> reading);
  // Stops reading; requests waiting for replies fail UNAVAILABLE; later
  // calls fail at once. Idempotent; on the owner's thread.
  void Stop();

 private:
  using Fields = absl::flat_hash_map<std::string, std::string>;
  using BodyDone = std::function<void(absl::StatusOr<std::string>)>;
  struct Waiting {
    BodyDone done;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // Sends `fields` (op and its arguments) to `node` and waits for its
  // reply until `deadline` (on the io thread).
  void Ask(const std::string& node, Fields fields, absl::Time deadline,
           BodyDone done);
  // Ask from any thread (posted), the reply's body read as a `Message`.
  template <typename Message>
  void AskFor(const std::string& node, Fields fields, absl::Time deadline,
              std::function<void(absl::StatusOr<Message>)> done);
  // Sends (and posts) only while the gate is open; false otherwise.
  bool Send(const std::string& key, Fields fields,
            std::function<void(absl::Status)> sent);
  bool Post(std::function<void()> fn);
  // Answers request `req` of node `to` (on any thread). A send that fails
  // (this node's Redis connection down or dropped: the asker would wait
  // out its deadline) is tried again every 100 ms for kAnswerFor; a reply
  // sent twice is dropped by the asker.
  void Answer(const std::string& to, const std::string& req,
              const absl::Status& status, std::string body);
  void SendAnswer(std::string key, std::shared_ptr<const Fields> fields,
                  absl::Time give_up);
  // Answers `body` once journal batch `ticket` is durable here, else
  // UNAVAILABLE: `not_durable` and why.
  void AnswerWhenDurable(const std::string& to, const std::string& req,
                         uint64_t ticket, std::string body,
                         std::string not_durable);
  void ReadLoop();
  void Serve(Fields fields);
  void ServeList(const Fields& fields, const std::string& from,
                 const std::string& req);
  void ServeOutput(const Fields& fields, uint64_t id, const std::string& from,
                   const std::string& req);
  // ReadOutput at `job`'s node; `run_of` (its create ns): `job` is this
  // node's id of a job that node runs (ran) for it.
  void ReadOutputAt(
      const JobRef& job, std::optional<int64_t> run_of, std::string owner,
      uint64_t offset, size_t max_bytes, absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done);
  // ReadSharedOutput, on the io thread: finds the runner each time (the
  // run may move: handed back, reclaimed), and takes a run's end for the
  // job's only once the job ended here.
  void FollowShared(
      uint64_t id, int64_t create_ns, std::string owner, uint64_t offset,
      size_t max_bytes, absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done);
  // Runs `again` after kOutputPoll (on the io thread), or `done` fails
  // UNAVAILABLE if this node stops meanwhile.
  template <typename Done>
  void AfterPoll(std::function<void()> again, Done done);
  // A `running` request: each job's start and progress (SharedRunning).
  void ServeRunning(const std::string& body);
  void ServeWatch(const Fields& fields, uint64_t id, const std::string& from,
                  const std::string& req);
  void OnReply(const Fields& fields);
  void Finish(uint64_t req, absl::StatusOr<std::string> body);

  // Const after construction.
  asio::io_context& io_;
  const std::shared_ptr<RedisConnection> commands_;
  const std::shared_ptr<RedisConnection> reader_;
  const std::shared_ptr<Membership> membership_;
  const std::shared_ptr<WorkSharing> work_;
  const ClusterOptions options_;
  Scheduler& scheduler_;

  // Closed by Stop, on the owner's thread, before the io_context goes:
  // from then on nothing reaches it (the scheduler may still run an
  // answer's callback, on its threads, after cluster mode stopped).
  mutable absl::Mutex gate_mu_;  // A leaf.
  bool closed_ ABSL_GUARDED_BY(gate_mu_) = false;

  // The io thread's.
  asio::steady_timer read_timer_;
  bool started_ = false, stopped_ = false;
  std::string after_in_, after_replies_;  // Empty until the first TIME.
  std::function<void()> reading_;         // Start's, until it has run.
  uint64_t time_failures_ = 0;            // TIME answered badly so far.
  uint64_t next_req_;                     // Random at first (the constructor).
  absl::flat_hash_map<uint64_t, Waiting> waiting_;
  // Output polls waiting for their next ask (cancelled by Stop).
  absl::flat_hash_set<std::shared_ptr<asio::steady_timer>> polls_;
  // Watch requests served, waiting for an event (cancelled: answered).
  absl::flat_hash_set<std::shared_ptr<asio::steady_timer>> watches_;
};

}  // namespace cluster
}  // namespace jobd

#endif  // JOBD_SERVER_CLUSTER_JOB_ROUTER_H_
