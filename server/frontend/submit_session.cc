#include "server/frontend/submit_session.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/frontend/request_errors.h"
#include "server/frontend/spec_validator.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {

void SubmitSession::Begin(absl::StatusOr<Caller> caller,
                          std::string_view traceparent) {
  self_ = shared_from_this();
  if (!traceparent.empty()) {
    if (IsValidTraceparent(traceparent)) {
      traceparent_ = std::string(traceparent);
    } else {
      // W3C Trace Context: an invalid one is ignored (a new trace starts).
      spdlog::debug(
          "submit stream: ignored the traceparent metadata '{}': "
          "not a W3C traceparent",
          ClipUtf8(traceparent, 128));
    }
  }
  service_.Register(self_);
  if (absl::Status s = Admit(std::move(caller)); !s.ok()) {
    Close(ToGrpc(s));
    return;
  }
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

bool SubmitSession::Deliver(const Event& event, uint64_t index) {
  absl::MutexLock lock(&mu_);
  if (done_ || overflowed_) return false;
  auto it = items_.find(index);
  if (it == items_.end()) return false;
  if (OverLocked(2) && out_.Stalled()) {
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
         OverLocked(1))) {
      return false;  // Reader is slow: progress is the one thing to drop.
    }
    out_.Push({event, it->second.client_tag});
  }
  return FlushDueLocked();
}

void SubmitSession::OnReadDone(bool ok) {
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
      Close(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
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

void SubmitSession::OnDone() {
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
  Leave();  // May delete this.
}

void SubmitSession::EndItemLocked(ItemMap::iterator it, const Event& event) {
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

void SubmitSession::HandleRequest() {
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
    Close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       fmt::format("SubmitRequest has {} items; the limit is "
                                   "{} (max_jobs_per_request)",
                                   n, limits.max_jobs_per_request)));
    return;
  }
  if (n == 0) return;
  uint64_t first_index;
  {
    absl::MutexLock lock(&mu_);
    first_index = next_index_;
    next_index_ += n;
    for (int i = 0; i < n; ++i) {
      items_[first_index + i].client_tag = request_.items(i).client_tag();
    }
  }
  // Items naming earlier items' tags (depends_on_tags): those earlier ones
  // of this request are submitted first, to know their jobs' ids.
  std::vector<absl::Status> unresolved(n);
  absl::flat_hash_set<uint64_t> pending_tags;
  int begin = 0;
  for (int i = 0; i < n; ++i) {
    v1::SubmitItem& item = *request_.mutable_items(i);
    if (item.depends_on_tags_size() > 0) {
      const bool waits_on_pending = std::any_of(
          item.depends_on_tags().begin(), item.depends_on_tags().end(),
          [&](uint64_t tag) { return pending_tags.contains(tag); });
      if (waits_on_pending) {
        SubmitItems(begin, i, first_index, limits, unresolved);
        begin = i;
        pending_tags.clear();
      }
      unresolved[i] = ResolveTags(item);
    }
    pending_tags.insert(item.client_tag());
  }
  SubmitItems(begin, n, first_index, limits, unresolved);
}

absl::Status SubmitSession::ResolveTags(v1::SubmitItem& item) {
  v1::JobSpec& spec = *item.mutable_spec();
  for (int k = 0; k < item.depends_on_tags_size(); ++k) {
    const uint64_t tag = item.depends_on_tags(k);
    const StreamTags::TagJob* found = tags_.Find(tag);
    if (found == nullptr) {
      return absl::InvalidArgumentError(fmt::format(
          "depends_on_tags[{}]: client tag {} is not an earlier item of this "
          "stream (it remembers its latest {} tags)",
          k, tag, StreamTags::kMax));
    }
    if (found->job_id == 0) {
      return absl::InvalidArgumentError(
          fmt::format("depends_on_tags[{}]: the item with client tag {} was "
                      "rejected",
                      k, tag));
    }
    spec.add_depends_on(absl::StrCat(found->job_id));
  }
  return absl::OkStatus();
}

void SubmitSession::SubmitItems(int begin, int end, uint64_t first_index,
                                const ServiceLimits& limits,
                                std::vector<absl::Status>& unresolved) {
  if (begin >= end) return;
  // Validate outside any lock.
  std::vector<NewJob> jobs;
  jobs.reserve(end - begin);
  std::vector<std::pair<uint64_t, absl::Status>> rejected;
  const absl::Time now = absl::Now();
  for (int i = begin; i < end; ++i) {
    v1::SubmitItem* item = request_.mutable_items(i);
    if (!unresolved[i].ok()) {
      rejected.emplace_back(first_index + i, std::move(unresolved[i]));
      continue;
    }
    if (!traceparent_.empty() && item->spec().traceparent().empty()) {
      item->mutable_spec()->set_traceparent(traceparent_);
    }
    absl::StatusOr<NewJob> job =
        ValidateSpec(std::move(*item->mutable_spec()), service_.registry(),
                     limits.spec, now, rpc_deadline_);
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
  std::vector<uint64_t> admitted_ids(end - begin, 0);  // 0: rejected.
  if (!jobs.empty()) {
    std::vector<uint64_t> tags;
    tags.reserve(jobs.size());
    for (const NewJob& j : jobs) tags.push_back(j.tag);
    std::vector<Admission> admissions;
    admissions.reserve(jobs.size());
    service_.scheduler().Submit(
        jobs, Subscriber{shared_from_this(), 0, mask_}, admissions,
        OwnerQuota{.max_live = caller_.admin() ? 0 : limits.quota_max_live,
                   .max_bytes = caller_.admin() ? 0 : limits.quota_max_bytes});
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < admissions.size(); ++i) {
      if (!admissions[i].status.ok()) {
        rejected.emplace_back(tags[i], admissions[i].status);
        continue;
      }
      // Known here whatever events the client asked for.
      admitted_ids[tags[i] - first_index - begin] = admissions[i].job_id;
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
  for (int i = begin; i < end; ++i) {
    tags_.Remember(request_.items(i).client_tag(), first_index + i,
                   admitted_ids[i - begin]);
  }
}

void SubmitSession::Pump() {
  Actions a;
  uint64_t rearm = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!PumpAllowedLocked()) return;
    if (!out_.writing && !out_.items.empty()) {
      response_.Clear();
      size_t ends = 0;
      rearm = out_.Fill(*response_.mutable_events(),
                        service_.scheduler().durable_ticket(), max_bytes_,
                        [&ends](const TaggedEvent& sent) {
                          if (IsEnd(sent.event.type)) ++ends;
                        });
      unsent_ends_ -= ends;
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
  FlushWhenDurable(rearm);
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

void SubmitSession::StartReadThenPump() {
  StartRead(&raw_request_);
  {
    absl::MutexLock lock(&mu_);
    read_starting_ = false;
  }
  Pump();
}

// Reading goes on while the stream's jobs in flight — accepted and not
// ended, or ended with the end not yet written — are under the window, so
// a client that does not read cannot grow the server's memory.
// So does what they hold, under stream_buffer_bytes: what waits to be
// written, and what the jobs in flight hold (their specs) and are
// expected to add (as much as this stream's ends did on average; before
// the first, as much as their specs), so that a client that reads slower
// than its jobs end is not buried in results.
bool SubmitSession::CanReadLocked() const {
  if (out_.finish_requested || half_closed_ ||
      items_.size() + unsent_ends_ >= window_ || OverLocked(1)) {
    return false;
  }
  if (buffer_bytes_ == 0) return true;
  const uint64_t spec = admitted_ == 0 ? 0 : admitted_bytes_ / admitted_;
  const uint64_t end = ends_ == 0 ? spec : end_bytes_ / ends_;
  return out_.account.bytes() + items_.size() * (spec + end) < buffer_bytes_;
}

}  // namespace jobd
