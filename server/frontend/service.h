// JobServiceImpl: the gRPC edge of jobd (callback API): the jobd.v1
// service. Its unary RPCs are here; its streams are sessions of their own
// (Submit: server/frontend/submit_session.h, WatchJobs: watch_session.h,
// StreamJobOutput: output_session.h,
// what they share: stream_session.h, stream_outbox.h), which the service
// registers (to end them at shutdown) and counts against the callers'
// limits. Requests are validated (server/frontend/spec_validator.h) and
// converted (server/frontend/convert.h: absl::Status becomes grpc::Status
// there and nowhere else).
//
// Thread-safety: all methods are called by gRPC threads concurrently; state
// lives in the scheduler and in per-stream session objects, each guarded by
// its own mutex. Never blocks a gRPC thread: waits are callbacks.
// Every RPC authenticates its caller and checks its role (server/auth.h);
// a caller that is not admin sees and touches only its own jobs, within
// its quotas (live jobs, submit rate, open streams).
// Ownership: borrows the scheduler, registry and authenticator (they
// outlive the server); each stream session owns itself until gRPC calls its
// OnDone.
#ifndef JOBD_SERVER_FRONTEND_SERVICE_H_
#define JOBD_SERVER_FRONTEND_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "server/frontend/auth.h"
#include "server/frontend/convert.h"
#include "server/frontend/service_limits.h"
#include "server/frontend/spec_validator.h"
#include "server/frontend/stream_outbox.h"
#include "server/jobs/remote_jobs.h"
#include "server/scheduler/scheduler.h"
#include "server/schedules/runner.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

class StreamSession;

// The jobd.v1 service on the callback API, Submit reading and writing raw
// messages: a streamed message that does not parse must not look like the
// client's half-close (server/request_errors.h). Every RPC is listed: one
// left out would answer UNIMPLEMENTED.
// The key-limit RPCs (SetKeyLimit, GetKeyLimits).
using KeyLimitServiceBase = v1::JobService::WithCallbackMethod_SetKeyLimit<
    v1::JobService::WithCallbackMethod_GetKeyLimits<v1::JobService::Service>>;
// The schedule RPCs (schedule_service.cc) and StreamJobOutput.
using ScheduleServiceBase = v1::JobService::WithCallbackMethod_CreateSchedule<
    v1::JobService::WithCallbackMethod_GetSchedule<
        v1::JobService::WithCallbackMethod_ListSchedules<
            v1::JobService::WithCallbackMethod_PauseSchedule<
                v1::JobService::WithCallbackMethod_ResumeSchedule<
                    v1::JobService::WithCallbackMethod_DeleteSchedule<
                        v1::JobService::WithCallbackMethod_StreamJobOutput<
                            KeyLimitServiceBase>>>>>>>;
using JobServiceBase = v1::JobService::WithRawCallbackMethod_Submit<
    v1::JobService::WithCallbackMethod_GetJob<
        v1::JobService::WithCallbackMethod_WatchJobs<
            v1::JobService::WithCallbackMethod_CancelJob<
                v1::JobService::WithCallbackMethod_ListJobs<
                    v1::JobService::WithCallbackMethod_ListTasks<
                        v1::JobService::WithCallbackMethod_GetStats<
                            v1::JobService::WithCallbackMethod_ClearQuarantine<
                                v1::JobService::WithCallbackMethod_Drain<
                                    ScheduleServiceBase>>>>>>>>>;

// Answers a unary RPC at once with `status` (converted by ToGrpc); the
// reactor to return from the handler. Used by every unary handler.
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context,
                                const absl::Status& status);

class JobServiceImpl final : public JobServiceBase {
 public:
  // `drain` begins a graceful shutdown (the Drain RPC).
  JobServiceImpl(Scheduler& scheduler, const TaskRegistry& registry,
                 const Authenticator& auth, ServiceLimits limits,
                 std::string version, std::function<void()> drain);
  ~JobServiceImpl() override;

  // Ends every open stream after flushing what it has queued (shutdown).
  void CloseStreams();

  // Names the peer of a connection jobd accepted itself (gRPC calls it
  // "fd:N"; server/listener.h). Call before the server starts.
  void SetPeerNames(std::function<std::string(std::string_view)> names) {
    peer_names_ = std::move(names);
  }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Submit(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request,
                                   v1::Job* response) override;
  grpc::ServerWriteReactor<v1::WatchJobsResponse>* WatchJobs(
      grpc::CallbackServerContext* context,
      const v1::WatchJobsRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::CancelJobResponse* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* context,
                                      const v1::ListTasksRequest* request,
                                      v1::ListTasksResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* ClearQuarantine(
      grpc::CallbackServerContext* context,
      const v1::ClearQuarantineRequest* request,
      v1::ClearQuarantineResponse* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;
  grpc::ServerWriteReactor<v1::StreamJobOutputResponse>* StreamJobOutput(
      grpc::CallbackServerContext* context,
      const v1::StreamJobOutputRequest* request) override;

  // Adds what a component the frontend does not know has to GetStats (the
  // daemon's cluster node: GetStatsResponse.cluster). Before the server
  // starts; run on gRPC's threads, so it must not block.
  void SetStatsExtension(std::function<void(v1::GetStatsResponse&)> extra) {
    stats_extension_ = std::move(extra);
  }

  // Cluster mode: how GetJob, WaitJob and CancelJob reach another node's
  // job (server/jobs/remote_jobs.h). Before the server starts; without it
  // another node's id is NOT_FOUND.
  void SetRemoteJobs(RemoteJobs* remote) { remote_ = remote; }
  RemoteJobs* remote() const { return remote_; }
  // OK if another node's job `id` (`text` as the client wrote it) can be
  // asked for: NOT_FOUND without cluster mode.
  absl::Status Reachable(const JobRef& id, const std::string& text) const;
  // ListJobs with all_nodes, in cluster mode (service.cc).
  grpc::ServerUnaryReactor* ListAllNodes(grpc::CallbackServerContext* context,
                                         const v1::ListJobsRequest& request,
                                         ListJobsQuery query,
                                         v1::ListJobsResponse* response);

  // Periodic schedules (schedule_service.cc): FAILED_PRECONDITION until
  // SetSchedules.
  void SetSchedules(schedules::ScheduleRunner* schedules) {
    schedules_ = schedules;  // Before the server starts.
  }
  grpc::ServerUnaryReactor* CreateSchedule(
      grpc::CallbackServerContext* context,
      const v1::CreateScheduleRequest* request,
      v1::CreateScheduleResponse* response) override;
  grpc::ServerUnaryReactor* GetSchedule(grpc::CallbackServerContext* context,
                                        const v1::GetScheduleRequest* request,
                                        v1::Schedule* response) override;
  grpc::ServerUnaryReactor* ListSchedules(
      grpc::CallbackServerContext* context,
      const v1::ListSchedulesRequest* request,
      v1::ListSchedulesResponse* response) override;
  grpc::ServerUnaryReactor* PauseSchedule(
      grpc::CallbackServerContext* context,
      const v1::PauseScheduleRequest* request, v1::Schedule* response) override;
  grpc::ServerUnaryReactor* ResumeSchedule(
      grpc::CallbackServerContext* context,
      const v1::ResumeScheduleRequest* request,
      v1::Schedule* response) override;
  grpc::ServerUnaryReactor* DeleteSchedule(
      grpc::CallbackServerContext* context,
      const v1::DeleteScheduleRequest* request,
      v1::DeleteScheduleResponse* response) override;

  grpc::ServerUnaryReactor* SetKeyLimit(
      grpc::CallbackServerContext* context,
      const v1::SetKeyLimitRequest* request,
      v1::SetKeyLimitResponse* response) override;
  grpc::ServerUnaryReactor* GetKeyLimits(
      grpc::CallbackServerContext* context,
      const v1::GetKeyLimitsRequest* request,
      v1::GetKeyLimitsResponse* response) override;

  // Used by sessions.
  Scheduler& scheduler() { return scheduler_; }
  const TaskRegistry& registry() const { return registry_; }
  // A copy: SetLimits (SIGHUP) may change them while streams run.
  ServiceLimits limits() const {
    absl::MutexLock lock(&limits_mu_);
    return limits_;
  }
  // Live reload; max_message_bytes is fixed at start (a new value is
  // ignored).
  void SetLimits(const ServiceLimits& limits) {
    absl::MutexLock lock(&limits_mu_);
    const size_t message_bytes = limits_.max_message_bytes;
    limits_ = limits;
    limits_.max_message_bytes = message_bytes;
  }
  void Register(const std::shared_ptr<StreamSession>& session);
  void Unregister(StreamSession* session);
  // Who calls, if it has one of `roles` (PermissionDenied otherwise).
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& context,
                                   uint32_t roles, std::string_view what) const;
  // A stream of `caller` opens (ResourceExhausted over its limit or the
  // total) / ends.
  absl::Status OpenStream(const Caller& caller);
  void CloseStream(const Caller& caller);
  // Takes up to `n` submits from `caller`'s rate budget; returns how many it
  // may submit now, and when it may submit more.
  size_t TakeSubmits(const Caller& caller, size_t n, absl::Duration* retry);
  // What the streams hold for their clients, all together (sessions count
  // themselves in; ServiceLimits::total_stream_buffer_bytes).
  using StreamBuffers = jobd::StreamBuffers;
  // Shared with each session's account (a session may outlive the service).
  const std::shared_ptr<StreamBuffers>& buffers() { return buffers_; }

 private:
  // When a unary answer from another node is due: a little before the
  // RPC's deadline, and at most RemoteJobs::kDefaultWait from now.
  static absl::Time AnswerBy(const grpc::CallbackServerContext& context);

  struct Bucket {
    double tokens = 0;
    absl::Time refilled = absl::InfinitePast();
  };

  Scheduler& scheduler_;
  const TaskRegistry& registry_;
  const Authenticator& auth_;
  const std::function<void()> drain_;
  mutable absl::Mutex limits_mu_;
  ServiceLimits limits_ ABSL_GUARDED_BY(limits_mu_);
  const std::string version_;
  std::function<std::string(std::string_view)> peer_names_;     // Set first.
  schedules::ScheduleRunner* schedules_ = nullptr;              // Set first.
  std::function<void(v1::GetStatsResponse&)> stats_extension_;  // Set first.
  RemoteJobs* remote_ = nullptr;                                // Set first.
  const std::shared_ptr<StreamBuffers> buffers_ =
      std::make_shared<StreamBuffers>();

  absl::Mutex mu_;
  absl::flat_hash_map<StreamSession*, std::weak_ptr<StreamSession>> sessions_
      ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, size_t> streams_ ABSL_GUARDED_BY(mu_);
  size_t open_streams_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

// A server stream that can be asked to end (after flushing) at shutdown.
class StreamSession {
 public:
  virtual ~StreamSession() = default;
  virtual void Close(const grpc::Status& status) = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_SERVICE_H_
