// RemoteJobs: how the frontend reaches a job of another node of the
// cluster (GetJob, WaitJob, CancelJob, WatchJobs and StreamJobOutput for
// an id "N@<other node>", and ListJobs of every node),
// without knowing cluster mode: an interface of this leaf room,
// implemented by server/cluster/job_router.h.
//
// The caller's identity travels with the request; the job's node applies
// its usual owner check (`owner` empty: an admin, every job). Each call
// answers once, within `deadline`: the job's node's answer, or
// NOT_FOUND (no such node in the cluster), UNAVAILABLE (the node is dead,
// Redis is down, or no answer came in time).
//
// Thread-safety: from any thread; `done` runs on the cluster's io thread
// and must not block. Ownership: the daemon's; it outlives the service's
// use of it.
#ifndef JOBD_SERVER_JOBS_REMOTE_JOBS_H_
#define JOBD_SERVER_JOBS_REMOTE_JOBS_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_id.h"

namespace jobd {

class RemoteJobs {
 public:
  // A call with no RPC deadline waits this long at most for the answer.
  static constexpr absl::Duration kDefaultWait = absl::Seconds(10);

  virtual ~RemoteJobs() = default;
  // GetJob: the job now (`wait_until` InfinitePast), or when it ends or at
  // `wait_until` (WaitJob), whichever comes first.
  virtual void Get(const JobRef& job, std::string owner, absl::Time wait_until,
                   absl::Time deadline,
                   std::function<void(absl::StatusOr<v1::Job>)> done) = 0;
  // CancelJob at the job's node (which stops a run on a third node too).
  virtual void Cancel(
      const JobRef& job, std::string owner, absl::Time deadline,
      std::function<void(absl::StatusOr<v1::CancelJobResponse>)> done) = 0;
  // StreamJobOutput at the job's node: one message of what it keeps of
  // the job's output from `offset` on (`max_bytes` of data at most). With
  // nothing new there, it asks again every kOutputPoll until `wait_until`
  // (a follower's wait), and answers the last (empty) message then.
  static constexpr absl::Duration kOutputPoll = absl::Milliseconds(100);
  virtual void ReadOutput(
      const JobRef& job, std::string owner, uint64_t offset, size_t max_bytes,
      absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)>
          done) = 0;
  // StreamJobOutput of this node's shared job `id` (created at
  // `create_ns`): read as ReadOutput does at the node that runs it (or
  // ran it), found in Redis while it runs. Not taken by any node yet (or
  // its run moved), it is nothing new (looked for again every kOutputPoll
  // until `wait_until`); it ends when the job ended here (with nothing if
  // its runner is unknown: its output is out of reach then).
  virtual void ReadSharedOutput(
      uint64_t id, int64_t create_ns, std::string owner, uint64_t offset,
      size_t max_bytes, absl::Time wait_until,
      std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)>
          done) = 0;
  // WatchJobs of one job at its node: its events after `after_sequence`
  // (a sequence of that node's log; 0: from now on, and its end if it
  // ended already), each once durable there, answered as soon as there
  // is one, or empty at `wait_until`. `horizon`: the sequence to ask
  // after next (nothing of the job is skipped between two asks).
  struct RemoteEvents {
    std::vector<v1::JobEvent> events;
    bool ended = false;  // Its terminal event was sent (or seen before).
    uint64_t horizon = 0;
  };
  virtual void Watch(
      const JobRef& job, std::string owner, uint64_t after_sequence,
      bool include_progress, absl::Time wait_until,
      std::function<void(absl::StatusOr<RemoteEvents>)> done) = 0;
  // The names of the cluster's live nodes, this one's included, sorted.
  virtual std::vector<std::string> LiveNodes() const = 0;
  // One ListJobs page at `node` (another node): `request`'s filters and
  // page size, its page_token the number at that node to list after (empty:
  // from its first); only the jobs that node accepted (not those it runs
  // for others), `max_bytes` of them at most (at least one).
  virtual void List(
      const std::string& node, v1::ListJobsRequest request, std::string owner,
      size_t max_bytes, absl::Time deadline,
      std::function<void(absl::StatusOr<v1::ListJobsResponse>)> done) = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_REMOTE_JOBS_H_
