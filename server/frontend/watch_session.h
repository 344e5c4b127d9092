// WatchSession: one WatchJobs stream (README: Watching jobs). A header
// message first (the oldest event still retained, how many the caller
// missed), then the events of the jobs named, or of all the caller's jobs
// (every job for an admin), from after_sequence on: the retained ones,
// then the new ones as they happen, each once durable. Watching named
// jobs, the stream ends OK once each has ended.
//
// In cluster mode a named job of another node ("N@node-b") is followed at
// its node (RemoteJobs::Watch, asking again after each answer, or each
// kRemoteRound): its events (from now on, as for a job here) are sent
// as they come, with sequence 0 (they are not in this node's event log);
// its node's errors (NOT_FOUND, UNAVAILABLE) end the stream.
//
// A watcher that falls too far behind (max_watch_backlog events, or its
// stream_buffer_bytes) is ended RESOURCE_EXHAUSTED with the sequence to
// resume after.
//
// Thread-safety: see StreamSessionBase (server/frontend/stream_session.h);
// the response is touched only by the holder of the outstanding write.
// Ownership: created by JobServiceImpl::WatchJobs, which returns it to
// gRPC; it owns itself until OnDone.
#ifndef JOBD_SERVER_FRONTEND_WATCH_SESSION_H_
#define JOBD_SERVER_FRONTEND_WATCH_SESSION_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "server/frontend/stream_session.h"
#include "server/jobs/remote_jobs.h"

namespace jobd {

class WatchSession final
    : public StreamSessionBase<WatchSession,
                               grpc::ServerWriteReactor<v1::WatchJobsResponse>,
                               Event> {
 public:
  explicit WatchSession(JobServiceImpl& service)
      : StreamSessionBase(service, /*started=*/false) {}

  // The prologue, with what Authorize found: counts the stream in, checks
  // the request, registers with the service and subscribes to the
  // scheduler's events (or ends the stream, with no header).
  void Begin(const v1::WatchJobsRequest& request,
             absl::StatusOr<Caller> caller);

  // EventSink (under the scheduler's lock).
  bool Deliver(const Event& event, uint64_t tag) override;

  void OnDone() override;

  static constexpr absl::Duration kRemoteRound = absl::Seconds(30);

 private:
  struct Remote {
    JobRef ref;
    std::string id;  // As the client wrote it.
  };
  friend StreamSessionBase;  // Calls Pump().

  // Ends a watch that never began: its status, and no header message.
  void Refuse(const grpc::Status& status);
  // Starts a write or finishes, as the state allows.
  void Pump();
  // Waits (one round) for remote_[i]'s next events at its node.
  void AwaitRemote(size_t i);
  void OnRemote(size_t i, absl::StatusOr<RemoteJobs::RemoteEvents> events);

  std::vector<uint64_t> ids_;      // Set in Begin(), then const.
  std::vector<Remote> remote_;     // Set in Begin(), then const.
  bool include_progress_ = false;  // Set in Begin(), then const.
  // Watching jobs of one other node only: their events keep that node's
  // sequences, and after_sequence resumes them there (else they come
  // with sequence 0, which no resume could follow). Set in Begin().
  bool remote_sequences_ = false;
  // Where remote_[i] is followed from at its node (its horizon): touched
  // by its one outstanding ask's answer alone (on the cluster's thread).
  std::vector<uint64_t> remote_after_;
  v1::WatchJobsResponse response_;  // Write-token holder only.

  v1::WatchJobsResponse header_ ABSL_GUARDED_BY(mu_);
  // Watching named jobs: those whose end has not been written yet.
  absl::flat_hash_set<uint64_t> remaining_ ABSL_GUARDED_BY(mu_);
  // Other nodes' jobs: their events to send, and how many have not ended.
  std::deque<v1::JobEvent> remote_events_ ABSL_GUARDED_BY(mu_);
  size_t remote_left_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool header_sent_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_WATCH_SESSION_H_
