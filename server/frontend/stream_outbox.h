// The outgoing side of a Submit or WatchJobs stream
// (server/frontend/submit_session.h, watch_session.h), apart from gRPC's
// reactors so that it can be tested alone:
//  * Outbox: the events queued for one client, in order; the write
//    protocol of a callback reactor (at most one write in flight; Finish
//    exactly once, and only when no write is in flight and nothing is
//    queued); and Fill, which moves queued events into one response
//    message: in order, up to the first whose journal ticket is not
//    durable yet (server/journal/journal.h), within a count and a byte
//    limit;
//  * BufferAccount: the bytes a stream holds for its client, counted
//    against its own limit and the service's total
//    (ServiceLimits::stream_buffer_bytes, total_stream_buffer_bytes).
//
// Thread-safety: StreamBuffers is atomic, shared by every stream; an Outbox
// (and its BufferAccount) is guarded by its session's mutex.
// Ownership: an Outbox owns its queued events (which share their result or
// progress with the job); the service and every account share the
// StreamBuffers (a session can outlive the service: a job record that
// subscribed it lets go of it only when the scheduler goes).
#ifndef JOBD_SERVER_FRONTEND_STREAM_OUTBOX_H_
#define JOBD_SERVER_FRONTEND_STREAM_OUTBOX_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "jobd/v1/jobd.pb.h"
#include "server/frontend/convert.h"
#include "server/jobs/job_types.h"

namespace jobd {

// A response message takes events until it holds this many, or this many
// bytes (at least one event): enough to amortize a write, and far below
// gRPC's default 4 MiB receive limit unless a single result is larger.
// Never beyond the message limit: an event that would not fit with those
// before it goes in the next message (one event always fits: the
// scheduler fails a job whose result would not).
constexpr int kMaxEventsPerMessage = 1024;
constexpr size_t kMaxBytesPerMessage = 1 << 20;
// Bytes of a response message kept clear of the limit (its own framing).
constexpr size_t kMessageSlackBytes = 1024;
// A write outstanding this long: the client has stopped reading.
constexpr absl::Duration kStalled = absl::Seconds(1);

// What the streams hold for their clients, all together (each stream's
// BufferAccount counts itself in).
struct StreamBuffers {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> streams{0};
};

// An event queued for a Submit stream, with the client's tag for its job.
struct TaggedEvent {
  Event event;
  uint64_t client_tag;
};

// What a queued event holds: itself, its queue slot and allocator overhead
// (an estimate), and what it carries. A result is shared with its job, but
// outlives it there when retention forgets the job first.
inline uint64_t EventBytes(const Event& e) {
  uint64_t n = 2 * sizeof(TaggedEvent);
  if (e.end() != nullptr) n += e.end()->bytes;
  if (e.progress() != nullptr) n += e.progress()->message().size();
  return n;
}

// An Outbox's items: an Event (tag 0) or a TaggedEvent.
inline const Event& EventOf(const Event& e) { return e; }
inline const Event& EventOf(const TaggedEvent& e) { return e.event; }
inline uint64_t TagOf(const Event&) { return 0; }
inline uint64_t TagOf(const TaggedEvent& e) { return e.client_tag; }

// What one stream holds for its client, in bytes: its own count, and its
// part of the service's total. Guarded by the owner's mutex (the total is
// atomic); given back when it goes. The total sees each stream's bytes in
// whole granules, so that the many streams that hold little never touch
// it (a shared cache line, written for every event, cost ~10% of the
// throughput of tiny jobs).
class BufferAccount {
 public:
  static constexpr uint64_t kGranule = 16 << 10;

  explicit BufferAccount(std::shared_ptr<StreamBuffers> all)
      : all_(std::move(all)) {
    all_->streams.fetch_add(1, std::memory_order_relaxed);
  }
  ~BufferAccount() {
    all_->bytes.fetch_sub(shown_, std::memory_order_relaxed);
    all_->streams.fetch_sub(1, std::memory_order_relaxed);
  }
  BufferAccount(const BufferAccount&) = delete;
  BufferAccount& operator=(const BufferAccount&) = delete;

  void Charge(uint64_t n) {
    bytes_ += n;
    Show();
  }
  void Release(uint64_t n) {
    bytes_ -= std::min(n, bytes_);
    Show();
  }
  uint64_t bytes() const { return bytes_; }
  // Holds `factor` times its limit: `cap`, or, while all streams together
  // hold `total`, its share of that (so the streams that hold the most go
  // first; one that holds less than a granule is not among them). A stream
  // that holds nothing is never over: one event, however big, always gets
  // through. (0: no cap, no total.)
  bool Over(uint64_t cap, uint64_t total, uint64_t factor) const {
    if (bytes_ == 0) return false;
    if (cap > 0 && bytes_ >= factor * cap) return true;
    if (total == 0 || bytes_ < kGranule ||
        all_->bytes.load(std::memory_order_relaxed) < total) {
      return false;
    }
    const uint64_t streams =
        std::max<uint64_t>(1, all_->streams.load(std::memory_order_relaxed));
    return bytes_ >= factor * (total / streams);
  }

 private:
  void Show() {
    const uint64_t shown = bytes_ / kGranule * kGranule;
    if (shown > shown_) {
      all_->bytes.fetch_add(shown - shown_, std::memory_order_relaxed);
    } else if (shown < shown_) {
      all_->bytes.fetch_sub(shown_ - shown, std::memory_order_relaxed);
    }
    shown_ = shown;
  }

  std::shared_ptr<StreamBuffers> all_;
  uint64_t bytes_ = 0;
  uint64_t shown_ = 0;  // In the total.
};

// The outgoing side of one stream: queued items (Event or TaggedEvent)
// and the write protocol. What the items hold is charged to `account`
// (EventBytes). Guarded by the owner's mutex.
template <typename Item>
struct Outbox {
  explicit Outbox(std::shared_ptr<StreamBuffers> all)
      : account(std::move(all)) {}

  void Push(Item item) {
    const uint64_t n = EventBytes(EventOf(item));
    items_bytes += n;
    account.Charge(n);
    items.push_back(std::move(item));
  }
  void PopFront() {
    const uint64_t n =
        std::min(items_bytes, EventBytes(EventOf(items.front())));
    items_bytes -= n;
    account.Release(n);
    items.pop_front();
  }
  void Clear() {
    account.Release(items_bytes);
    items_bytes = 0;
    items.clear();
  }

  // Moves queued events into `events` (a response message's), in order:
  // while their journal ticket is durable (<= `durable`), at most
  // kMaxEventsPerMessage of them, until they hold kMaxBytesPerMessage, and
  // never past `max_bytes` unless the first alone is. Calls `sent(item)`
  // for each just before it leaves the queue; what left stays charged to
  // the account (twice) until WriteDone. Returns the ticket of the
  // event held back for the journal if no wait was asked for it yet (the
  // caller asks, then fills again once it is durable), else 0.
  template <typename Sent>
  uint64_t Fill(google::protobuf::RepeatedPtrField<v1::JobEvent>& events,
                uint64_t durable, size_t max_bytes, Sent&& sent) {
    uint64_t rearm = 0;
    size_t bytes = 0;
    for (int n = 0; n < kMaxEventsPerMessage && !items.empty() &&
                    bytes < kMaxBytesPerMessage;
         ++n) {
      const Item& item = items.front();
      const Event& event = EventOf(item);
      if (event.ticket > durable) {
        if (event.ticket > rearmed) rearm = rearmed = event.ticket;
        break;
      }
      v1::JobEvent* e = events.Add();
      ToProto(event, TagOf(item), e);
      const size_t size = e->ByteSizeLong() + 8;  // With tag and length.
      if (n > 0 && bytes + size > max_bytes) {
        events.RemoveLast();  // The next message's.
        break;
      }
      bytes += size;
      sent(item);
      PopFront();
    }
    // The message stays held until its write is done, twice (the message,
    // and gRPC's serialized copy of it, which waits for a client that does
    // not read): counted so that such a stream is over its limit too.
    in_flight_bytes = 2 * bytes;
    account.Charge(in_flight_bytes);
    return rearm;
  }

  void RequestFinish(grpc::Status status) {
    if (finish_requested) return;
    finish_requested = true;
    finish_status = std::move(status);
  }
  // The stream is dead or must end now: drop what is queued.
  void Abort(grpc::Status status) {
    Clear();
    RequestFinish(std::move(status));
  }
  // OnWriteDone.
  void WriteDone(bool ok) {
    writing = false;
    account.Release(in_flight_bytes);
    in_flight_bytes = 0;
    if (!ok) Abort(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
  }
  // True once (then Finish(*status) must be called): nothing left to write.
  bool TakeFinish(grpc::Status* status) {
    if (writing || !items.empty() || !finish_requested || finish_called) {
      return false;
    }
    finish_called = true;
    *status = finish_status;
    return true;
  }
  // A write has been outstanding for longer than kStalled.
  bool Stalled() const {
    return writing && absl::Now() - write_since > kStalled;
  }

  std::deque<Item> items;
  uint64_t items_bytes = 0;
  uint64_t in_flight_bytes = 0;  // The message of the outstanding write.
  BufferAccount account;
  absl::Time write_since;         // When the outstanding write began.
  bool writing = false;           // A StartWrite is outstanding.
  bool finish_requested = false;  // End once the queue is flushed.
  bool finish_called = false;
  grpc::Status finish_status;
  uint64_t rearmed = 0;  // Highest ticket a wait was asked for (Fill).
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_STREAM_OUTBOX_H_
