#include "client/internal/submit_session.h"

#include <utility>

#include "spdlog/spdlog.h"

namespace jobd::client::internal {

SubmitSession::SubmitSession(std::shared_ptr<const Core> core)
    : core_(std::move(core)) {}

SubmitSession::~SubmitSession() {
  // Normally Close() joined the threads. Otherwise this runs on the last
  // thread to drop its reference (the other one has finished): detach self.
  context_.TryCancel();
  JoinThreads();
}

void SubmitSession::JoinThreads() {
  for (std::thread* t : {&writer_, &reader_}) {
    if (!t->joinable()) continue;
    if (t->get_id() == std::this_thread::get_id()) {
      t->detach();
    } else {
      t->join();
    }
  }
}

bool SubmitSession::Enqueue(const std::shared_ptr<FutureState>& state,
                            v1::JobSpec* spec) {
  absl::MutexLock lock(&mu_);
  if (read_ended_ || closing_) return false;
  if (batches_.empty() ||
      batches_.back()->items_size() >= core_->options.max_batch) {
    if (!spare_.empty()) {
      batches_.push_back(std::move(spare_.back()));
      spare_.pop_back();
    } else {
      batches_.push_back(std::make_unique<v1::SubmitRequest>());
    }
  }
  v1::SubmitItem* item = batches_.back()->add_items();
  item->set_client_tag(state->tag);
  item->mutable_spec()->Swap(spec);
  open_.emplace(state->tag, Entry{state});
  return true;
}

void SubmitSession::Start() {
  started_ = true;
  auto self = shared_from_this();
  reader_ = std::thread([self] { self->ReaderMain(); });
  writer_ = std::thread([self] { self->WriterMain(); });
}

bool SubmitSession::finished() const {
  absl::MutexLock lock(&mu_);
  return reader_exited_ && writer_exited_;
}

void SubmitSession::ReaderMain() {
  core_->Authorize(&context_);
  core_->AwaitReady();
  std::unique_ptr<Stream> owned = core_->stub->Submit(&context_);
  Stream* stream = owned.get();
  {
    absl::MutexLock lock(&mu_);
    stream_ = std::move(owned);
    opened_ = true;
  }
  v1::SubmitResponse response;
  std::vector<std::pair<std::shared_ptr<FutureState>, v1::JobEvent*>> ended;
  while (stream->Read(&response)) {
    {
      absl::MutexLock lock(&mu_);
      for (v1::JobEvent& event : *response.mutable_events()) {
        auto it = open_.find(event.client_tag());
        if (it == open_.end()) {
          spdlog::debug("jobd client: event for unknown client_tag {}",
                        event.client_tag());
          continue;
        }
        Entry& entry = it->second;
        if (!entry.acked) {
          entry.acked = true;
          if (unacked_ > 0) --unacked_;
        }
        const v1::EventType type = event.type();
        if (IsTerminal(type) || type == v1::EVENT_TYPE_REJECTED) {
          ended.emplace_back(std::move(entry.state), &event);
          open_.erase(it);
        } else {
          entry.state->Update(event);
        }
      }
    }
    // Complete (and run callbacks) with no lock held.
    for (auto& [state, event] : ended) {
      FutureState::CompleteFromEvent(state, event);
    }
    ended.clear();
  }

  // The stream ended: stop the writer, then collect the final status.
  {
    absl::MutexLock lock(&mu_);
    read_ended_ = true;
    auto idle = [this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(2))) {
      context_.TryCancel();  // Unblocks a Write stuck on flow control.
      mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(10));
    }
  }
  const grpc::Status status = stream->Finish();

  std::vector<std::shared_ptr<FutureState>> orphans;
  absl::Status error;
  {
    absl::MutexLock lock(&mu_);
    orphans.reserve(open_.size());
    for (auto& [tag, entry] : open_) orphans.push_back(std::move(entry.state));
    open_.clear();
    batches_.clear();
    if (cancelled_by_close_) {
      error = absl::CancelledError(
          "the jobd client was closed before the job ended (the job may "
          "still run on the daemon: see job_id())");
    } else if (!status.ok()) {
      error = core_->FromGrpc(status, "Submit stream");
    } else {
      error = absl::UnavailableError(
          "the Submit stream ended before the job ended (the job may still "
          "run on the daemon: see job_id())");
    }
    reader_done_ = true;
  }
  if (!orphans.empty()) {
    spdlog::debug(
        "jobd client: Submit stream ended ({}); failing {} open "
        "future(s)",
        error.ToString(), orphans.size());
  }
  for (const auto& state : orphans) {
    FutureState::CompleteWithError(state, error);
  }
  absl::MutexLock lock(&mu_);
  reader_exited_ = true;
}

void SubmitSession::WriterMain() {
  bool first = true;
  mu_.Lock();
  for (;;) {
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return read_ended_ || (opened_ && (!batches_.empty() || closing_));
    };
    mu_.Await(absl::Condition(&ready));
    if (read_ended_) break;
    Stream* stream = stream_.get();
    if (batches_.empty()) {  // Closing and everything is sent.
      writing_ = true;
      mu_.Unlock();
      stream->WritesDone();
      mu_.Lock();
      writing_ = false;
      writes_done_ = true;
      break;
    }
    std::unique_ptr<v1::SubmitRequest> batch = std::move(batches_.front());
    batches_.pop_front();
    unacked_ += batch->items_size();
    const bool more = !batches_.empty();
    writing_ = true;
    mu_.Unlock();

    if (first) {
      first = false;
      v1::SubmitOptions* options = batch->mutable_options();
      options->set_order(v1::ORDER_COMPLETION);
      options->set_window(core_->options.submit_window);
      options->set_terminal_only(false);
    }
    grpc::WriteOptions write_options;
    if (more) write_options.set_buffer_hint();  // Flushed by the next write.
    const bool ok = stream->Write(*batch, write_options);
    batch->Clear();

    mu_.Lock();
    writing_ = false;
    if (spare_.size() < 8) spare_.push_back(std::move(batch));
    if (!ok) break;  // The reader sees the stream's status.
  }
  writer_exited_ = true;
  mu_.Unlock();
}

void SubmitSession::Close(absl::Duration timeout) {
  const std::thread::id me = std::this_thread::get_id();
  const bool own_thread = me == reader_.get_id() || me == writer_.get_id();
  bool cancel = false;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    if (started_ && !own_thread) {
      auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return reader_done_ ||
               (writes_done_ && unacked_ == 0 && !open_.empty());
      };
      mu_.AwaitWithTimeout(absl::Condition(&settled), timeout);
    }
    if (!reader_done_) cancel = cancelled_by_close_ = true;
  }
  if (cancel) context_.TryCancel();
  if (own_thread) {
    spdlog::warn(
        "jobd client destroyed from one of its own callbacks: its "
        "stream threads are detached");
  }
  JoinThreads();
}

}  // namespace jobd::client::internal
