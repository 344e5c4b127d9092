// StreamSessionBase: what the Submit and WatchJobs stream sessions
// (server/frontend/submit_session.h, watch_session.h) share, written once:
//  * the prologue: the caller Authorize found is counted in as a stream
//    of its own (JobServiceImpl::OpenStream), or the status the stream
//    must end with; the epilogue (OnDone): counted out, unregistered, and
//    the session lets go of itself;
//  * the session mutex and its Outbox (server/frontend/stream_outbox.h),
//    the limits the stream began with, and the reactions that touch
//    nothing else: OnWriteDone, OnCancel, Close, a journal that will never
//    make the held events durable;
//  * the durability gate: a session writes its queued events in order up
//    to the first whose journal ticket is not durable yet, and asks for
//    its Pump() to run again once it is (FlushWhenDurable);
//  * EventSink's flush protocol: one Flush() asked for per burst of
//    Deliver() calls.
// Derived provides Pump(): under mu_ it first calls PumpAllowedLocked(),
// fills a response (Outbox::Fill), then, unlocked, starts the write,
// FlushWhenDurable(the ticket Fill returned), and Finish as the outbox
// allows.
//
// Thread-safety: every method may be called by any gRPC or scheduler
// thread; the state is guarded by mu_ (a leaf lock: nothing is called
// with it held but the scheduler's lock-free durable_ticket()).
// Ownership: a session owns itself (self_) from its prologue until gRPC
// calls OnDone; the service and the scheduler hold it weakly or by
// shared_ptr for as long as they deliver to it.
#ifndef JOBD_SERVER_FRONTEND_STREAM_SESSION_H_
#define JOBD_SERVER_FRONTEND_STREAM_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/frontend/auth.h"
#include "server/frontend/convert.h"
#include "server/frontend/service.h"
#include "server/frontend/stream_outbox.h"
#include "server/jobs/job_types.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

// "1.5 MiB".
inline std::string Mib(uint64_t n) {
  return fmt::format("{:.1f} MiB", static_cast<double>(n) / (1 << 20));
}

// What a session decided to do under its lock, done after unlocking.
struct Actions {
  bool write = false;
  bool read = false;
  bool finish = false;
  grpc::Status status;
};

template <typename Derived, typename Reactor, typename Item>
class StreamSessionBase : public Reactor,
                          public EventSink,
                          public StreamSession,
                          public std::enable_shared_from_this<Derived> {
 public:
  // `started`: Pump() may write at once (else once Start()ed or closed).
  StreamSessionBase(JobServiceImpl& service, bool started)
      : StreamSessionBase(service, service.limits(), started) {}

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      out_.WriteDone(ok);
    }
    derived().Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      out_.Abort(grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled"));
    }
    derived().Pump();
  }

  // Ends the stream once what is queued is written (the service at
  // shutdown, a refused request).
  void Close(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
      out_.RequestFinish(status);
    }
    derived().Pump();
  }

  // The journal will never make the held events durable (shutdown with
  // failing writes, an outage past its grace): they are dropped, never
  // sent, and the stream ends.
  void AbortNotDurable(const absl::Status& why) {
    {
      absl::MutexLock lock(&mu_);
      out_.Abort(ToGrpc(why));
    }
    derived().Pump();
  }

  void Flush() override { derived().Pump(); }

 protected:
  StreamSessionBase(JobServiceImpl& service, const ServiceLimits& limits,
                    bool started)
      : service_(service),
        buffer_bytes_(limits.stream_buffer_bytes),
        total_buffer_bytes_(limits.total_stream_buffer_bytes),
        max_bytes_(limits.max_message_bytes - kMessageSlackBytes),
        out_(service.buffers()),
        started_(started) {}

  // The prologue: `caller` (what Authorize found) opens a stream of its
  // own, within its limit and the service's; the status the stream must
  // end with if not.
  absl::Status Admit(absl::StatusOr<Caller> caller) {
    if (!caller.ok()) return caller.status();
    if (absl::Status s = service_.OpenStream(*caller); !s.ok()) return s;
    caller_ = *std::move(caller);
    counted_ = true;
    return absl::OkStatus();
  }

  // The epilogue, last in OnDone: counted out, unregistered, and let go of
  // (which may delete this).
  void Leave() {
    if (counted_) service_.CloseStream(caller_);
    service_.Unregister(this);
    self_.reset();  // May delete this.
  }

  // Deliver(), after queueing: true if a Flush() should follow (the first
  // Deliver since the last Pump).
  bool FlushDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (flush_pending_) return false;
    flush_pending_ = true;
    return true;
  }

  // First in Pump(), under mu_: false if there is nothing it may do (not
  // started, done, or finished).
  bool PumpAllowedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    flush_pending_ = false;
    return started_ && !done_ && !out_.finish_called;
  }

  // Holds `factor` times its limit (BufferAccount::Over).
  bool OverLocked(uint64_t factor) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return out_.account.Over(buffer_bytes_, total_buffer_bytes_, factor);
  }

  // Pump() again once journal ticket `ticket` is durable (0: nothing to
  // wait for); never held through a journal outage: the stream ends
  // UNAVAILABLE then (its client resumes or retries with idempotency
  // keys).
  void FlushWhenDurable(uint64_t ticket) {
    if (ticket == 0) return;
    std::shared_ptr<Derived> session = this->weak_from_this().lock();
    if (session == nullptr) return;  // Ending.
    Scheduler& scheduler = service_.scheduler();
    scheduler.WhenDurable(
        ticket,
        [weak = std::weak_ptr<Derived>(session), &scheduler](bool durable) {
          std::shared_ptr<Derived> s = weak.lock();
          if (s == nullptr) return;
          if (durable) {
            s->Flush();
          } else {
            s->AbortNotDurable(scheduler.NotDurable());
          }
        },
        Journal::Wait::kFailFast);
  }

  Derived& derived() { return static_cast<Derived&>(*this); }

  JobServiceImpl& service_;
  // ServiceLimits' stream_buffer_bytes and total_stream_buffer_bytes when
  // the stream began.
  const uint64_t buffer_bytes_;
  const uint64_t total_buffer_bytes_;
  const size_t max_bytes_;         // Of one response message.
  std::shared_ptr<Derived> self_;  // Alive until OnDone (Leave).
  Caller caller_;                  // Set by Admit(), then const.
  bool counted_ = false;           // Admit() opened a stream: CloseStream.

  absl::Mutex mu_;
  Outbox<Item> out_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_);
  bool flush_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone began.
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_STREAM_SESSION_H_
