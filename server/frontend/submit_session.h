// SubmitSession: one Submit stream (README: Submitting jobs). The client
// sends SubmitRequests (its options first, then items of specs); each item
// is validated, admitted by the scheduler within the caller's quotas, and
// answered with its job's events (ACCEPTED ... an end, or REJECTED),
// written in batches once durable, in completion order or, with
// ORDER_SUBMISSION, in the order of the items.
//
// Flow control: the stream reads on while its jobs in flight stay under
// its window and what it holds (events not yet written, the specs of its
// jobs in flight and the results they are expected to add) stays under
// stream_buffer_bytes; a client that stops reading stops being read, and
// past twice its limit its stream is ended (its jobs go on).
//
// Reads and writes raw grpc::ByteBuffers: a message that does not parse
// ends the stream INVALID_ARGUMENT naming it, instead of looking like the
// client's half-close (server/frontend/request_errors.h).
//
// Thread-safety: see StreamSessionBase (server/frontend/stream_session.h);
// the request (read side) and response (write side) buffers are touched
// only by the holder of the outstanding read or write.
// Ownership: created by JobServiceImpl::Submit, which returns it to gRPC;
// it owns itself until OnDone.
#ifndef JOBD_SERVER_FRONTEND_SUBMIT_SESSION_H_
#define JOBD_SERVER_FRONTEND_SUBMIT_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/frontend/stream_session.h"
#include "server/frontend/stream_tags.h"

namespace jobd {

class SubmitSession final
    : public StreamSessionBase<
          SubmitSession,
          grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
          TaggedEvent> {
 public:
  explicit SubmitSession(JobServiceImpl& service)
      : StreamSessionBase(service, /*started=*/true) {}

  // The prologue, with what Authorize found: registers with the service,
  // counts the stream in, and starts reading (or ends the stream).
  // `traceparent`: the stream's `traceparent` metadata (kept if valid: the
  // traceparent of its items that name none).
  void Begin(absl::StatusOr<Caller> caller, std::string_view traceparent = {});

  // The stream's RPC deadline (before Begin): the start_deadline of its
  // specs that are due at once and set none.
  void set_rpc_deadline(absl::Time deadline) { rpc_deadline_ = deadline; }

  // EventSink (under the scheduler's lock).
  bool Deliver(const Event& event, uint64_t index) override;

  void OnReadDone(bool ok) override;
  void OnDone() override;

 private:
  friend StreamSessionBase;  // Calls Pump().

  struct Item {
    uint64_t client_tag = 0;
    uint64_t job_id = 0;
    // Submission order: a terminal event waiting for the items before it.
    // (Boxed: most items never hold one, and a stream has up to a window's
    // worth of items.) An item in the map has ended iff it holds one.
    std::unique_ptr<const Event> held;
  };
  // Keyed by stream index, which only grows: a btree packs such keys
  // densely and never doubles (a stream may hold a whole window of items).
  using ItemMap = absl::btree_map<uint64_t, Item>;

  // Queues the end of an item (submission order: holds it back until the
  // items before it have ended).
  void EndItemLocked(ItemMap::iterator it, const Event& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Validates and submits the items of the request just read.
  void HandleRequest();
  // Validates and submits items [begin, end) of the request just read
  // (stream indexes from first_index); an item whose `unresolved` is not
  // OK is rejected with it. Remembers their tags.
  void SubmitItems(int begin, int end, uint64_t first_index,
                   const ServiceLimits& limits,
                   std::vector<absl::Status>& unresolved);
  // Appends the job ids of the earlier items item.depends_on_tags names to
  // its spec.depends_on, or says which tag is no earlier admitted item's.
  absl::Status ResolveTags(v1::SubmitItem& item);
  // Starts a write, resumes reading, or finishes, as the state allows.
  void Pump();
  // Starts a read this thread decided on (read_starting_ set under mu_),
  // then pumps: a Finish held back meanwhile may be due now.
  void StartReadThenPump();
  bool CanReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  static bool IsEnd(v1::EventType type) {
    return IsTerminal(type) || type == v1::EVENT_TYPE_REJECTED;
  }

  // Touched only by the holder of the read (request_) or write (response_)
  // token, as the flags below grant them.
  grpc::ByteBuffer raw_request_;
  v1::SubmitRequest request_;
  v1::SubmitResponse response_;
  grpc::ByteBuffer raw_response_;
  bool got_options_ = false;                          // Read side only.
  absl::Time rpc_deadline_ = absl::InfiniteFuture();  // Const after Begin.
  std::string traceparent_;     // Set in Begin(), then const.
  uint64_t messages_read_ = 0;  // Read side only.
  // Read side only: the job of the latest item with each client tag, for
  // depends_on_tags (the latest StreamTags::kMax items).
  StreamTags tags_;

  v1::SubmitOptions options_ ABSL_GUARDED_BY(mu_);
  uint32_t window_ ABSL_GUARDED_BY(mu_) = 1;
  uint32_t mask_ = kAllEvents;  // Set before the first Submit; read side.
  ItemMap items_ ABSL_GUARDED_BY(mu_);  // End not yet queued for writing.
  size_t unsent_ends_ ABSL_GUARDED_BY(mu_) = 0;  // Queued, not yet written.
  uint64_t next_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_release_ ABSL_GUARDED_BY(mu_) = 0;
  bool read_starting_ ABSL_GUARDED_BY(mu_) = false;  // See Pump().
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  // Ended for holding too much: nothing is queued any more.
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Of `held` events.
  // Jobs admitted and the bytes of their specs; terminal events and theirs.
  uint64_t admitted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t admitted_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t end_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_SUBMIT_SESSION_H_
