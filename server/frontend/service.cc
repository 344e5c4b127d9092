#include "server/frontend/service.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/frontend/convert.h"
#include "server/frontend/output_session.h"
#include "server/frontend/stream_outbox.h"
#include "server/frontend/submit_session.h"
#include "server/frontend/watch_session.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context,
                                const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

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
  absl::StatusOr<Caller> caller = AuthenticateCall(
      auth_, context,
      peer_names_ ? peer_names_(context.peer()) : context.peer());
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
  if (const auto deadline = context->deadline();
      deadline != std::chrono::system_clock::time_point::max()) {
    session->set_rpc_deadline(absl::FromChrono(deadline));
  }
  std::string_view traceparent;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("traceparent"); it != metadata.end()) {
    traceparent = std::string_view(it->second.data(), it->second.size());
  }
  session->Begin(Authorize(*context, kRoleSubmit, "Submit"), traceparent);
  return session.get();
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "GetJob");
  if (!caller.ok()) return Reply(context, caller.status());
  const std::string owner = caller->admin() ? std::string() : caller->name;
  absl::StatusOr<JobRef> id = ParseJobRef(request->job_id(), "job_id");
  if (!id.ok()) return Reply(context, id.status());
  // Answer a little before the RPC deadline so the client gets the job.
  const absl::Time rpc_deadline =
      absl::FromChrono(context->deadline()) - absl::Milliseconds(50);
  absl::Time wait_until = absl::InfinitePast();
  if (request->has_wait()) {
    absl::Status valid = ValidateDuration(request->wait(), "wait");
    if (!valid.ok()) return Reply(context, valid);
    wait_until =
        std::min(absl::Now() + FromProto(request->wait()), rpc_deadline);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto done = [reactor, response](absl::StatusOr<v1::Job> job) {
    if (job.ok()) *response = *std::move(job);
    reactor->Finish(ToGrpc(job.status()));
  };
  if (!id->here()) {
    if (absl::Status s = Reachable(*id, request->job_id()); !s.ok()) {
      return Reply(context, s);
    }
    // A wait's answer comes at its end (a short wait's, as a GetJob's).
    const absl::Time answer_by = request->has_wait()
                                     ? std::max(wait_until, AnswerBy(*context))
                                     : AnswerBy(*context);
    remote_->Get(*id, owner, wait_until, answer_by, std::move(done));
  } else if (!request->has_wait()) {
    scheduler_.ShowJob(id->number, owner, std::move(done));
  } else {
    scheduler_.WaitJob(id->number, wait_until, std::move(done), owner);
  }
  return reactor;
}

absl::Time JobServiceImpl::AnswerBy(
    const grpc::CallbackServerContext& context) {
  return std::min(
      absl::Now() + RemoteJobs::kDefaultWait,
      absl::FromChrono(context.deadline()) - absl::Milliseconds(50));
}

absl::Status JobServiceImpl::Reachable(const JobRef& id,
                                       const std::string& text) const {
  if (remote_ != nullptr) return absl::OkStatus();
  return absl::NotFoundError(fmt::format(
      "job {}: it names node '{}', and this node is not in that node's "
      "cluster",
      ClipUtf8(text, 80), id.node));
}

grpc::ServerWriteReactor<v1::WatchJobsResponse>* JobServiceImpl::WatchJobs(
    grpc::CallbackServerContext* context, const v1::WatchJobsRequest* request) {
  auto session = std::make_shared<WatchSession>(*this);
  session->Begin(*request,
                 Authorize(*context, kRoleSubmit | kRoleRead, "WatchJobs"));
  return session.get();
}

grpc::ServerWriteReactor<v1::StreamJobOutputResponse>*
JobServiceImpl::StreamJobOutput(grpc::CallbackServerContext* context,
                                const v1::StreamJobOutputRequest* request) {
  auto session = std::make_shared<OutputSession>(*this);
  session->Begin(*request, Authorize(*context, kRoleSubmit | kRoleRead,
                                     "StreamJobOutput"));
  return session.get();
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(
    grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
    v1::CancelJobResponse* response) {
  absl::StatusOr<Caller> caller = Authorize(*context, kRoleSubmit, "CancelJob");
  if (!caller.ok()) return Reply(context, caller.status());
  absl::StatusOr<JobRef> id = ParseJobRef(request->job_id(), "job_id");
  if (!id.ok()) return Reply(context, id.status());
  if (!id->here()) {
    // At the job's node, which also stops a run on a third node.
    if (absl::Status s = Reachable(*id, request->job_id()); !s.ok()) {
      return Reply(context, s);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    remote_->Cancel(
        *id, caller->admin() ? std::string() : caller->name, AnswerBy(*context),
        [reactor, response](absl::StatusOr<v1::CancelJobResponse> r) {
          if (r.ok()) *response = *std::move(r);
          reactor->Finish(ToGrpc(r.status()));
        });
    return reactor;
  }
  auto result = scheduler_.Cancel(
      id->number, caller->admin() ? std::string_view() : caller->name);
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
  absl::StatusOr<ListJobsQuery> query =
      ListJobsQueryOf(*request, caller->admin() ? std::string() : caller->name);
  if (!query.ok()) return Reply(context, query.status());
  // A page never exceeds a message: fewer jobs when they are large.
  query->max_bytes = limits().max_message_bytes - kMessageSlackBytes;
  if (request->all_nodes() && remote_ != nullptr) {
    return ListAllNodes(context, *request, *std::move(query), response);
  }
  if (!request->page_token().empty()) {
    absl::StatusOr<uint64_t> after =
        ParseJobId(request->page_token(), "page_token");
    if (!after.ok()) return Reply(context, after.status());
    query->after_id = *after;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler_.ShowJobs(
      *query, [reactor, response, limit = query->limit](
                  absl::StatusOr<std::vector<v1::Job>> jobs, bool more) {
        if (jobs.ok()) {
          AddListJobsPage(*std::move(jobs), more, limit, response);
        }
        reactor->Finish(ToGrpc(jobs.status()));
      });
  return reactor;
}

namespace {

// Cluster mode's ListJobs of every node: the live nodes by name, each
// one's own jobs oldest first, a page filled node after node. The page
// token is the last job's id, which names its node: the next page goes on
// there (or at the next name, if that node is gone). Held by the callback
// under way; answers the call once.
class NodeListWalk : public std::enable_shared_from_this<NodeListWalk> {
 public:
  NodeListWalk(Scheduler& scheduler, RemoteJobs& remote, ListJobsQuery query,
               absl::Time answer_by, grpc::ServerUnaryReactor* reactor,
               v1::ListJobsResponse* response)
      : scheduler_(scheduler),
        remote_(remote),
        query_(std::move(query)),
        answer_by_(answer_by),
        reactor_(reactor),
        response_(response),
        own_(JobIdNode()),
        nodes_(remote.LiveNodes()) {}

  // Starts after `token`'s job (a qualified id; empty: from the first).
  absl::Status StartAfter(const std::string& token) {
    if (token.empty()) return absl::OkStatus();
    absl::StatusOr<JobRef> from = ParseJobRef(token, "page_token");
    if (!from.ok()) return from.status();
    const std::string node = from->here() ? own_ : from->node;
    index_ = static_cast<size_t>(
        std::lower_bound(nodes_.begin(), nodes_.end(), node) - nodes_.begin());
    if (index_ < nodes_.size() && nodes_[index_] == node) {
      after_ = from->number;
    }
    return absl::OkStatus();
  }

  // Asks the node at index_ for the rest of the page.
  void Step() {
    if (index_ >= nodes_.size()) return reactor_->Finish(grpc::Status::OK);
    const size_t left =
        query_.limit - static_cast<size_t>(response_->jobs_size());
    const size_t bytes_left = query_.max_bytes - bytes_;
    const std::string& node = nodes_[index_];
    if (node == own_) {
      ListJobsQuery here = query_;
      here.after_id = after_;
      here.limit = left;
      here.max_bytes = bytes_left;
      scheduler_.ShowJobs(
          here, [self = shared_from_this()](
                    absl::StatusOr<std::vector<v1::Job>> jobs, bool more) {
            self->Add(std::move(jobs), more);
          });
      return;
    }
    v1::ListJobsRequest ask;
    for (v1::JobState s : query_.states) ask.add_states(s);
    ask.set_task(query_.task);
    ask.set_page_size(static_cast<int32_t>(left));
    if (after_ != 0) ask.set_page_token(std::to_string(after_));
    remote_.List(
        node, std::move(ask), query_.owner, bytes_left, answer_by_,
        [self = shared_from_this()](absl::StatusOr<v1::ListJobsResponse> page) {
          if (!page.ok()) return self->Add(page.status(), false);
          std::vector<v1::Job> jobs(
              std::make_move_iterator(page->mutable_jobs()->begin()),
              std::make_move_iterator(page->mutable_jobs()->end()));
          self->Add(std::move(jobs), !page->next_page_token().empty());
        });
  }

 private:
  // One node's part of the page, and whether it holds more after it: the
  // page ends there, or goes on at the next node.
  void Add(absl::StatusOr<std::vector<v1::Job>> jobs, bool more) {
    if (!jobs.ok()) return reactor_->Finish(ToGrpc(jobs.status()));
    for (v1::Job& job : *jobs) {
      bytes_ += job.ByteSizeLong() + 8;  // Tag and length.
      *response_->add_jobs() = std::move(job);
    }
    const size_t got = static_cast<size_t>(response_->jobs_size());
    // Half the message's room left at least for the next node's part.
    if (more || got >= query_.limit || 2 * bytes_ > query_.max_bytes) {
      if (got > 0) {
        response_->set_next_page_token(response_->jobs(got - 1).id());
      }
      return reactor_->Finish(grpc::Status::OK);
    }
    ++index_;
    after_ = 0;
    Step();
  }

  Scheduler& scheduler_;
  RemoteJobs& remote_;
  const ListJobsQuery query_;
  const absl::Time answer_by_;
  grpc::ServerUnaryReactor* const reactor_;
  v1::ListJobsResponse* const response_;
  const std::string own_;
  const std::vector<std::string> nodes_;
  size_t index_ = 0;
  uint64_t after_ = 0;  // At nodes_[index_].
  size_t bytes_ = 0;    // Of the jobs in the page so far.
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::ListAllNodes(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest& request,
    ListJobsQuery query, v1::ListJobsResponse* response) {
  query.own_only = true;  // A job run for another node is listed there.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto walk =
      std::make_shared<NodeListWalk>(scheduler_, *remote_, std::move(query),
                                     AnswerBy(*context), reactor, response);
  if (absl::Status s = walk->StartAfter(request.page_token()); !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  walk->Step();
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListTasks(
    grpc::CallbackServerContext* context, const v1::ListTasksRequest* request,
    v1::ListTasksResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "ListTasks");
  if (!caller.ok()) return Reply(context, caller.status());
  for (const TaskDef* def : registry_.List()) {
    *response->add_tasks() = ToProto(*def, scheduler_.IsQuarantined(*def));
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
  if (schedules_ != nullptr) schedules_->AddStats(*response);
  if (stats_extension_) stats_extension_(*response);
  response->set_version(version_);
  ToProto(limits(), response->mutable_limits());
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

grpc::ServerUnaryReactor* JobServiceImpl::SetKeyLimit(
    grpc::CallbackServerContext* context, const v1::SetKeyLimitRequest* request,
    v1::SetKeyLimitResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleAdmin, "SetKeyLimit");
  if (!caller.ok()) return Reply(context, caller.status());
  if (request->key().empty()) {
    return Reply(context, absl::InvalidArgumentError(
                              "key: empty; name the concurrency key to limit"));
  }
  if (absl::Status s = ValidateKey(request->key(), "key"); !s.ok()) {
    return Reply(context, s);
  }
  std::optional<KeyLimit> limit;
  if (request->clear()) {
    if (request->has_max_running() || request->has_max_starts_per_second()) {
      return Reply(context,
                   absl::InvalidArgumentError(
                       "clear: set with max_running or max_starts_per_second; "
                       "clear drops the key's limits, send one or the other"));
    }
  } else {
    limit.emplace();
    if (request->has_max_running()) {
      if (request->max_running() == 0) {
        return Reply(context,
                     absl::InvalidArgumentError(
                         "max_running: 0 would never run a job of the key; "
                         "use at least 1 (or leave it unset for no limit)"));
      }
      limit->max_running = request->max_running();
    }
    if (request->has_max_starts_per_second()) {
      const double rate = request->max_starts_per_second();
      if (!(rate > 0) || !(rate <= kMaxKeyRate)) {
        return Reply(context, absl::InvalidArgumentError(fmt::format(
                                  "max_starts_per_second: {} is not a rate "
                                  "above 0 and at most {:g}",
                                  rate, kMaxKeyRate)));
      }
      limit->rate = rate;
    }
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler_.SetKeyLimit(
      request->key(), limit,
      [reactor, response](absl::StatusOr<v1::KeyLimit> shown) {
        if (shown.ok()) *response->mutable_limit() = std::move(*shown);
        reactor->Finish(ToGrpc(shown.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetKeyLimits(
    grpc::CallbackServerContext* context,
    const v1::GetKeyLimitsRequest* request,
    v1::GetKeyLimitsResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "GetKeyLimits");
  if (!caller.ok()) return Reply(context, caller.status());
  for (v1::KeyLimit& key : scheduler_.KeyLimitsNow()) {
    *response->add_keys() = std::move(key);
  }
  return Reply(context, absl::OkStatus());
}

}  // namespace jobd
