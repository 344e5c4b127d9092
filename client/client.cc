#include "client/client.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/core.h"
#include "client/internal/future_state.h"
#include "client/internal/submit_session.h"
#include "client/json.h"
#include "jobd/v1/default_address.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd::client {
namespace internal {

absl::Status Core::FromGrpc(const grpc::Status& status,
                            std::string_view what) const {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::Status(code,
                          fmt::format("{}: jobd at {} is unavailable: {}", what,
                                      options.address, status.error_message()));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::Status(code, fmt::format("{}: deadline exceeded ({})", what,
                                            status.error_message()));
    default:
      return absl::Status(code, status.error_message());
  }
}

void Core::AwaitReady() const {
  if (channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) return;
  (void)channel->WaitForConnected(
      absl::ToChronoTime(absl::Now() + options.connect_timeout));
}

void SetContextDeadline(grpc::ClientContext* context, absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return;
  context->set_deadline(absl::ToChronoTime(deadline));
}

void Core::Authorize(grpc::ClientContext* context) const {
  if (!options.token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options.token);
  }
}

void Core::PrepareUnary(grpc::ClientContext* context,
                        absl::Duration extra) const {
  Authorize(context);
  AwaitReady();
  SetContextDeadline(context, absl::Now() + options.rpc_timeout + extra);
}

absl::StatusOr<v1::CancelJobResponse> CoreCancelJob(const Core& core,
                                                    const std::string& job_id) {
  grpc::ClientContext context;
  core.PrepareUnary(&context);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::CancelJobResponse response;
  grpc::Status status = core.stub->CancelJob(&context, request, &response);
  if (!status.ok()) return core.FromGrpc(status, "CancelJob");
  return response;
}

absl::Duration CoreRpcTimeout(const Core& core) {
  return core.options.rpc_timeout;
}

// --- WatchStream implementation ------------------------------------------

class WatchStreamImpl {
 public:
  WatchStreamImpl(std::shared_ptr<const Core> core, WatchOptions options)
      : core_(std::move(core)) {
    v1::WatchJobsRequest request;
    for (std::string& id : options.job_ids) request.add_job_ids(std::move(id));
    request.set_after_sequence(options.after_sequence);
    request.set_include_progress(options.include_progress);
    core_->Authorize(&context_);
    core_->AwaitReady();
    reader_ = core_->stub->WatchJobs(&context_, request);
  }

  ~WatchStreamImpl() {
    if (!finished_) {
      context_.TryCancel();
      v1::WatchJobsResponse ignored;
      while (reader_->Read(&ignored)) {
      }
      (void)reader_->Finish();
    }
  }

  bool Next(v1::JobEvent* event) {
    while (!finished_) {
      if (pos_ < response_.events_size()) {
        event->Swap(response_.mutable_events(pos_++));
        return true;
      }
      if (!reader_->Read(&response_)) {
        finished_ = true;
        const grpc::Status status = reader_->Finish();
        if (cancelled_.load() &&
            status.error_code() == grpc::StatusCode::CANCELLED) {
          status_ = absl::OkStatus();
        } else {
          status_ = core_->FromGrpc(status, "WatchJobs");
        }
        return false;
      }
      pos_ = 0;
      if (!header_seen_) {
        header_seen_ = true;
        events_lost_ = response_.events_lost();
        oldest_retained_ = response_.oldest_retained_sequence();
      }
    }
    return false;
  }

  void Cancel() {
    cancelled_.store(true);
    context_.TryCancel();
  }

  const std::shared_ptr<const Core> core_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>> reader_;
  v1::WatchJobsResponse response_;
  int pos_ = 0;
  bool finished_ = false;
  bool header_seen_ = false;
  bool events_lost_ = false;
  uint64_t oldest_retained_ = 0;
  absl::Status status_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace internal

// --- WatchStream -----------------------------------------------------------

WatchStream::WatchStream(std::unique_ptr<internal::WatchStreamImpl> impl)
    : impl_(std::move(impl)) {}
WatchStream::WatchStream(WatchStream&&) noexcept = default;
WatchStream& WatchStream::operator=(WatchStream&&) noexcept = default;
WatchStream::~WatchStream() = default;

bool WatchStream::Next(v1::JobEvent* event) {
  return impl_ != nullptr && impl_->Next(event);
}
absl::Status WatchStream::status() const {
  if (impl_ == nullptr) return absl::FailedPreconditionError("moved-from");
  return impl_->status_;
}
void WatchStream::Cancel() {
  if (impl_ != nullptr) impl_->Cancel();
}
bool WatchStream::events_lost() const {
  return impl_ != nullptr && impl_->events_lost_;
}
uint64_t WatchStream::oldest_retained_sequence() const {
  return impl_ == nullptr ? 0 : impl_->oldest_retained_;
}

// --- Client ----------------------------------------------------------------

struct Client::State {
  absl::Mutex mu;
  std::shared_ptr<internal::SubmitSession> session ABSL_GUARDED_BY(mu);
  // Sessions whose stream ended; joined once their threads have exited.
  std::vector<std::shared_ptr<internal::SubmitSession>> dead
      ABSL_GUARDED_BY(mu);
  uint64_t next_tag ABSL_GUARDED_BY(mu) = 0;
};

namespace {

// The path of a "unix:" target, or empty.
std::string UnixPath(const std::string& address) {
  std::string_view a = address;
  if (a.rfind("unix://", 0) == 0) return std::string(a.substr(7));
  if (a.rfind("unix:", 0) == 0) return std::string(a.substr(5));
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.address.empty()) options.address = v1::DefaultClientAddress();
  if (options.max_batch <= 0) {
    return absl::InvalidArgumentError("ClientOptions.max_batch must be > 0");
  }
  if (const std::string path = UnixPath(options.address); !path.empty()) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::UnavailableError(fmt::format(
          "cannot connect to jobd at {}: no socket at {} (is jobd running? "
          "set the address with --address or JOBD_ADDRESS)",
          options.address, path));
    }
  }
  if (options.keepalive != absl::ZeroDuration() &&
      options.keepalive < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "ClientOptions.keepalive: at least 1s (jobd accepts a ping a second "
        "at most), or 0 for none");
  }
  grpc::ChannelArguments args;
  if (options.keepalive > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(
                    std::min(options.keepalive, absl::Hours(24)))));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(
                    std::min(options.keepalive, absl::Seconds(10)))));
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, "jobd-client/1");
  if (options.token.empty()) {
    if (const char* token = std::getenv("JOBD_TOKEN")) options.token = token;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls.enabled) {
    grpc::SslCredentialsOptions ssl;
    for (auto [file, into] :
         {std::pair{&options.tls.ca_file, &ssl.pem_root_certs},
          std::pair{&options.tls.cert_file, &ssl.pem_cert_chain},
          std::pair{&options.tls.key_file, &ssl.pem_private_key}}) {
      if (file->empty()) continue;
      std::ifstream in(*file);
      std::stringstream text;
      text << in.rdbuf();
      if (!in) {
        return absl::InvalidArgumentError(
            fmt::format("TLS: cannot read {}", *file));
      }
      *into = text.str();
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls.server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name);
    }
  }
  auto core = std::make_shared<internal::Core>();
  core->channel = grpc::CreateCustomChannel(options.address, credentials, args);
  core->options = std::move(options);
  const absl::Time deadline = absl::Now() + core->options.connect_timeout;
  if (!core->channel->WaitForConnected(absl::ToChronoTime(deadline))) {
    return absl::UnavailableError(fmt::format(
        "cannot connect to jobd at {} within {} (is jobd running? set the "
        "address with --address or JOBD_ADDRESS)",
        core->options.address,
        absl::FormatDuration(core->options.connect_timeout)));
  }
  core->stub = v1::JobService::NewStub(core->channel);
  // Learn the daemon's limits so batches and windows never exceed them.
  grpc::ClientContext context;
  core->PrepareUnary(&context);
  v1::GetStatsResponse stats;
  const grpc::Status s = core->stub->GetStats(&context, {}, &stats);
  if (!s.ok()) return core->FromGrpc(s, "GetStats");
  const v1::ServerLimits& limits = stats.limits();
  if (limits.max_jobs_per_request() > 0) {
    core->server_max_batch = limits.max_jobs_per_request();
    core->options.max_batch =
        std::min<int>(core->options.max_batch, limits.max_jobs_per_request());
  }
  if (limits.max_window() > 0) {
    core->server_max_window = limits.max_window();
    core->options.submit_window =
        std::min(core->options.submit_window, limits.max_window());
  }
  return std::unique_ptr<Client>(new Client(std::move(core)));
}

Client::Client(std::shared_ptr<internal::Core> core)
    : core_(std::move(core)), state_(std::make_unique<State>()) {}

Client::~Client() {
  std::shared_ptr<internal::SubmitSession> session;
  std::vector<std::shared_ptr<internal::SubmitSession>> dead;
  {
    absl::MutexLock lock(&state_->mu);
    session = std::move(state_->session);
    dead = std::move(state_->dead);
  }
  if (session != nullptr) session->Close(core_->options.close_timeout);
  for (auto& d : dead) d->Close(absl::ZeroDuration());
}

const std::string& Client::address() const { return core_->options.address; }
const ClientOptions& Client::options() const { return core_->options; }

Future Client::Submit(v1::JobSpec spec) {
  std::vector<std::shared_ptr<internal::SubmitSession>> reap;
  std::shared_ptr<internal::FutureState> state;
  {
    absl::MutexLock lock(&state_->mu);
    state = std::make_shared<internal::FutureState>(core_, ++state_->next_tag);
    if (state_->session == nullptr || !state_->session->Enqueue(state, &spec)) {
      if (state_->session != nullptr) {
        state_->dead.push_back(std::move(state_->session));
      }
      state_->session = std::make_shared<internal::SubmitSession>(core_);
      // A fresh session takes the spec: its threads start after.
      (void)state_->session->Enqueue(state, &spec);
      state_->session->Start();
    }
    auto& dead = state_->dead;
    for (auto it = dead.begin(); it != dead.end();) {
      if ((*it)->finished()) {
        reap.push_back(std::move(*it));
        it = dead.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& d : reap) d->Close(absl::ZeroDuration());
  return Future(std::move(state));
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& job_id,
                                       absl::Duration wait) {
  // Long waits go in slices so no single RPC needs a far deadline.
  constexpr absl::Duration kSlice = absl::Seconds(60);
  const absl::Time end = absl::Now() + wait;
  for (;;) {
    const absl::Duration left =
        std::max(absl::ZeroDuration(), end - absl::Now());
    const absl::Duration slice = std::min(left, kSlice);
    grpc::ClientContext context;
    core_->PrepareUnary(&context, slice);
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    if (slice > absl::ZeroDuration()) {
      *request.mutable_wait() = ToProtoDuration(slice);
    }
    v1::Job job;
    const grpc::Status status = core_->stub->GetJob(&context, request, &job);
    if (!status.ok()) return core_->FromGrpc(status, "GetJob");
    const bool ended = job.state() == v1::JOB_STATE_SUCCEEDED ||
                       job.state() == v1::JOB_STATE_FAILED ||
                       job.state() == v1::JOB_STATE_CANCELLED;
    if (ended || slice >= left) return job;
  }
}

absl::StatusOr<v1::Job> Client::FollowJob(const std::string& job_id,
                                          absl::Duration wait,
                                          absl::Duration reconnect,
                                          absl::Time accepted_at) {
  // A cluster job ("N@node") may be another node's, whose clock may be a
  // little ahead of the one that accepted it.
  const absl::Duration slack =
      absl::StrContains(job_id, '@') ? absl::Seconds(5) : absl::ZeroDuration();
  const absl::Time end = absl::Now() + wait;
  std::optional<absl::Time> silent_since;  // jobd's first unanswered ask.
  for (;;) {
    const absl::Time asked = absl::Now();
    absl::StatusOr<v1::Job> job =
        GetJob(job_id, std::max(absl::ZeroDuration(), end - asked));
    if (job.ok()) {
      const absl::Time created = FromProtoTime(job->create_time());
      if (accepted_at != absl::InfinitePast() &&
          created > accepted_at + slack) {
        return absl::DataLossError(absl::StrCat(
            "job id ", job_id, " names another job now (created ",
            absl::FormatTime(created), ", after this one was accepted at ",
            absl::FormatTime(accepted_at),
            "): jobd restarted without its journal, and this job is lost"));
      }
      return job;
    }
    const absl::StatusCode code = job.status().code();
    if (code == absl::StatusCode::kNotFound && silent_since.has_value()) {
      return absl::NotFoundError(absl::StrCat(
          "jobd no longer knows job ", job_id,
          " (an in-memory job lost in a restart, or one forgotten since): ",
          job.status().message()));
    }
    if (code != absl::StatusCode::kUnavailable &&
        code != absl::StatusCode::kDeadlineExceeded) {
      return job.status();
    }
    if (!silent_since.has_value()) silent_since = asked;
    const absl::Time now = absl::Now();
    if (now >= end) {
      return absl::DeadlineExceededError(absl::StrCat(
          "timed out after ", absl::FormatDuration(wait), " waiting for job ",
          job_id, " to end (jobd did not answer: ", job.status().message(),
          ")"));
    }
    if (now - *silent_since >= reconnect) {
      return absl::UnavailableError(absl::StrCat(
          "jobd did not answer again within ", absl::FormatDuration(reconnect),
          " while following job ", job_id, ": ", job.status().message()));
    }
    // The channel reconnects by itself (GetJob waits for it up to the
    // connect timeout); ask again shortly.
    absl::SleepFor(std::min(absl::Milliseconds(100), end - now));
  }
}

absl::StatusOr<v1::CancelJobResponse> Client::Cancel(
    const std::string& job_id) {
  return internal::CoreCancelJob(*core_, job_id);
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobsPage(
    const v1::ListJobsRequest& request) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::ListJobsResponse response;
  const grpc::Status status =
      core_->stub->ListJobs(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "ListJobs");
  return response;
}

absl::StatusOr<std::vector<v1::Job>> Client::ListJobs(
    const ListJobsFilter& filter) {
  std::vector<v1::Job> jobs;
  v1::ListJobsRequest request;
  for (v1::JobState s : filter.states) request.add_states(s);
  request.set_task(filter.task);
  request.set_all_nodes(filter.all_nodes);
  while (jobs.size() < filter.limit) {
    request.set_page_size(static_cast<int32_t>(
        std::min<size_t>(filter.limit - jobs.size(), 1000)));
    absl::StatusOr<v1::ListJobsResponse> page = ListJobsPage(request);
    if (!page.ok()) return page.status();
    for (v1::Job& job : *page->mutable_jobs()) {
      if (jobs.size() == filter.limit) break;
      jobs.push_back(std::move(job));
    }
    if (page->next_page_token().empty() || page->jobs_size() == 0) break;
    request.set_page_token(page->next_page_token());
  }
  return jobs;
}

absl::StatusOr<std::vector<v1::TaskInfo>> Client::ListTasks() {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::ListTasksResponse response;
  const grpc::Status status =
      core_->stub->ListTasks(&context, v1::ListTasksRequest(), &response);
  if (!status.ok()) return core_->FromGrpc(status, "ListTasks");
  return std::vector<v1::TaskInfo>(
      std::make_move_iterator(response.mutable_tasks()->begin()),
      std::make_move_iterator(response.mutable_tasks()->end()));
}

absl::StatusOr<v1::GetStatsResponse> Client::GetStats() {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::GetStatsResponse response;
  const grpc::Status status =
      core_->stub->GetStats(&context, v1::GetStatsRequest(), &response);
  if (!status.ok()) return core_->FromGrpc(status, "GetStats");
  return response;
}

absl::StatusOr<bool> Client::ClearQuarantine(const std::string& task) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::ClearQuarantineRequest request;
  request.set_task(task);
  v1::ClearQuarantineResponse response;
  const grpc::Status status =
      core_->stub->ClearQuarantine(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "ClearQuarantine");
  return response.was_quarantined();
}

absl::Status Client::Drain() {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::DrainResponse response;
  return core_->FromGrpc(
      core_->stub->Drain(&context, v1::DrainRequest(), &response), "Drain");
}

absl::StatusOr<v1::CreateScheduleResponse> Client::CreateSchedule(
    const std::string& id, const v1::ScheduleSpec& spec, bool paused) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::CreateScheduleRequest request;
  request.set_id(id);
  *request.mutable_spec() = spec;
  request.set_paused(paused);
  v1::CreateScheduleResponse response;
  const grpc::Status status =
      core_->stub->CreateSchedule(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "CreateSchedule");
  return response;
}

absl::StatusOr<v1::Schedule> Client::GetSchedule(const std::string& id) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::GetScheduleRequest request;
  request.set_id(id);
  v1::Schedule response;
  const grpc::Status status =
      core_->stub->GetSchedule(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "GetSchedule");
  return response;
}

absl::StatusOr<std::vector<v1::Schedule>> Client::ListSchedules() {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::ListSchedulesResponse response;
  const grpc::Status status = core_->stub->ListSchedules(
      &context, v1::ListSchedulesRequest(), &response);
  if (!status.ok()) return core_->FromGrpc(status, "ListSchedules");
  return std::vector<v1::Schedule>(
      std::make_move_iterator(response.mutable_schedules()->begin()),
      std::make_move_iterator(response.mutable_schedules()->end()));
}

absl::StatusOr<v1::Schedule> Client::PauseSchedule(const std::string& id,
                                                   bool paused) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::Schedule response;
  grpc::Status status;
  if (paused) {
    v1::PauseScheduleRequest request;
    request.set_id(id);
    status = core_->stub->PauseSchedule(&context, request, &response);
  } else {
    v1::ResumeScheduleRequest request;
    request.set_id(id);
    status = core_->stub->ResumeSchedule(&context, request, &response);
  }
  if (!status.ok()) {
    return core_->FromGrpc(status, paused ? "PauseSchedule" : "ResumeSchedule");
  }
  return response;
}

absl::StatusOr<bool> Client::DeleteSchedule(const std::string& id) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::DeleteScheduleRequest request;
  request.set_id(id);
  v1::DeleteScheduleResponse response;
  const grpc::Status status =
      core_->stub->DeleteSchedule(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "DeleteSchedule");
  return response.existed();
}

absl::Status Client::StreamOutput(
    const std::string& job_id, OutputOptions options,
    const std::function<bool(const v1::StreamJobOutputResponse&)>& on_message) {
  v1::StreamJobOutputRequest request;
  request.set_job_id(job_id);
  request.set_offset(options.offset);
  request.set_follow(options.follow);
  grpc::ClientContext context;
  core_->Authorize(&context);
  core_->AwaitReady();
  std::unique_ptr<grpc::ClientReader<v1::StreamJobOutputResponse>> reader =
      core_->stub->StreamJobOutput(&context, request);
  v1::StreamJobOutputResponse response;
  bool stopped = false;
  while (reader->Read(&response)) {
    if (!on_message(response)) {
      stopped = true;
      context.TryCancel();
      while (reader->Read(&response)) {
      }
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (stopped) return absl::OkStatus();
  return core_->FromGrpc(status, "StreamJobOutput");
}

absl::StatusOr<v1::KeyLimit> Client::SetKeyLimit(
    const v1::SetKeyLimitRequest& request) {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::SetKeyLimitResponse response;
  const grpc::Status status =
      core_->stub->SetKeyLimit(&context, request, &response);
  if (!status.ok()) return core_->FromGrpc(status, "SetKeyLimit");
  return std::move(*response.mutable_limit());
}

absl::StatusOr<std::vector<v1::KeyLimit>> Client::GetKeyLimits() {
  grpc::ClientContext context;
  core_->PrepareUnary(&context);
  v1::GetKeyLimitsResponse response;
  const grpc::Status status =
      core_->stub->GetKeyLimits(&context, v1::GetKeyLimitsRequest(), &response);
  if (!status.ok()) return core_->FromGrpc(status, "GetKeyLimits");
  return std::vector<v1::KeyLimit>(
      std::make_move_iterator(response.mutable_keys()->begin()),
      std::make_move_iterator(response.mutable_keys()->end()));
}

WatchStream Client::Watch(WatchOptions options) {
  return WatchStream(
      std::make_unique<internal::WatchStreamImpl>(core_, std::move(options)));
}

absl::Status Client::Watch(
    WatchOptions options,
    const std::function<bool(const v1::JobEvent&)>& on_event) {
  WatchStream stream = Watch(std::move(options));
  v1::JobEvent event;
  while (stream.Next(&event)) {
    if (!on_event(event)) {
      stream.Cancel();
      return absl::OkStatus();
    }
  }
  return stream.status();
}

}  // namespace jobd::client
