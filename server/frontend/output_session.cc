#include "server/frontend/output_session.h"

#include <algorithm>
#include <utility>

#include "server/frontend/convert.h"
#include "server/frontend/stream_outbox.h"

namespace jobd {

void OutputSession::Begin(const v1::StreamJobOutputRequest& request,
                          absl::StatusOr<Caller> caller) {
  self_ = shared_from_this();
  if (!caller.ok()) {
    Finish(ToGrpc(caller.status()));
    return;
  }
  absl::StatusOr<JobRef> id = ParseJobRef(request.job_id(), "job_id");
  if (id.ok() && !id->here()) {
    // Another node's job: read there (server/jobs/remote_jobs.h).
    if (absl::Status s = service_.Reachable(*id, request.job_id()); !s.ok()) {
      id = s;
    }
  }
  if (!id.ok()) {
    Finish(ToGrpc(id.status()));
    return;
  }
  if (absl::Status s = service_.OpenStream(*caller); !s.ok()) {
    Finish(ToGrpc(s));
    return;
  }
  caller_ = *std::move(caller);
  counted_ = true;
  if (id->here()) {
    id_ = id->number;
  } else {
    remote_ = *std::move(id);
  }
  owner_ = caller_.admin() ? std::string() : caller_.name;
  follow_ = request.follow();
  {
    absl::MutexLock lock(&mu_);
    offset_ = request.offset();
  }
  service_.Register(self_);
  Pump();
}

void OutputSession::Finish(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    // Decided under the same lock that grants reads and writes: no Pump
    // starts one from here on.
    finished_ = true;
  }
  grpc::ServerWriteReactor<v1::StreamJobOutputResponse>::Finish(status);
}

void OutputSession::Pump() {
  Scheduler& scheduler = service_.scheduler();
  // Each round either writes, waits, finishes, or finds the job's output
  // changed while it began to wait: bounded, since it changes finitely.
  for (int round = 0; round < 1000; ++round) {
    uint64_t offset = 0;
    std::optional<grpc::Status> close;
    {
      absl::MutexLock lock(&mu_);
      if (done_ || finished_ || busy_) return;
      close = close_;
      if (!close.has_value()) {
        if (waiting_) return;
        busy_ = true;
        offset = offset_;
      }
    }
    if (close.has_value()) {
      Finish(*close);
      return;
    }
    const size_t max_bytes = std::min<size_t>(
        kOutputMessageBytes,
        service_.limits().max_message_bytes - kMessageSlackBytes);
    if (remote_.has_value()) return AskRemote(offset, max_bytes);
    absl::StatusOr<OutputRead> read =
        scheduler.ReadOutput(id_, owner_, offset, max_bytes);
    if (!read.ok()) {
      Finish(ToGrpc(read.status()));  // busy_ stays: nothing else starts.
      return;
    }
    if (read->shared && service_.remote() != nullptr) {
      // Shared (cluster mode): its output is where it runs, or ran.
      return AskShared(*read, offset, max_bytes);
    }
    const bool nothing = read->nothing();
    if (nothing && follow_) {
      {
        absl::MutexLock lock(&mu_);
        busy_ = false;
        waiting_ = true;
      }
      std::weak_ptr<OutputSession> weak = weak_from_this();
      const bool kept =
          scheduler.WhenOutput(id_, read->next_offset, this, [weak] {
            auto s = weak.lock();
            if (s == nullptr) return;
            {
              absl::MutexLock lock(&s->mu_);
              s->waiting_ = false;
            }
            s->Pump();
          });
      if (kept) return;  // Woken later (or closed meanwhile: see Close).
      absl::MutexLock lock(&mu_);
      waiting_ = false;
      continue;  // More came, or it ended, while it looked: read again.
    }
    response_ = read->TakeResponse();
    {
      absl::MutexLock lock(&mu_);
      offset_ = read->next_offset;
      // Not following: what is kept now, then a message with nothing new.
      last_ = read->ended || nothing;
    }
    StartWrite(&response_);
    return;
  }
  Finish(grpc::Status(grpc::StatusCode::INTERNAL,
                      "job output kept changing while the stream waited"));
}

void OutputSession::AskRemote(uint64_t offset, size_t max_bytes) {
  // A follower's ask waits (polls at the job's node) up to a round for
  // something new; then it asks again.
  const absl::Time until =
      follow_ ? absl::Now() + kRemoteRound : absl::InfinitePast();
  std::weak_ptr<OutputSession> weak = weak_from_this();
  service_.remote()->ReadOutput(
      *remote_, owner_, offset, max_bytes, until,
      [weak](absl::StatusOr<v1::StreamJobOutputResponse> r) {
        if (auto s = weak.lock()) s->OnRemote(std::move(r));
      });
}

void OutputSession::AskShared(const OutputRead& here, uint64_t offset,
                              size_t max_bytes) {
  const absl::Time until =
      follow_ ? absl::Now() + kRemoteRound : absl::InfinitePast();
  std::weak_ptr<OutputSession> weak = weak_from_this();
  service_.remote()->ReadSharedOutput(
      id_, here.create_ns, owner_, offset, max_bytes, until,
      [weak](absl::StatusOr<v1::StreamJobOutputResponse> r) {
        if (auto s = weak.lock()) s->OnRemote(std::move(r));
      });
}

void OutputSession::OnRemote(absl::StatusOr<v1::StreamJobOutputResponse> r) {
  if (!r.ok()) {
    Finish(ToGrpc(r.status()));  // busy_ stays: nothing else starts.
    return;
  }
  const bool nothing = NothingNew(*r);
  bool again = false;
  {
    absl::MutexLock lock(&mu_);
    if (close_.has_value() || done_ || (nothing && follow_)) {
      busy_ = false;  // Closed meanwhile (Pump finishes), or ask again.
      again = true;
    } else {
      offset_ = r->next_offset();
      last_ = r->ended() || nothing;
    }
  }
  if (again) return Pump();
  response_ = *std::move(r);
  StartWrite(&response_);
}

void OutputSession::OnWriteDone(bool ok) {
  bool finish = false;
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      finish = true;
      status = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
    } else if (last_) {
      finish = true;
    } else {
      busy_ = false;
    }
  }
  if (finish) {
    Finish(status);  // busy_ stays: no Pump starts a write meanwhile.
  } else {
    Pump();
  }
}

void OutputSession::OnCancel() {
  Close(grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled"));
}

void OutputSession::Close(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (!close_.has_value()) close_ = status;
    waiting_ = false;  // A wake-up that comes later finds it finished.
  }
  Pump();
}

void OutputSession::OnDone() {
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  if (id_ != 0) service_.scheduler().CancelWhenOutput(id_, this);
  if (counted_) {
    service_.CloseStream(caller_);
    service_.Unregister(this);
  }
  self_.reset();  // May delete this.
}

}  // namespace jobd
