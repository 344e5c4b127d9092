#include "server/frontend/watch_session.h"

#include <algorithm>
#include <string>
#include <utility>

#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd {

void WatchSession::Begin(const v1::WatchJobsRequest& request,
                         absl::StatusOr<Caller> caller) {
  self_ = shared_from_this();
  if (absl::Status s = Admit(std::move(caller)); !s.ok()) {
    Refuse(ToGrpc(s));
    return;
  }
  // ids_ and remote_ are const once another thread can see this session
  // (Register).
  for (const std::string& s : request.job_ids()) {
    absl::StatusOr<JobRef> id = ParseJobRef(s, "job_ids");
    absl::Status status = id.status();
    if (id.ok() && !id->here()) status = service_.Reachable(*id, s);
    if (!status.ok()) {
      ids_.clear();
      remote_.clear();
      Refuse(ToGrpc(status));
      return;
    }
    if (id->here()) {
      ids_.push_back(id->number);
    } else {
      remote_.push_back({*std::move(id), s});
    }
  }
  remote_sequences_ =
      ids_.empty() && !remote_.empty() &&
      std::all_of(remote_.begin(), remote_.end(), [&](const Remote& r) {
        return r.ref.node == remote_.front().ref.node;
      });
  remote_after_.assign(remote_.size(),
                       remote_sequences_ ? request.after_sequence() : 0);
  include_progress_ = request.include_progress();
  service_.Register(self_);
  {
    absl::MutexLock lock(&mu_);
    remaining_.insert(ids_.begin(), ids_.end());
    remote_left_ = remote_.size();
  }
  if (ids_.empty() && !remote_.empty()) {
    // Other nodes' jobs only: nothing here to subscribe to.
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
    }
    for (size_t i = 0; i < remote_.size(); ++i) AwaitRemote(i);
    Pump();
    return;
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
  for (size_t i = 0; i < remote_.size(); ++i) AwaitRemote(i);
  Pump();
}

void WatchSession::AwaitRemote(size_t i) {
  service_.remote()->Watch(
      remote_[i].ref, caller_.admin() ? std::string() : caller_.name,
      remote_after_[i], include_progress_, absl::Now() + kRemoteRound,
      [weak = weak_from_this(),
       i](absl::StatusOr<RemoteJobs::RemoteEvents> events) {
        if (auto self = weak.lock()) self->OnRemote(i, std::move(events));
      });
}

void WatchSession::OnRemote(size_t i,
                            absl::StatusOr<RemoteJobs::RemoteEvents> events) {
  {
    absl::MutexLock lock(&mu_);
    if (done_ || out_.finish_requested) return;
  }
  if (!events.ok()) {
    Close(ToGrpc(events.status()));
    return;
  }
  remote_after_[i] = events->horizon;
  {
    absl::MutexLock lock(&mu_);
    for (v1::JobEvent& e : events->events) {
      // Its node's, not in this node's log: kept only if every job watched
      // is that node's.
      if (!remote_sequences_) e.set_sequence(0);
      remote_events_.push_back(std::move(e));
    }
    if (events->ended) --remote_left_;
  }
  if (!events->ended) AwaitRemote(i);  // More to come.
  Pump();
}

void WatchSession::Refuse(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    header_sent_ = true;
  }
  Close(status);
}

bool WatchSession::Deliver(const Event& event, uint64_t) {
  absl::MutexLock lock(&mu_);
  if (done_ || out_.finish_requested) return false;
  if (out_.items.size() >= service_.limits().max_watch_backlog) {
    out_.Abort(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        fmt::format("watcher fell {} events behind; resume with "
                    "after_sequence={}",
                    service_.limits().max_watch_backlog, last_sent_)));
  } else if (OverLocked(1) && !out_.items.empty() &&
             out_.items.front().ticket <=
                 service_.scheduler().durable_ticket()) {
    // (Not while it waits for the journal: that is no fault of its.)
    // A client that stopped reading loses what is queued; one that reads
    // gets it, then the end: either way, nothing more is queued, and it
    // resumes where it was told.
    const bool stalled = out_.Stalled();
    const uint64_t resume =
        stalled ? last_sent_ : std::max(last_sent_, out_.items.back().sequence);
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
  return FlushDueLocked();
}

void WatchSession::OnDone() {
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  service_.scheduler().Unwatch(this, ids_);
  Leave();  // May delete this.
}

void WatchSession::Pump() {
  Actions a;
  uint64_t rearm = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!PumpAllowedLocked()) return;
    if (!out_.writing &&
        (!out_.items.empty() || !header_sent_ || !remote_events_.empty())) {
      response_.Clear();
      bool header = false;
      if (!header_sent_) {
        response_ = header_;
        header_sent_ = header = true;
      }
      uint64_t last = last_sent_;
      std::vector<uint64_t> ended;  // Watching named jobs only.
      rearm = out_.Fill(*response_.mutable_events(),
                        service_.scheduler().durable_ticket(), max_bytes_,
                        [&](const Event& e) {
                          last = std::max(last, e.sequence);
                          if (!ids_.empty() && IsTerminal(e.type)) {
                            ended.push_back(e.job_id);
                          }
                        });
      last_sent_ = last;
      for (uint64_t id : ended) remaining_.erase(id);
      for (; !remote_events_.empty(); remote_events_.pop_front()) {
        *response_.add_events() = std::move(remote_events_.front());
      }
      out_.writing = a.write = header || response_.events_size() > 0;
      if (a.write) out_.write_since = absl::Now();
    }
    // Watching named jobs: done once each has ended.
    if ((!ids_.empty() || !remote_.empty()) && remaining_.empty() &&
        remote_left_ == 0 && out_.items.empty() && remote_events_.empty()) {
      out_.RequestFinish(grpc::Status::OK);
    }
    a.finish = out_.TakeFinish(&a.status);
  }
  FlushWhenDurable(rearm);
  if (a.write) StartWrite(&response_);
  if (a.finish) Finish(a.status);
}

}  // namespace jobd
