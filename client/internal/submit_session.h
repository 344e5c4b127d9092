// Internal: one Submit stream shared by the futures of a Client. A writer
// thread sends queued specs, coalesced into SubmitRequests of up to
// max_batch items; a reader thread dispatches the events to the futures by
// client_tag. When the stream ends, every future still open completes with
// the stream's error. Not part of the public API.
//
// Thread-safety: Enqueue/Close/finished may be called from any thread; state
// is guarded by mu_ (lock order: mu_, then FutureState::mu).
// Ownership: the Client holds the session (shared_ptr); the two threads hold
// it too until they exit, so a Close() from the session's own reader thread
// (a done callback destroying the Client) cannot free it under them.
#ifndef JOBD_CLIENT_INTERNAL_SUBMIT_SESSION_H_
#define JOBD_CLIENT_INTERNAL_SUBMIT_SESSION_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/internal/core.h"
#include "client/internal/future_state.h"

namespace jobd::client::internal {

class SubmitSession : public std::enable_shared_from_this<SubmitSession> {
 public:
  explicit SubmitSession(std::shared_ptr<const Core> core);
  ~SubmitSession();

  // Queues a spec for `state`; false if the session no longer takes specs
  // (its stream ended, or it is closing).
  bool Enqueue(const std::shared_ptr<FutureState>& state, v1::JobSpec* spec)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the threads (after the first Enqueue).
  void Start();

  // Sends what is queued, half-closes, waits at most `timeout` for the specs
  // to be acknowledged and the stream to end, then cancels it, completes the
  // open futures and joins the threads.
  void Close(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // Both threads have run to their end (joining them cannot block).
  bool finished() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::shared_ptr<FutureState> state;
    bool acked = false;  // ACCEPTED / REJECTED / terminal seen.
  };
  using Stream =
      grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>;

  void ReaderMain();
  void WriterMain();
  void JoinThreads();

  const std::shared_ptr<const Core> core_;
  grpc::ClientContext context_;  // TryCancel is thread-safe.

  mutable absl::Mutex mu_;
  std::unique_ptr<Stream> stream_ ABSL_GUARDED_BY(mu_);  // Set when opened.
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  bool read_ended_ ABSL_GUARDED_BY(mu_) = false;   // No more Enqueue/Write.
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;  // Futures completed.
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_by_close_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // Writer inside a stream call.
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool reader_exited_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_exited_ ABSL_GUARDED_BY(mu_) = false;
  // Batches to send, oldest first; the last one is being filled.
  std::deque<std::unique_ptr<v1::SubmitRequest>> batches_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<v1::SubmitRequest>> spare_ ABSL_GUARDED_BY(mu_);
  uint64_t unacked_ ABSL_GUARDED_BY(mu_) = 0;  // Sent, not yet acknowledged.
  absl::flat_hash_map<uint64_t, Entry> open_ ABSL_GUARDED_BY(mu_);

  std::thread reader_;
  std::thread writer_;
  bool started_ = false;  // Set by Start(), before the threads run.
};

}  // namespace jobd::client::internal

#endif  // JOBD_CLIENT_INTERNAL_SUBMIT_SESSION_H_
