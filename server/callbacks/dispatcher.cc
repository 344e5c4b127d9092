#include "server/callbacks/dispatcher.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "google/protobuf/util/json_util.h"
#include "server/callbacks/signature.h"
#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "spdlog/spdlog.h"
#include "workers/reactor/address_policy.h"
#include "workers/reactor/http_client.h"
#include "workers/sdk/utf8.h"

namespace jobd::callbacks {
namespace {

constexpr size_t kMaxErrorBytes = 512;
constexpr uint64_t kMaxResponseBytes = 64 << 10;

std::string ErrorText(const absl::StatusOr<int>& outcome) {
  if (outcome.ok()) return absl::StrCat("HTTP ", *outcome);
  const absl::string_view m = outcome.status().message();
  return ClipUtf8(MakeValidUtf8(std::string_view(m.data(), m.size())),
                  kMaxErrorBytes);
}

// The allowlist of URLs decides where callbacks go: any address.
std::shared_ptr<const AddressPolicy> AnyAddress() {
  static const auto* const policy = new std::shared_ptr<const AddressPolicy>(
      std::make_shared<const AddressPolicy>(
          *AddressPolicy::Parse({"0.0.0.0/0", "::/0"})));
  return *policy;
}

}  // namespace

absl::Duration RetryDelay(uint32_t attempt, const CallbackOptions& options,
                          double unit) {
  absl::Duration delay = options.first_backoff;
  for (uint32_t i = 1; i < attempt && delay < options.max_backoff; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, options.max_backoff);
  return delay * (0.5 + std::clamp(unit, 0.0, 1.0) / 2);
}

Verdict Classify(const absl::StatusOr<int>& outcome) {
  if (!outcome.ok()) {
    // A URL curl cannot use will not get better.
    return absl::IsInvalidArgument(outcome.status()) ? Verdict::kGiveUp
                                                     : Verdict::kRetry;
  }
  const int status = *outcome;
  if (status >= 200 && status < 300) return Verdict::kDelivered;
  if (status == 408 || status == 429 || status >= 500) return Verdict::kRetry;
  return Verdict::kGiveUp;
}

absl::StatusOr<std::string> EventJson(const std::string& event_bytes) {
  v1::JobEvent event;
  if (!event.ParseFromString(event_bytes)) {
    return absl::DataLossError("the stored event does not parse");
  }
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(event, &json);
  if (!status.ok()) {
    return absl::InternalError(std::string(status.message()));
  }
  return json;
}

// The loop: one thread running an io_context with the HTTP client.
class CallbackDispatcher::Loop {
 public:
  explicit Loop(CallbackDispatcher& d)
      : d_(d), work_(asio::make_work_guard(io_)), client_(io_) {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "jobd-callbacks");
      io_.run();
    });
  }
  ~Loop() { Stop(); }

  void Stop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Any thread: attempt `id` soon.
  void Ready(uint64_t id) {
    asio::post(io_, [this, id] {
      ready_.push_back(id);
      Pump();
    });
  }

 private:
  void Pump() {
    while (in_flight_ < d_.options_.max_in_flight && !ready_.empty()) {
      const uint64_t id = ready_.front();
      ready_.pop_front();
      ++in_flight_;
      asio::co_spawn(io_, Post(id), asio::detached);
    }
  }

  asio::awaitable<void> Post(uint64_t id) {
    std::optional<Attempt> attempt = d_.BeginAttempt(id);
    std::optional<absl::Duration> retry;
    if (attempt.has_value()) {
      absl::StatusOr<int> outcome = absl::InternalError("not attempted");
      absl::StatusOr<std::string> body = EventJson(attempt->event);
      if (!body.ok()) {
        outcome = absl::InvalidArgumentError(body.status().message());
      } else {
        HttpRequest request;
        request.url = attempt->url;
        const int64_t now = absl::ToUnixSeconds(absl::Now());
        request.headers = {
            {"Content-Type", "application/json"},
            {"X-Jobd-Job-Id", FormatJobId(id)},
            {"X-Jobd-Attempt", std::to_string(attempt->number)},
            {"X-Jobd-Timestamp", std::to_string(now)},
            {"X-Jobd-Signature",
             SignatureHeader(d_.options_.secret, now, *body)},
        };
        request.timeout = d_.options_.timeout;
        request.connect_timeout = d_.options_.timeout;
        request.max_body_bytes = kMaxResponseBytes;
        request.follow_redirects = false;
        request.addresses = AnyAddress();
        request.post_body = *std::move(body);
        try {
          absl::StatusOr<HttpResponse> response =
              co_await client_.Perform(request);
          if (response.ok()) {
            outcome = response->status;
          } else if (absl::IsResourceExhausted(response.status())) {
            outcome = absl::UnavailableError(response.status().message());
          } else {
            outcome = response.status();
          }
        } catch (const std::exception& e) {
          outcome = absl::UnavailableError(e.what());
        }
      }
      retry = d_.EndAttempt(id, outcome, absl::Uniform(random_, 0.0, 1.0));
    }
    --in_flight_;
    if (retry.has_value()) {
      auto timer = std::make_shared<asio::steady_timer>(
          io_, absl::ToChronoNanoseconds(*retry));
      timer->async_wait([this, timer, id](const asio::error_code& ec) {
        if (ec) return;
        ready_.push_back(id);
        Pump();
      });
    }
    Pump();
  }

  CallbackDispatcher& d_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  // The loop thread's only, from here on.
  HttpClient client_;  // Destroyed before io_ (and the frames it holds).
  std::deque<uint64_t> ready_;
  size_t in_flight_ = 0;
  absl::BitGen random_;
  std::thread thread_;
};

CallbackDispatcher::CallbackDispatcher(CallbackOptions options,
                                       jobd::Journal* journal)
    : options_(std::move(options)), journal_(journal) {
  loop_ = std::make_unique<Loop>(*this);
}

CallbackDispatcher::~CallbackDispatcher() { Stop(); }

void CallbackDispatcher::Stop() { loop_->Stop(); }

void CallbackDispatcher::Restore(std::vector<CallbackRecord> records) {
  std::vector<uint64_t> ready;
  {
    absl::MutexLock lock(&mu_);
    for (CallbackRecord& r : records) {
      Entry e;
      e.state = r.state;
      e.attempts = r.attempts;
      e.last_error = std::move(r.last_error);
      if (r.state == v1::CALLBACK_STATE_PENDING && !r.event.empty() &&
          !r.url.empty()) {
        e.url = std::move(r.url);
        e.event = std::move(r.event);
        ++pending_;
        pending_bytes_ += e.event.size();
        ready.push_back(r.job_id);
        entries_[r.job_id] = std::move(e);
      } else {
        if (e.state == v1::CALLBACK_STATE_PENDING) {
          e.state = v1::CALLBACK_STATE_FAILED;  // Nothing left to send.
        }
        entries_[r.job_id] = std::move(e);
        finished_.push_back(r.job_id);
      }
    }
    Trim();
  }
  if (!ready.empty()) {
    spdlog::info("callbacks: {} pending from the previous run, sending again",
                 ready.size());
  }
  for (uint64_t id : ready) loop_->Ready(id);
}

CallbackRecord CallbackDispatcher::OnEnded(uint64_t job_id,
                                           std::string_view url,
                                           const Event& event) {
  v1::JobEvent out;
  out.set_sequence(event.sequence);
  out.set_job_id(FormatJobId(job_id));
  out.set_type(event.type);
  *out.mutable_time() = ToProtoTime(event.time);
  out.set_executor(event.executor);
  if (event.end() != nullptr) SetEnd(*event.end(), &out);
  CallbackRecord record;
  record.job_id = job_id;
  record.url = std::string(url);
  record.event = out.SerializeAsString();
  absl::MutexLock lock(&mu_);
  if (pending_ >= options_.max_pending ||
      pending_bytes_ + record.event.size() > options_.max_pending_bytes) {
    record.state = v1::CALLBACK_STATE_DROPPED;
    record.last_error = absl::StrCat(
        "not attempted: ", pending_, " callbacks (", pending_bytes_,
        " bytes) were pending, the most --callback-max-pending allows");
    record.event.clear();
    ++dropped_;
    Entry e;
    e.state = record.state;
    e.last_error = record.last_error;
    entries_[job_id] = std::move(e);
    finished_.push_back(job_id);
    Trim();
    return record;
  }
  Entry e;
  e.url = record.url;
  e.event = record.event;
  ++pending_;
  pending_bytes_ += e.event.size();
  entries_[job_id] = std::move(e);
  return record;
}

void CallbackDispatcher::Deliver(CallbackRecord record, uint64_t ticket) {
  if (record.state != v1::CALLBACK_STATE_PENDING) {
    spdlog::warn("callbacks: job {}: {}", record.job_id, record.last_error);
    return;
  }
  const uint64_t id = record.job_id;
  if (journal_ == nullptr || ticket == 0) {
    loop_->Ready(id);
    return;
  }
  // Only once the end it announces is durable: a crash cannot take it back.
  journal_->WhenDurable(ticket, [this, id](bool durable) {
    if (durable) loop_->Ready(id);
  });
}

std::optional<CallbackDispatcher::Attempt> CallbackDispatcher::BeginAttempt(
    uint64_t job_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(job_id);
  if (it == entries_.end() || it->second.state != v1::CALLBACK_STATE_PENDING) {
    return std::nullopt;
  }
  Entry& e = it->second;
  if (e.first_attempt == absl::InfinitePast()) e.first_attempt = absl::Now();
  ++e.attempts;
  ++attempts_;
  return Attempt{.url = e.url, .event = e.event, .number = e.attempts};
}

std::optional<absl::Duration> CallbackDispatcher::EndAttempt(
    uint64_t job_id, const absl::StatusOr<int>& outcome, double unit) {
  CallbackRecord record;
  std::optional<absl::Duration> retry;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(job_id);
    if (it == entries_.end() ||
        it->second.state != v1::CALLBACK_STATE_PENDING) {
      return std::nullopt;
    }
    Entry& e = it->second;
    const Verdict verdict = Classify(outcome);
    e.last_error = verdict == Verdict::kDelivered ? "" : ErrorText(outcome);
    if (verdict == Verdict::kDelivered) {
      Finish(job_id, e, v1::CALLBACK_STATE_DELIVERED);
    } else if (verdict == Verdict::kRetry) {
      const absl::Duration delay = RetryDelay(e.attempts, options_, unit);
      if (e.attempts >= options_.max_attempts ||
          absl::Now() + delay - e.first_attempt > options_.max_retry_time) {
        Finish(job_id, e, v1::CALLBACK_STATE_FAILED);
      } else {
        retry = delay;
      }
    } else {
      Finish(job_id, e, v1::CALLBACK_STATE_FAILED);
    }
    record.job_id = job_id;
    record.state = e.state;
    record.attempts = e.attempts;
    record.last_error = e.last_error;
    if (!retry.has_value()) Trim();
  }
  if (record.state == v1::CALLBACK_STATE_FAILED) {
    spdlog::warn("callbacks: job {}: given up after {} attempt(s): {}", job_id,
                 record.attempts, record.last_error);
  } else if (retry.has_value()) {
    spdlog::debug("callbacks: job {}: attempt {} failed ({}), again in {}",
                  job_id, record.attempts, record.last_error,
                  absl::FormatDuration(*retry));
  }
  if (journal_ != nullptr) journal_->PutCallback(std::move(record));
  return retry;
}

void CallbackDispatcher::Finish(uint64_t job_id, Entry& e,
                                v1::CallbackState state) {
  e.state = state;
  --pending_;
  pending_bytes_ -= e.event.size();
  std::string().swap(e.url);
  std::string().swap(e.event);
  if (state == v1::CALLBACK_STATE_DELIVERED) {
    ++delivered_;
  } else {
    ++failed_;
  }
  finished_.push_back(job_id);
}

void CallbackDispatcher::Trim() {
  while (finished_.size() > options_.max_statuses) {
    auto it = entries_.find(finished_.front());
    finished_.pop_front();
    if (it != entries_.end() &&
        it->second.state != v1::CALLBACK_STATE_PENDING) {
      entries_.erase(it);
    }
  }
}

void CallbackDispatcher::Describe(uint64_t job_id, v1::Job* job) const {
  v1::CallbackStatus& out = *job->mutable_callback();
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(job_id);
  if (it == entries_.end()) {
    out.set_state(IsTerminal(job->state()) ? v1::CALLBACK_STATE_UNSPECIFIED
                                           : v1::CALLBACK_STATE_WAITING);
    return;
  }
  out.set_state(it->second.state);
  out.set_attempts(it->second.attempts);
  out.set_last_error(it->second.last_error);
}

void CallbackDispatcher::AddStats(v1::GetStatsResponse* stats) const {
  v1::CallbackStats& out = *stats->mutable_callbacks();
  absl::MutexLock lock(&mu_);
  out.set_pending(pending_);
  out.set_delivered(delivered_);
  out.set_failed(failed_);
  out.set_dropped(dropped_);
  out.set_attempts(attempts_);
}

std::optional<v1::CallbackStatus> CallbackDispatcher::StatusOf(
    uint64_t job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(job_id);
  if (it == entries_.end()) return std::nullopt;
  v1::CallbackStatus out;
  out.set_state(it->second.state);
  out.set_attempts(it->second.attempts);
  out.set_last_error(it->second.last_error);
  return out;
}

}  // namespace jobd::callbacks
