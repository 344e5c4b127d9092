// OutputSession: one StreamJobOutput stream (README: Job output): what is
// kept of one job's output from an offset on, in messages of at most
// kOutputMessageBytes of data, then, when following, the output as the job
// writes it, until the job ends. A message says how many bytes the reader
// missed (dropped: not kept, or gone while it read), and where to resume.
// The job never waits for a reader: one message is read at a time, from
// what the scheduler keeps (Scheduler::ReadOutput), after the previous
// write completed; with nothing new, the session waits for a wake-up
// (Scheduler::WhenOutput) and holds nothing meanwhile.
//
// Thread-safety: gRPC's threads call its reactions; wake-ups come from
// the threads that append output or end jobs (an executor's, the
// scheduler's callers'). State is guarded by mu_, a leaf: nothing is
// called with it held. Only one read-and-write runs at a time (busy_);
// the response is touched only by its holder.
// Another node's job (cluster mode) is read at its node, one message per
// ask (RemoteJobs::ReadOutput); a follower's ask waits there up to
// kRemoteRound for something new, then it asks again. A job of this node
// that was shared is read the same way where it runs or ran
// (RemoteJobs::ReadSharedOutput).
//
// Ownership: created by JobServiceImpl::StreamJobOutput, which returns it
// to gRPC; it owns itself (self_) until OnDone. Wake-ups and remote
// answers hold it weakly.
#ifndef JOBD_SERVER_FRONTEND_OUTPUT_SESSION_H_
#define JOBD_SERVER_FRONTEND_OUTPUT_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/frontend/auth.h"
#include "server/frontend/service.h"

namespace jobd {

// Output bytes per message, at most.
inline constexpr size_t kOutputMessageBytes = 64 << 10;
// A follower of another node's job asks again at least this often.
inline constexpr absl::Duration kRemoteRound = absl::Seconds(5);

class OutputSession final
    : public grpc::ServerWriteReactor<v1::StreamJobOutputResponse>,
      public StreamSession,
      public std::enable_shared_from_this<OutputSession> {
 public:
  explicit OutputSession(JobServiceImpl& service) : service_(service) {}

  // The prologue: counts the stream in, checks the request and the job
  // (NotFound ends the stream at once), registers with the service, and
  // starts sending.
  void Begin(const v1::StreamJobOutputRequest& request,
             absl::StatusOr<Caller> caller);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  // Ends the stream after the write in progress (shutdown).
  void Close(const grpc::Status& status) override;

 private:
  // Reads and writes the next message, waits for more, or finishes.
  void Pump();
  // Another node's job: asks for the next message; OnRemote writes it.
  void AskRemote(uint64_t offset, size_t max_bytes);
  // This node's shared job, as `here` (its read here) says.
  void AskShared(const OutputRead& here, uint64_t offset, size_t max_bytes);
  void OnRemote(absl::StatusOr<v1::StreamJobOutputResponse> r);
  void Finish(const grpc::Status& status);

  JobServiceImpl& service_;
  // Set in Begin(), then const.
  uint64_t id_ = 0;               // This node's job, or
  std::optional<JobRef> remote_;  // another node's.
  std::string owner_;             // Empty for an admin.
  bool follow_ = false;
  Caller caller_;
  bool counted_ = false;                  // OpenStream succeeded: CloseStream.
  std::shared_ptr<OutputSession> self_;   // Alive until OnDone.
  v1::StreamJobOutputResponse response_;  // busy_ holder only.

  absl::Mutex mu_;
  uint64_t offset_ ABSL_GUARDED_BY(mu_) = 0;    // Next byte to send.
  bool busy_ ABSL_GUARDED_BY(mu_) = false;      // Reading or writing.
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;   // For WhenOutput.
  bool last_ ABSL_GUARDED_BY(mu_) = false;      // The write is the last.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called.
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // OnDone began.
  std::optional<grpc::Status> close_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_OUTPUT_SESSION_H_
