#include "server/frontend/service.h"

#include <algorithm>
#include <deque>
#include <optional>

#include "absl/container/btree_map.h"
#include "server/frontend/convert.h"
#include "server/frontend/request_errors.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

namespace {

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
// An event queued for a Submit stream, with the client's tag for its job.
struct TaggedEvent {
  Event event;
  uint64_t client_tag;
};

// What a queued event holds: itself, its queue slot and allocator overhead
// (an estimate), and what it carries. A result is shared with its job, but
// outlives it there when retention forgets the job first.
uint64_t EventBytes(const Event& e) {
  uint64_t n = 2 * sizeof(TaggedEvent);
  if (e.end() != nullptr) n += e.end()->bytes;
  if (e.progress() != nullptr) n += e.progress()->message().size();
  return n;
}
uint64_t ItemBytes(const Event& e) { return EventBytes(e); }
uint64_t ItemBytes(const TaggedEvent& e) { return EventBytes(e.event); }

// What one stream holds for its client, in bytes: its own count, and its
// part of the service's total. Guarded by the owner's mutex (the total is
// atomic); given back when it goes. The total sees each stream's bytes in
// whole granules, so that the many streams that hold little never touch
// it (a shared cache line, written for every event, cost ~10% of the
// throughput of tiny jobs).
class BufferAccount {
 public:
  static constexpr uint64_t kGranule = 16 << 10;

  explicit BufferAccount(JobServiceImpl::StreamBuffers& all) : all_(all) {
    all_.streams.fetch_add(1, std::memory_order_relaxed);
  }
  ~BufferAccount() {
    all_.bytes.fetch_sub(shown_, std::memory_order_relaxed);
    all_.streams.fetch_sub(1, std::memory_order_relaxed);
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
  // through.
  bool Over(uint64_t cap, uint64_t total, uint64_t factor) const {
    if (bytes_ == 0) return false;
    if (cap > 0 && bytes_ >= factor * cap) return true;
    if (total == 0 || bytes_ < kGranule ||
        all_.bytes.load(std::memory_order_relaxed) < total) {
      return false;
    }
    const uint64_t streams =
        std::max<uint64_t>(1, all_.streams.load(std::memory_order_relaxed));
    return bytes_ >= factor * (total / streams);
  }

 private:
  void Show() {
    const uint64_t shown = bytes_ / kGranule * kGranule;
    if (shown > shown_) {
      all_.bytes.fetch_add(shown - shown_, std::memory_order_relaxed);
    } else if (shown < shown_) {
      all_.bytes.fetch_sub(shown_ - shown, std::memory_order_relaxed);
    }
    shown_ = shown;
  }

  JobServiceImpl::StreamBuffers& all_;
  uint64_t bytes_ = 0;
  uint64_t shown_ = 0;  // In the total.
};

// "1.5 MiB".
std::string Mib(uint64_t n) {
  return fmt::format("{:.1f} MiB", static_cast<double>(n) / (1 << 20));
}

// The outgoing side of a streaming session: queued items and the write
// protocol — at most one write in flight; Finish exactly once, and only when
// no write is in flight and the queue is empty. Guarded by the owner's mutex.
// What the items hold is charged to `account` (EventBytes).
template <typename Item>
struct Outbox {
  explicit Outbox(JobServiceImpl::StreamBuffers& all) : account(all) {}
  void Push(Item item) {
    const uint64_t n = ItemBytes(item);
    items_bytes += n;
    account.Charge(n);
    items.push_back(std::move(item));
  }
  void PopFront() {
    const uint64_t n = std::min(items_bytes, ItemBytes(items.front()));
    items_bytes -= n;
    account.Release(n);
    items.pop_front();
  }
  void Clear() {
    account.Release(items_bytes);
    items_bytes = 0;
    items.clear();
  }

  std::deque<Item> items;
  uint64_t items_bytes = 0;
  BufferAccount account;
  absl::Time write_since;         // When the outstanding write began.
  bool writing = false;           // A StartWrite is outstanding.
  bool finish_requested = false;  // End once the queue is flushed.
  bool finish_called = false;
  grpc::Status finish_status;

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
};

const grpc::Status kClientCancelled(grpc::StatusCode::CANCELLED,
                                    "client cancelled");

// A write outstanding this long: the client has stopped reading.
constexpr absl::Duration kStalled = absl::Seconds(1);

// Durability gate (server/journal.h): a session writes its queued events in
// order up to the first whose journal ticket is not durable yet, and asks
// for its Flush() to run again once it is.
template <typename Session>
void FlushWhenDurable(Scheduler& scheduler,
                      const std::shared_ptr<Session>& session,
                      uint64_t ticket) {
  if (session == nullptr) return;  // Ending.
  // Never held through a journal outage: the stream ends UNAVAILABLE then
  // (its client resumes or retries with idempotency keys).
  scheduler.WhenDurable(
      ticket,
      [weak = std::weak_ptr<Session>(session), &scheduler](bool durable) {
        auto s = weak.lock();
        if (s == nullptr) return;
        if (durable) {
          s->Flush();
        } else {
          s->AbortNotDurable(scheduler.NotDurable());
        }
      },
      Journal::Wait::kFailFast);
}

// Base of the streaming sessions: the session mutex, the outbox, and the
// reactions that touch nothing else. Derived must provide Pump(), which
// starts writes and calls Finish as the outbox allows.
template <typename Derived, typename Reactor, typename Item>
class OutboxReactor : public Reactor {
 public:
  explicit OutboxReactor(JobServiceImpl& service) : out_(service.buffers()) {}

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      out_.WriteDone(ok);
    }
    static_cast<Derived*>(this)->Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      out_.Abort(kClientCancelled);
    }
    static_cast<Derived*>(this)->Pump();
  }

  // The journal will never make the held events durable (shutdown with
  // failing writes): they are dropped, never sent, and the stream ends.
  void AbortNotDurable(const absl::Status& why) {
    {
      absl::MutexLock lock(&mu_);
      out_.Abort(ToGrpc(why));
    }
    static_cast<Derived*>(this)->Pump();
  }

 protected:
  absl::Mutex mu_;
  Outbox<Item> out_ ABSL_GUARDED_BY(mu_);
};

// What a session decided to do under its lock, done after unlocking.
struct Actions {
  bool write = false;
  bool read = false;
  bool finish = false;
  grpc::Status status;
};

Event Rejection(const absl::Status& status) {
  Event e;
  e.type = v1::EVENT_TYPE_REJECTED;
  e.time = absl::Now();
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_UNSPECIFIED;
  v1::JobError& error = end->mutable_error();
  error.set_code(static_cast<int32_t>(status.code()));
  const absl::string_view message = status.message();
  error.set_message(ClipUtf8(std::string_view(message.data(), message.size()),
                             kMaxErrorMessageBytes));
  error.set_reason(status.code() == absl::StatusCode::kResourceExhausted
                       ? v1::ERROR_REASON_OVERLOADED
                   : status.code() == absl::StatusCode::kUnavailable
                       ? v1::ERROR_REASON_SHUTDOWN
                       : v1::ERROR_REASON_INVALID_INPUT);
  end->bytes = static_cast<uint32_t>(error.ByteSizeLong());
  e.set_end(std::move(end));
  return e;
}

// ---------------------------------------------------------------------------
// Submit: bidi stream of specs in, events out.
class SubmitSession final
    : public OutboxReactor<
          SubmitSession,
          grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
          TaggedEvent>,
      public EventSink,
      public StreamSession,
      public std::enable_shared_from_this<SubmitSession> {
 public:
  explicit SubmitSession(JobServiceImpl& service)
      : OutboxReactor(service),
        service_(service),
        buffer_bytes_(service.limits().stream_buffer_bytes),
        total_buffer_bytes_(service.limits().total_stream_buffer_bytes),
        max_bytes_(service.limits().max_message_bytes - kMessageSlackBytes) {}
  friend OutboxReactor;  // Calls Pump().

  void Begin(absl::StatusOr<Caller> caller) {
    self_ = shared_from_this();
    service_.Register(self_);
    if (!caller.ok()) {
      Close(ToGrpc(caller.status()));
      return;
    }
    if (absl::Status s = service_.OpenStream(*caller); !s.ok()) {
      Close(ToGrpc(s));
      return;
    }
    caller_ = *std::move(caller);
    counted_ = true;
    if (service_.scheduler().draining()) {
      Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                         "jobd is draining (shutting down): not accepting "
                         "new jobs"));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (out_.finish_requested) return;  // Closed meanwhile (shutdown).
      read_starting_ = true;
    }
    StartReadThenPump();
  }

  void Close(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      out_.RequestFinish(status);
    }
    Pump();
  }

  bool Deliver(const Event& event, uint64_t index) override {
    absl::MutexLock lock(&mu_);
    if (done_ || overflowed_) return false;
    auto it = items_.find(index);
    if (it == items_.end()) return false;
    if (out_.account.Over(buffer_bytes_, total_buffer_bytes_, 2) &&
        out_.writing && absl::Now() - out_.write_since > kStalled) {
      // It stopped taking jobs at its limit, and those it had in flight
      // went on ending: a client that does not read costs no more.
      overflowed_ = true;
      out_.Abort(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          fmt::format(
              "the client did not read its events: {} waited to be sent "
              "(stream-buffer-bytes {}, total-stream-buffer-bytes {}); the "
              "stream's jobs go on: GetJob them, or watch them with "
              "WatchJobs",
              Mib(out_.account.bytes()), Mib(buffer_bytes_),
              Mib(total_buffer_bytes_))));
      spdlog::warn("submit stream of '{}' ended: {} of events unread",
                   caller_.name, Mib(out_.account.bytes()));
    } else if (IsEnd(event.type)) {
      EndItemLocked(it, event);
    } else {
      if (event.type == v1::EVENT_TYPE_PROGRESS &&
          (out_.items.size() > 3 * static_cast<size_t>(window_) + 1024 ||
           out_.account.Over(buffer_bytes_, total_buffer_bytes_, 1))) {
        return false;  // Reader is slow: progress is the one thing to drop.
      }
      out_.Push({event, it->second.client_tag});
    }
    if (flush_pending_) return false;
    flush_pending_ = true;
    return true;
  }

  void Flush() override { Pump(); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // Client half-closed (or is gone: OnCancel follows).
      {
        absl::MutexLock lock(&mu_);
        half_closed_ = true;
      }
      Pump();
      return;
    }
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      stopping = out_.finish_requested;
    }
    if (!stopping) {
      ++messages_read_;
      if (absl::Status s = ParseRequest(raw_request_, request_); !s.ok()) {
        Close(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            fmt::format("Submit: message {} of the stream is {}",
                        messages_read_, std::string(s.message()))));
      } else {
        HandleRequest();
      }
    }
    bool read = false;
    {
      absl::MutexLock lock(&mu_);
      if (CanReadLocked()) {
        read_starting_ = read = true;
      } else if (!out_.finish_requested && !half_closed_) {
        read_paused_ = true;  // Resumed by Pump() when jobs end.
      }
    }
    if (read) {
      StartReadThenPump();
    } else {
      Pump();
    }
  }

  void OnDone() override {
    std::vector<uint64_t> unfinished;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (options_.cancel_on_disconnect()) {
        for (const auto& [index, item] : items_) {
          if (item.held == nullptr && item.job_id != 0)
            unfinished.push_back(item.job_id);
        }
      }
      items_.clear();
      out_.account.Release(held_bytes_);
      held_bytes_ = 0;
      out_.Clear();
    }
    for (uint64_t id : unfinished) (void)service_.scheduler().Cancel(id);
    if (!unfinished.empty()) {
      spdlog::info("submit stream ended early: cancelled {} unfinished job(s)",
                   unfinished.size());
    }
    if (counted_) service_.CloseStream(caller_);
    service_.Unregister(this);
    self_.reset();  // May delete this.
  }

 private:
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

  void EndItemLocked(ItemMap::iterator it, const Event& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (it->second.held != nullptr) return;  // Ended already.
    ++ends_;
    end_bytes_ += EventBytes(event);
    if (options_.order() != v1::ORDER_SUBMISSION) {
      out_.Push({event, it->second.client_tag});
      ++unsent_ends_;
      items_.erase(it);
      return;
    }
    it->second.held = std::make_unique<const Event>(event);
    held_bytes_ += EventBytes(event);  // Held back: it counts all the same.
    out_.account.Charge(EventBytes(event));
    for (auto head = items_.find(next_release_);
         head != items_.end() && head->second.held != nullptr;
         head = items_.find(next_release_)) {
      const uint64_t n = std::min(held_bytes_, EventBytes(*head->second.held));
      held_bytes_ -= n;
      out_.account.Release(n);
      out_.Push({*head->second.held, head->second.client_tag});
      ++unsent_ends_;
      items_.erase(head);
      ++next_release_;
    }
  }

  void HandleRequest() {
    const ServiceLimits limits = service_.limits();
    if (!got_options_) {
      got_options_ = true;
      const v1::SubmitOptions& o = request_.options();
      if (!v1::Order_IsValid(o.order())) {
        Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                           fmt::format("options.order: unknown value {}",
                                       static_cast<int>(o.order()))));
        return;
      }
      absl::MutexLock lock(&mu_);
      options_ = o;
      window_ = o.window() == 0 ? limits.default_window
                                : std::min(o.window(), limits.max_window);
      mask_ = o.terminal_only()
                  ? kTerminalEvents | EventBit(v1::EVENT_TYPE_ACCEPTED)
                  : kAllEvents;
      if (o.omit_accepted()) mask_ &= ~EventBit(v1::EVENT_TYPE_ACCEPTED);
    }
    const int n = request_.items_size();
    if (static_cast<size_t>(n) > limits.max_jobs_per_request) {
      Close(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          fmt::format("SubmitRequest has {} items; the limit is {} "
                      "(max_jobs_per_request)",
                      n, limits.max_jobs_per_request)));
      return;
    }
    if (n == 0) return;
    // Validate outside any lock; give every item its place in stream order.
    std::vector<NewJob> jobs;
    jobs.reserve(n);
    std::vector<std::pair<uint64_t, absl::Status>> rejected;
    uint64_t first_index;
    {
      absl::MutexLock lock(&mu_);
      first_index = next_index_;
      next_index_ += n;
      for (int i = 0; i < n; ++i) {
        items_[first_index + i].client_tag = request_.items(i).client_tag();
      }
    }
    for (int i = 0; i < n; ++i) {
      v1::SubmitItem* item = request_.mutable_items(i);
      absl::StatusOr<NewJob> job = ValidateSpec(
          std::move(*item->mutable_spec()), service_.registry(), limits.spec);
      if (!job.ok()) {
        rejected.emplace_back(first_index + i, job.status());
        continue;
      }
      job->tag = first_index + i;
      job->owner = caller_.name;
      jobs.push_back(*std::move(job));
    }
    // The caller's submit rate: the jobs over its budget are refused.
    absl::Duration retry;
    const size_t allowed = service_.TakeSubmits(caller_, jobs.size(), &retry);
    for (size_t i = allowed; i < jobs.size(); ++i) {
      rejected.emplace_back(
          jobs[i].tag,
          absl::ResourceExhaustedError(fmt::format(
              "caller '{}' is over its submit rate of {} jobs/s "
              "(quota-submit-rate); retry in {}",
              caller_.name, limits.quota_submit_rate,
              absl::FormatDuration(absl::Ceil(retry, absl::Milliseconds(1))))));
    }
    jobs.resize(allowed);
    if (!rejected.empty()) service_.scheduler().CountRejected(rejected.size());
    if (!jobs.empty()) {
      std::vector<uint64_t> tags;
      tags.reserve(jobs.size());
      for (const NewJob& j : jobs) tags.push_back(j.tag);
      std::vector<Admission> admissions;
      admissions.reserve(jobs.size());
      service_.scheduler().Submit(
          jobs, Subscriber{shared_from_this(), 0, mask_}, admissions,
          OwnerQuota{
              .max_live = caller_.admin() ? 0 : limits.quota_max_live,
              .max_bytes = caller_.admin() ? 0 : limits.quota_max_bytes});
      absl::MutexLock lock(&mu_);
      for (size_t i = 0; i < admissions.size(); ++i) {
        if (!admissions[i].status.ok()) {
          rejected.emplace_back(tags[i], admissions[i].status);
          continue;
        }
        // Known here whatever events the client asked for.
        auto it = items_.find(tags[i]);
        if (it != items_.end()) it->second.job_id = admissions[i].job_id;
        ++admitted_;
        admitted_bytes_ += admissions[i].bytes;
      }
    }
    if (!rejected.empty()) {
      absl::MutexLock lock(&mu_);
      for (const auto& [index, status] : rejected) {
        auto it = items_.find(index);
        if (it != items_.end()) EndItemLocked(it, Rejection(status));
      }
    }
  }

  // Starts a write, resumes reading, or finishes, as the state allows.
  void Pump() {
    Actions a;
    uint64_t rearm = 0;
    {
      absl::MutexLock lock(&mu_);
      flush_pending_ = false;
      if (done_ || out_.finish_called) return;
      if (!out_.writing && !out_.items.empty()) {
        const uint64_t durable = service_.scheduler().durable_ticket();
        response_.Clear();
        size_t bytes = 0;
        for (int n = 0; n < kMaxEventsPerMessage && !out_.items.empty() &&
                        bytes < kMaxBytesPerMessage;
             ++n) {
          const TaggedEvent& o = out_.items.front();
          if (o.event.ticket > durable) {
            if (o.event.ticket > rearmed_) rearm = rearmed_ = o.event.ticket;
            break;
          }
          v1::JobEvent* e = response_.add_events();
          ToProto(o.event, o.client_tag, e);
          const size_t size = e->ByteSizeLong() + 8;  // With tag and length.
          if (n > 0 && bytes + size > max_bytes_) {
            response_.mutable_events()->RemoveLast();  // The next one's.
            break;
          }
          bytes += size;
          if (IsEnd(o.event.type)) --unsent_ends_;
          out_.PopFront();
        }
        out_.writing = a.write = response_.events_size() > 0;
        if (a.write) out_.write_since = absl::Now();
      }
      if (read_paused_ && CanReadLocked()) {
        read_paused_ = false;
        read_starting_ = a.read = true;
      }
      if (half_closed_ && items_.empty() && !out_.finish_requested) {
        out_.RequestFinish(grpc::Status::OK);
      }
      // Never Finish while another thread is about to StartRead.
      if (!read_starting_) a.finish = out_.TakeFinish(&a.status);
    }
    if (rearm != 0) {
      FlushWhenDurable(service_.scheduler(), weak_from_this().lock(), rearm);
    }
    if (a.write) {
      bool own = false;
      raw_response_.Clear();  // The previous write's (gRPC holds a ref).
      const grpc::Status s =
          grpc::SerializationTraits<v1::SubmitResponse>::Serialize(
              response_, &raw_response_, &own);
      if (!s.ok()) {  // Messages stay far below protobuf's 2 GiB.
        spdlog::critical("Submit: cannot serialize a response: {}",
                         s.error_message());
        std::abort();
      }
      StartWrite(&raw_response_);
    }
    if (a.read) StartReadThenPump();
    if (a.finish) Finish(a.status);
  }

  // Starts a read this thread decided on (read_starting_ set under mu_),
  // then pumps: a Finish held back meanwhile may be due now.
  void StartReadThenPump() {
    StartRead(&raw_request_);
    {
      absl::MutexLock lock(&mu_);
      read_starting_ = false;
    }
    Pump();
  }

  static bool IsEnd(v1::EventType type) {
    return IsTerminal(type) || type == v1::EVENT_TYPE_REJECTED;
  }

  // Reading goes on while the stream's jobs in flight — accepted and not
  // ended, or ended with the end not yet written — are under the window, so
  // a client that does not read cannot grow the server's memory.
  // So does what they hold, under stream_buffer_bytes: what waits to be
  // written, and what the jobs in flight hold (their specs) and are
  // expected to add (as much as this stream's ends did on average; before
  // the first, as much as their specs), so that a client that reads slower
  // than its jobs end is not buried in results.
  bool CanReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (out_.finish_requested || half_closed_ ||
        items_.size() + unsent_ends_ >= window_ ||
        out_.account.Over(buffer_bytes_, total_buffer_bytes_, 1)) {
      return false;
    }
    if (buffer_bytes_ == 0) return true;
    const uint64_t spec = admitted_ == 0 ? 0 : admitted_bytes_ / admitted_;
    const uint64_t end = ends_ == 0 ? spec : end_bytes_ / ends_;
    return out_.account.bytes() + items_.size() * (spec + end) < buffer_bytes_;
  }

  JobServiceImpl& service_;
  // ServiceLimits' stream_buffer_bytes and total_stream_buffer_bytes when
  // the stream began.
  const uint64_t buffer_bytes_;
  const uint64_t total_buffer_bytes_;
  const size_t max_bytes_;               // Of one response message.
  std::shared_ptr<SubmitSession> self_;  // Alive until OnDone.
  Caller caller_;                        // Set in Begin(), then const.
  bool counted_ = false;  // OpenStream succeeded (Begin): CloseStream.
  // Touched only by the holder of the read (request_) or write (response_)
  // token, as the flags below grant them.
  grpc::ByteBuffer raw_request_;
  v1::SubmitRequest request_;
  v1::SubmitResponse response_;
  grpc::ByteBuffer raw_response_;
  bool got_options_ = false;    // Read side only.
  uint64_t messages_read_ = 0;  // Read side only.

  v1::SubmitOptions options_ ABSL_GUARDED_BY(mu_);
  uint32_t window_ ABSL_GUARDED_BY(mu_) = 1;
  uint32_t mask_ = kAllEvents;  // Set before the first Submit; read side.
  ItemMap items_ ABSL_GUARDED_BY(mu_);  // End not yet queued for writing.
  size_t unsent_ends_ ABSL_GUARDED_BY(mu_) = 0;  // Queued, not yet written.
  uint64_t next_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_release_ ABSL_GUARDED_BY(mu_) = 0;
  bool read_starting_ ABSL_GUARDED_BY(mu_) = false;  // See Pump().
  uint64_t rearmed_ ABSL_GUARDED_BY(mu_) = 0;  // Highest ticket waited for.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  // Ended for holding too much: nothing is queued any more.
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Of `held` events.
  // Jobs admitted and the bytes of their specs; terminal events and theirs.
  uint64_t admitted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t admitted_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t end_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// ---------------------------------------------------------------------------
// WatchJobs: server stream of events of some or all jobs.
class WatchSession final
    : public OutboxReactor<
          WatchSession, grpc::ServerWriteReactor<v1::WatchJobsResponse>, Event>,
      public EventSink,
      public StreamSession,
      public std::enable_shared_from_this<WatchSession> {
 public:
  explicit WatchSession(JobServiceImpl& service)
      : OutboxReactor(service),
        service_(service),
        buffer_bytes_(service.limits().stream_buffer_bytes),
        total_buffer_bytes_(service.limits().total_stream_buffer_bytes),
        max_bytes_(service.limits().max_message_bytes - kMessageSlackBytes) {}
  friend OutboxReactor;  // Calls Pump().

  void Begin(const v1::WatchJobsRequest& request,
             absl::StatusOr<Caller> caller) {
    self_ = shared_from_this();
    if (!caller.ok()) {
      Refuse(ToGrpc(caller.status()));
      return;
    }
    if (absl::Status s = service_.OpenStream(*caller); !s.ok()) {
      Refuse(ToGrpc(s));
      return;
    }
    caller_ = *std::move(caller);
    counted_ = true;
    // ids_ is const once another thread can see this session (Register).
    for (const std::string& s : request.job_ids()) {
      absl::StatusOr<uint64_t> id = ParseJobId(s, "job_ids");
      if (!id.ok()) {
        ids_.clear();
        Refuse(ToGrpc(id.status()));
        return;
      }
      ids_.push_back(*id);
    }
    service_.Register(self_);
    {
      absl::MutexLock lock(&mu_);
      remaining_.insert(ids_.begin(), ids_.end());
    }
    uint32_t mask = kAllEvents;
    if (!request.include_progress()) mask &= ~EventBit(v1::EVENT_TYPE_PROGRESS);
    absl::StatusOr<WatchResult> result = service_.scheduler().Watch(
        ids_, request.after_sequence(),
        Subscriber{shared_from_this(), 0, mask,
                   caller_.admin() ? std::string() : caller_.name});
    if (!result.ok()) {
      ids_.clear();
      Refuse(ToGrpc(result.status()));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      header_.set_oldest_retained_sequence(result->oldest_retained_sequence);
      header_.set_events_lost(result->events_lost);
      for (uint64_t id : result->already_seen_ends) remaining_.erase(id);
      started_ = true;
    }
    Pump();
  }

  void Close(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
      out_.RequestFinish(status);
    }
    Pump();
  }

  // Ends a watch that never began: its status, and no header message.
  void Refuse(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      header_sent_ = true;
    }
    Close(status);
  }

  bool Deliver(const Event& event, uint64_t) override {
    absl::MutexLock lock(&mu_);
    if (done_ || out_.finish_requested) return false;
    if (out_.items.size() >= service_.limits().max_watch_backlog) {
      out_.Abort(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          fmt::format("watcher fell {} events behind; resume with "
                      "after_sequence={}",
                      service_.limits().max_watch_backlog, last_sent_)));
    } else if (out_.account.Over(buffer_bytes_, total_buffer_bytes_, 1) &&
               !out_.items.empty() &&
               out_.items.front().ticket <=
                   service_.scheduler().durable_ticket()) {
      // (Not while it waits for the journal: that is no fault of its.)
      // A client that stopped reading loses what is queued; one that reads
      // gets it, then the end: either way, nothing more is queued, and it
      // resumes where it was told.
      const bool stalled =
          out_.writing && absl::Now() - out_.write_since > kStalled;
      const uint64_t resume =
          stalled ? last_sent_
                  : std::max(last_sent_, out_.items.back().sequence);
      spdlog::info("watcher '{}' ended: {} of events unread{}", caller_.name,
                   Mib(out_.account.bytes()),
                   stalled ? " (it stopped reading)" : "");
      grpc::Status status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          fmt::format("watcher fell {} behind (stream-buffer-bytes {}, "
                      "total-stream-buffer-bytes {}); resume with "
                      "after_sequence={}",
                      Mib(out_.account.bytes()), Mib(buffer_bytes_),
                      Mib(total_buffer_bytes_), resume));
      if (stalled) {
        out_.Abort(std::move(status));
      } else {
        out_.RequestFinish(std::move(status));
      }
    } else {
      out_.Push(event);
    }
    if (flush_pending_) return false;
    flush_pending_ = true;
    return true;
  }

  void Flush() override { Pump(); }

  void OnDone() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    service_.scheduler().Unwatch(this, ids_);
    if (counted_) service_.CloseStream(caller_);
    service_.Unregister(this);
    self_.reset();  // May delete this.
  }

 private:
  void Pump() {
    Actions a;
    uint64_t rearm = 0;
    {
      absl::MutexLock lock(&mu_);
      flush_pending_ = false;
      if (!started_ || done_ || out_.finish_called) return;
      if (!out_.writing && (!out_.items.empty() || !header_sent_)) {
        const uint64_t durable = service_.scheduler().durable_ticket();
        response_.Clear();
        bool header = false;
        if (!header_sent_) {
          response_ = header_;
          header_sent_ = header = true;
        }
        size_t bytes = 0;
        for (int n = 0; n < kMaxEventsPerMessage && !out_.items.empty() &&
                        bytes < kMaxBytesPerMessage;
             ++n) {
          const Event& e = out_.items.front();
          if (e.ticket > durable) {
            if (e.ticket > rearmed_) rearm = rearmed_ = e.ticket;
            break;
          }
          v1::JobEvent* pe = response_.add_events();
          ToProto(e, 0, pe);
          const size_t size = pe->ByteSizeLong() + 8;  // With tag and length.
          if (n > 0 && bytes + size > max_bytes_) {
            response_.mutable_events()->RemoveLast();  // The next one's.
            break;
          }
          bytes += size;
          last_sent_ = std::max(last_sent_, e.sequence);
          if (IsTerminal(e.type)) remaining_.erase(e.job_id);
          out_.PopFront();
        }
        out_.writing = a.write = header || response_.events_size() > 0;
        if (a.write) out_.write_since = absl::Now();
      }
      // Watching named jobs: done once each has ended.
      if (!ids_.empty() && remaining_.empty() && out_.items.empty()) {
        out_.RequestFinish(grpc::Status::OK);
      }
      a.finish = out_.TakeFinish(&a.status);
    }
    if (rearm != 0) {
      FlushWhenDurable(service_.scheduler(), weak_from_this().lock(), rearm);
    }
    if (a.write) StartWrite(&response_);
    if (a.finish) Finish(a.status);
  }

  JobServiceImpl& service_;
  const uint64_t buffer_bytes_;  // As SubmitSession's.
  const uint64_t total_buffer_bytes_;
  const size_t max_bytes_;  // Of one response message.
  std::shared_ptr<WatchSession> self_;
  Caller caller_;              // Set in Begin(), then const.
  bool counted_ = false;       // OpenStream succeeded: CloseStream in OnDone.
  std::vector<uint64_t> ids_;  // Set in Begin(), then const.
  v1::WatchJobsResponse response_;  // Write-token holder only.

  v1::WatchJobsResponse header_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> remaining_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rearmed_ ABSL_GUARDED_BY(mu_) = 0;  // Highest ticket waited for.
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool header_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context,
                                const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

v1::TaskParam ToProto(const TaskParam& p) {
  v1::TaskParam out;
  out.set_name(p.name);
  out.set_type(ParamTypeName(p.type));
  out.set_required(p.required);
  if (!p.required) *out.mutable_default_value() = p.default_value;
  out.set_help(p.help);
  return out;
}

}  // namespace

JobServiceImpl::JobServiceImpl(Scheduler& scheduler,
                               const TaskRegistry& registry,
                               const Authenticator& auth, ServiceLimits limits,
                               std::string version, std::function<void()> drain)
    : scheduler_(scheduler),
      registry_(registry),
      auth_(auth),
      drain_(std::move(drain)),
      limits_(std::move(limits)),
      version_(std::move(version)) {}

absl::StatusOr<Caller> JobServiceImpl::Authorize(
    const grpc::CallbackServerContext& context, uint32_t roles,
    std::string_view what) const {
  absl::StatusOr<Caller> caller = auth_.Authenticate(
      context, peer_names_ ? peer_names_(context.peer()) : context.peer());
  if (!caller.ok()) return caller.status();
  if (absl::Status s = caller->Require(roles, what); !s.ok()) return s;
  return caller;
}

absl::Status JobServiceImpl::OpenStream(const Caller& caller) {
  const ServiceLimits l = limits();
  const size_t limit = l.max_streams_per_caller;
  absl::MutexLock lock(&mu_);
  if (l.max_streams > 0 && open_streams_ >= l.max_streams) {
    return absl::ResourceExhaustedError(
        fmt::format("jobd has {} streams open and its limit is {} "
                    "(max-streams); retry later",
                    open_streams_, l.max_streams));
  }
  size_t& open = streams_[caller.name];
  if (!caller.admin() && limit > 0 && open >= limit) {
    return absl::ResourceExhaustedError(
        fmt::format("caller '{}' has {} streams open and its limit is {} "
                    "(max-streams-per-caller); close one and retry",
                    caller.name, open, limit));
  }
  ++open;
  ++open_streams_;
  return absl::OkStatus();
}

void JobServiceImpl::CloseStream(const Caller& caller) {
  absl::MutexLock lock(&mu_);
  --open_streams_;
  auto it = streams_.find(caller.name);
  if (it != streams_.end() && --it->second == 0) streams_.erase(it);
}

size_t JobServiceImpl::TakeSubmits(const Caller& caller, size_t n,
                                   absl::Duration* retry) {
  const double rate = limits().quota_submit_rate;
  if (caller.admin() || rate <= 0) return n;
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Bucket& b = buckets_[caller.name];
  // Refill at `rate` per second, holding one second's worth (at least one
  // job, so rates below 1/s admit a job every 1/rate seconds).
  const double burst = std::max(rate, 1.0);
  const double refill = b.refilled == absl::InfinitePast()
                            ? burst
                            : absl::ToDoubleSeconds(now - b.refilled) * rate;
  b.tokens = std::min(burst, b.tokens + refill);
  b.refilled = now;
  const size_t take = std::min(n, static_cast<size_t>(b.tokens));
  b.tokens -= static_cast<double>(take);
  if (take < n) *retry = absl::Seconds((1.0 - b.tokens) / rate);
  return take;
}

JobServiceImpl::~JobServiceImpl() = default;

void JobServiceImpl::Register(const std::shared_ptr<StreamSession>& session) {
  bool close = false;
  {
    absl::MutexLock lock(&mu_);
    sessions_[session.get()] = session;
    close = closing_;
  }
  if (close) {
    session->Close(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "jobd is shutting down"));
  }
}

void JobServiceImpl::Unregister(StreamSession* session) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(session);
}

void JobServiceImpl::CloseStreams() {
  std::vector<std::shared_ptr<StreamSession>> open;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) {
    s->Close(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "jobd is shutting down"));
  }
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
JobServiceImpl::Submit(grpc::CallbackServerContext* context) {
  auto session = std::make_shared<SubmitSession>(*this);
  session->Begin(Authorize(*context, kRoleSubmit, "Submit"));
  return session.get();
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "GetJob");
  if (!caller.ok()) return Reply(context, caller.status());
  const std::string owner = caller->admin() ? std::string() : caller->name;
  absl::StatusOr<uint64_t> id = ParseJobId(request->job_id(), "job_id");
  if (!id.ok()) return Reply(context, id.status());
  if (!request->has_wait()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    scheduler_.ShowJob(*id, owner,
                       [reactor, response](absl::StatusOr<v1::Job> job) {
                         if (job.ok()) *response = *std::move(job);
                         reactor->Finish(ToGrpc(job.status()));
                       });
    return reactor;
  }
  absl::Status valid = ValidateDuration(request->wait(), "wait");
  if (!valid.ok()) return Reply(context, valid);
  absl::Time deadline = absl::Now() + FromProto(request->wait());
  // Answer a little before the RPC deadline so the client gets the job.
  const absl::Time rpc_deadline =
      absl::FromChrono(context->deadline()) - absl::Milliseconds(50);
  deadline = std::min(deadline, rpc_deadline);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler_.WaitJob(
      *id, deadline,
      [reactor, response](absl::StatusOr<v1::Job> job) {
        if (job.ok()) *response = *std::move(job);
        reactor->Finish(ToGrpc(job.status()));
      },
      owner);
  return reactor;
}

grpc::ServerWriteReactor<v1::WatchJobsResponse>* JobServiceImpl::WatchJobs(
    grpc::CallbackServerContext* context, const v1::WatchJobsRequest* request) {
  auto session = std::make_shared<WatchSession>(*this);
  session->Begin(*request,
                 Authorize(*context, kRoleSubmit | kRoleRead, "WatchJobs"));
  return session.get();
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(
    grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
    v1::CancelJobResponse* response) {
  absl::StatusOr<Caller> caller = Authorize(*context, kRoleSubmit, "CancelJob");
  if (!caller.ok()) return Reply(context, caller.status());
  absl::StatusOr<uint64_t> id = ParseJobId(request->job_id(), "job_id");
  if (!id.ok()) return Reply(context, id.status());
  auto result = scheduler_.Cancel(
      *id, caller->admin() ? std::string_view() : caller->name);
  if (!result.ok()) return Reply(context, result.status());
  response->set_state(result->first);
  response->set_already_ended(result->second);
  // The answer waits for the cancellation to be durable, like its event.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler_.WhenDurable(
      scheduler_.journal_ticket(),
      [this, reactor](bool durable) {
        reactor->Finish(
            durable ? grpc::Status::OK
                    : ToGrpc(absl::UnavailableError(fmt::format(
                          "the job was cancelled here, but that is not "
                          "durable yet: {}",
                          std::string(scheduler_.NotDurable().message())))));
      },
      Journal::Wait::kFailFast);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "ListJobs");
  if (!caller.ok()) return Reply(context, caller.status());
  ListJobsQuery query;
  if (!caller->admin()) query.owner = caller->name;
  if (request->page_size() < 0) {
    return Reply(context,
                 absl::InvalidArgumentError("page_size: must not be negative"));
  }
  query.limit = request->page_size() == 0
                    ? 100
                    : std::min<size_t>(request->page_size(), 1000);
  if (!request->page_token().empty()) {
    absl::StatusOr<uint64_t> after =
        ParseJobId(request->page_token(), "page_token");
    if (!after.ok()) return Reply(context, after.status());
    query.after_id = *after;
  }
  for (int s : request->states()) {
    if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
      return Reply(context, absl::InvalidArgumentError(
                                fmt::format("states: invalid value {}", s)));
    }
    query.states.push_back(static_cast<v1::JobState>(s));
  }
  query.task = request->task();
  // A page never exceeds a message: fewer jobs when they are large.
  query.max_bytes = limits().max_message_bytes - kMessageSlackBytes;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler_.ShowJobs(
      query, [reactor, response, limit = query.limit](
                 absl::StatusOr<std::vector<v1::Job>> jobs, bool more) {
        if (jobs.ok()) {
          if (!jobs->empty() && (more || jobs->size() == limit)) {
            response->set_next_page_token(jobs->back().id());
          }
          for (v1::Job& job : *jobs) *response->add_jobs() = std::move(job);
        }
        reactor->Finish(ToGrpc(jobs.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListTasks(
    grpc::CallbackServerContext* context, const v1::ListTasksRequest* request,
    v1::ListTasksResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "ListTasks");
  if (!caller.ok()) return Reply(context, caller.status());
  for (const TaskDef* def : registry_.List()) {
    v1::TaskInfo* info = response->add_tasks();
    info->set_name(def->name);
    info->set_description(def->description);
    info->set_default_kind(def->default_kind);
    info->set_variadic(def->variadic);
    // Sync tasks run in worker processes and, unless they need isolation,
    // on threads; async ones on the reactor.
    if (def->has_sync()) info->add_executors(v1::EXECUTOR_PROCESS);
    if (def->has_sync() && !def->needs_isolation) {
      info->add_executors(v1::EXECUTOR_THREAD);
    }
    if (def->has_async()) info->add_executors(v1::EXECUTOR_REACTOR);
    for (const TaskParam& p : def->params) *info->add_params() = ToProto(p);
    info->set_quarantined(scheduler_.IsQuarantined(*def));
  }
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::ClearQuarantine(
    grpc::CallbackServerContext* context,
    const v1::ClearQuarantineRequest* request,
    v1::ClearQuarantineResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleAdmin, "ClearQuarantine");
  if (!caller.ok()) return Reply(context, caller.status());
  if (registry_.Find(request->task()) == nullptr) {
    return Reply(context, absl::NotFoundError(fmt::format(
                              "task '{}' is not registered", request->task())));
  }
  response->set_was_quarantined(scheduler_.ClearQuarantine(request->task()));
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::GetStats(
    grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
    v1::GetStatsResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "GetStats");
  if (!caller.ok()) return Reply(context, caller.status());
  *response = scheduler_.GetStats();
  response->set_version(version_);
  const ServiceLimits limits = this->limits();
  v1::ServerLimits* l = response->mutable_limits();
  l->set_max_jobs_per_request(
      static_cast<uint32_t>(limits.max_jobs_per_request));
  l->set_default_window(limits.default_window);
  l->set_max_window(limits.max_window);
  l->set_max_payload_bytes(limits.spec.max_payload_bytes);
  l->set_max_message_bytes(limits.max_message_bytes);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::Drain(
    grpc::CallbackServerContext* context, const v1::DrainRequest* request,
    v1::DrainResponse* response) {
  absl::StatusOr<Caller> caller = Authorize(*context, kRoleAdmin, "Drain");
  if (!caller.ok()) return Reply(context, caller.status());
  spdlog::info("Drain requested by '{}'", caller->name);
  drain_();
  return Reply(context, absl::OkStatus());
}

}  // namespace jobd
