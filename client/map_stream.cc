// MapStream: one Submit stream driven from the consumer's thread, with no
// helper threads and no per-job locks or allocations in the steady state
// (request and response messages are reused, so protobuf recycles their
// items). Next() alternates: top up the window with batched writes (a
// double buffer lets every write but the last of a burst carry
// buffer_hint), then read one response (up to ~1k events) and hand its
// terminal events out one by one.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <utility>

#include "client/client.h"
#include "client/internal/core.h"
#include "client/internal/future_state.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::client {
namespace internal {

class MapStreamImpl {
 public:
  MapStreamImpl(std::shared_ptr<const Core> core, std::string task,
                SpecSource source, MapOptions options)
      : core_(std::move(core)),
        source_(std::move(source)),
        options_(std::move(options)) {
    template_.set_task(std::move(task));
    template_.set_kind(options_.kind);
    template_.set_executor(options_.executor);
    template_.set_priority(options_.priority);
    template_.set_chunksize(options_.chunksize);
    template_.set_delivery(options_.delivery);
    if (options_.timeout != absl::InfiniteDuration()) {
      *template_.mutable_timeout() = ToProtoDuration(options_.timeout);
    }
    if (options_.window == 0) options_.window = 1;
    if (options_.max_batch <= 0) options_.max_batch = 1;
    // Never more than the daemon accepts (it would end the stream).
    if (core_->server_max_batch > 0) {
      options_.max_batch =
          std::min<int>(options_.max_batch, core_->server_max_batch);
    }
    if (core_->server_max_window > 0) {
      options_.window = std::min(options_.window, core_->server_max_window);
    }
    batch_limit_ = static_cast<uint32_t>(
        std::min<int64_t>(options_.max_batch, options_.window));
    // Write when at least this much of the window is free (or nothing is in
    // flight), so a trickle of results does not become a trickle of tiny
    // messages.
    min_write_ = std::max<uint32_t>(
        1, std::min<uint32_t>(batch_limit_, options_.window / 8));
    if (options_.deadline != absl::InfiniteDuration()) {
      SetContextDeadline(&context_, absl::Now() + options_.deadline);
    }
    core_->Authorize(&context_);
    core_->AwaitReady();
    stream_ = core_->stub->Submit(&context_);
  }

  ~MapStreamImpl() {
    if (!finished_) {
      context_.TryCancel();
      v1::SubmitResponse ignored;
      while (stream_->Read(&ignored)) {
      }
      (void)stream_->Finish();
    }
  }

  bool Next(MapResult* out) {
    while (!finished_) {
      while (pos_ < response_.events_size()) {
        v1::JobEvent* event = response_.mutable_events(pos_++);
        const v1::EventType type = event->type();
        if (type == v1::EVENT_TYPE_REJECTED) {
          Fill(out, event);
          out->status = ErrorToStatus(out->outcome.error);
          SkipNonTerminal();
          return true;
        }
        if (IsTerminal(type)) {
          Fill(out, event);
          out->status = absl::OkStatus();
          SkipNonTerminal();
          return true;
        }
      }
      TopUp();
      if (finished_) break;  // The source threw.
      if (inputs_done_ && completed_.load(std::memory_order_relaxed) ==
                              submitted_.load(std::memory_order_relaxed)) {
        End(absl::OkStatus());
        break;
      }
      if (!stream_->Read(&response_)) {
        End(absl::OkStatus());
        break;
      }
      pos_ = 0;
    }
    return false;
  }

  void Cancel() {
    cancelled_.store(true);
    context_.TryCancel();
  }

  // Exact: SkipNonTerminal() leaves pos_ at a result or the end.
  bool ready() const { return !finished_ && pos_ < response_.events_size(); }

  absl::Status status_;
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<bool> inputs_done_atomic_{false};

 private:
  // Moves pos_ past events Next() ignores (ACCEPTED, STARTED, PROGRESS).
  void SkipNonTerminal() {
    while (pos_ < response_.events_size()) {
      const v1::EventType type = response_.events(pos_).type();
      if (type == v1::EVENT_TYPE_REJECTED || IsTerminal(type)) return;
      ++pos_;
    }
  }

  void Fill(MapResult* out, v1::JobEvent* event) {
    completed_.fetch_add(1, std::memory_order_relaxed);
    out->index = event->client_tag();
    JobOutcome& o = out->outcome;
    o.job_id.assign(event->job_id());
    o.state = TerminalState(event->type());
    o.executor = event->executor();
    o.result.Clear();
    o.error.Clear();
    if (o.state == v1::JOB_STATE_SUCCEEDED) {
      o.result.Swap(event->mutable_result());
    } else {
      o.error.Swap(event->mutable_error());
    }
  }

  // Ends the stream and collects its status; a non-OK `local` (the input
  // source threw) cancels the stream and becomes the status.
  void End(absl::Status local) {
    finished_ = true;
    if (!local.ok()) {
      context_.TryCancel();
      while (stream_->Read(&response_)) {
      }
    }
    const grpc::Status status = stream_->Finish();
    response_.Clear();
    pos_ = 0;
    const uint64_t missing = submitted_.load() - completed_.load();
    if (!local.ok()) {
      status_ = std::move(local);
    } else if (cancelled_.load()) {
      status_ = absl::CancelledError(fmt::format(
          "map cancelled with {} job(s) without a result", missing));
    } else if (!status.ok()) {
      status_ = core_->FromGrpc(status, "Map (Submit stream)");
    } else if (missing > 0 || !inputs_done_) {
      status_ = absl::UnavailableError(
          fmt::format("the Submit stream ended with {} job(s) without a "
                      "result",
                      missing));
    } else {
      status_ = absl::OkStatus();
    }
  }

  // Fills `request` with up to `limit` items; returns how many.
  int FillRequest(v1::SubmitRequest* request, uint32_t limit, bool may_block) {
    int n = 0;
    while (static_cast<uint32_t>(n) < limit && !inputs_done_) {
      v1::SubmitItem* item = request->add_items();
      v1::JobSpec* spec = item->mutable_spec();
      spec->CopyFrom(template_);
      InputStatus st;
      // Block only when nothing would be in flight otherwise.
      const bool block = may_block && n == 0 &&
                         submitted_.load(std::memory_order_relaxed) ==
                             completed_.load(std::memory_order_relaxed);
      try {
        st = source_(spec, block);
      } catch (const std::exception& e) {
        request->mutable_items()->RemoveLast();
        source_error_ = absl::InternalError(
            fmt::format("map input source threw: {}", e.what()));
        return -1;
      } catch (...) {
        request->mutable_items()->RemoveLast();
        source_error_ = absl::InternalError("map input source threw");
        return -1;
      }
      if (st != InputStatus::kReady) {
        request->mutable_items()->RemoveLast();
        if (st == InputStatus::kEnd) {
          inputs_done_ = true;
          inputs_done_atomic_.store(true);
        } else if (block) {
          // A source must not say kNotReady when asked to block; retry soon.
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        break;
      }
      item->set_client_tag(next_index_++);
      ++n;
    }
    return n;
  }

  bool Write(v1::SubmitRequest* request, bool buffer_hint) {
    if (!sent_options_) {
      sent_options_ = true;
      v1::SubmitOptions* o = request->mutable_options();
      o->set_order(options_.ordered ? v1::ORDER_SUBMISSION
                                    : v1::ORDER_COMPLETION);
      o->set_window(options_.window);
      o->set_terminal_only(options_.terminal_only);
      // Map reads only results; each carries its job id anyway.
      o->set_omit_accepted(options_.terminal_only);
      o->set_cancel_on_disconnect(options_.cancel_on_disconnect);
    }
    submitted_.fetch_add(request->items_size(), std::memory_order_relaxed);
    grpc::WriteOptions wo;
    if (buffer_hint) wo.set_buffer_hint();
    const bool ok = stream_->Write(*request, wo);
    request->Clear();
    if (!ok) write_failed_ = true;
    return ok;
  }

  // Sends as many inputs as the window allows, batched.
  void TopUp() {
    if (write_failed_) return;
    if (!inputs_done_) {
      const uint64_t in_flight = submitted_.load() - completed_.load();
      uint64_t free =
          options_.window - std::min<uint64_t>(in_flight, options_.window);
      if (in_flight == 0 || free >= min_write_) {
        // Double buffer: a filled batch is written with buffer_hint only once
        // the next one is known to be non-empty.
        v1::SubmitRequest* pending = nullptr;
        int cur = 0;
        while (free > 0 && !inputs_done_) {
          v1::SubmitRequest* req = &requests_[cur];
          const int n = FillRequest(
              req,
              static_cast<uint32_t>(std::min<uint64_t>(free, batch_limit_)),
              pending == nullptr);
          if (n < 0) {  // The source threw.
            req->Clear();
            if (pending != nullptr) pending->Clear();
            End(source_error_);
            return;
          }
          if (pending != nullptr) {
            if (!Write(pending, n > 0)) {
              req->Clear();
              return;
            }
            pending = nullptr;
          }
          if (n == 0) break;
          free -= n;
          pending = req;
          cur ^= 1;
        }
        if (pending != nullptr && !Write(pending, false)) return;
      }
    }
    if (inputs_done_ && !writes_done_) {
      writes_done_ = true;
      stream_->WritesDone();
    }
  }

  const std::shared_ptr<const Core> core_;
  SpecSource source_;
  MapOptions options_;
  v1::JobSpec template_;
  uint32_t batch_limit_ = 1;
  uint32_t min_write_ = 1;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
      stream_;
  v1::SubmitRequest requests_[2];
  v1::SubmitResponse response_;
  int pos_ = 0;
  uint64_t next_index_ = 0;
  bool inputs_done_ = false;
  bool writes_done_ = false;
  bool write_failed_ = false;
  bool sent_options_ = false;
  bool finished_ = false;
  absl::Status source_error_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace internal

MapStream::MapStream(std::unique_ptr<internal::MapStreamImpl> impl)
    : impl_(std::move(impl)) {}
MapStream::MapStream(MapStream&&) noexcept = default;
MapStream& MapStream::operator=(MapStream&&) noexcept = default;
MapStream::~MapStream() = default;

bool MapStream::Next(MapResult* out) {
  return impl_ != nullptr && impl_->Next(out);
}
absl::Status MapStream::status() const {
  if (impl_ == nullptr) return absl::FailedPreconditionError("moved-from");
  return impl_->status_;
}
void MapStream::Cancel() {
  if (impl_ != nullptr) impl_->Cancel();
}
uint64_t MapStream::submitted() const {
  return impl_ == nullptr ? 0 : impl_->submitted_.load();
}
uint64_t MapStream::completed() const {
  return impl_ == nullptr ? 0 : impl_->completed_.load();
}
bool MapStream::ready() const { return impl_ != nullptr && impl_->ready(); }
bool MapStream::inputs_done() const {
  return impl_ != nullptr && impl_->inputs_done_atomic_.load();
}

MapStream Client::MapSpecs(std::string task, SpecSource next,
                           MapOptions options) {
  return MapStream(std::make_unique<internal::MapStreamImpl>(
      core_, std::move(task), std::move(next), std::move(options)));
}

MapStream Client::Map(std::string task, ArgsSource next, MapOptions options) {
  SpecSource source = [next = std::move(next)](v1::JobSpec* spec,
                                               bool) -> InputStatus {
    std::optional<std::vector<google::protobuf::Value>> args = next();
    if (!args.has_value()) return InputStatus::kEnd;
    for (google::protobuf::Value& v : *args) spec->add_args()->Swap(&v);
    return InputStatus::kReady;
  };
  return MapSpecs(std::move(task), std::move(source), std::move(options));
}

}  // namespace jobd::client
