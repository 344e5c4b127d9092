#include "server/dashboard/dashboard.h"

#include <httplib.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "server/auth/http_caller.h"
#include "server/dashboard/assets.h"
#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// How long a request waits for what it shows to be durable (the journal
// commits in milliseconds; past this the journal is in trouble).
constexpr absl::Duration kDurableWait = absl::Seconds(2);
// Events before a job's latest that the job page looks through.
constexpr uint64_t kEventWindow = 65536;
// Events of one job shown at most.
constexpr size_t kMaxEvents = 256;
// The header a cancel must carry: a cross-site form cannot send it, and a
// cross-site script that sets it needs a CORS preflight jobd never grants.
constexpr char kRequestHeader[] = "X-Jobd-Request";

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

int HttpStatus(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return 503;
    default:
      return 500;
  }
}

std::string JsonString(std::string_view s) {
  google::protobuf::Value v;
  v.set_string_value(MakeValidUtf8(s));
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(v, &out);
  return out;
}

// Every answer: closes its connection (a viewer holds no listener thread
// between polls), is never cached, never framed, never sniffed.
void Answer(httplib::Response& res, int status, const std::string& body,
            const char* type) {
  res.status = status;
  res.set_header("Connection", "close");
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_content(body, type);
}

void AnswerJson(httplib::Response& res, const std::string& body) {
  Answer(res, 200, body, "application/json; charset=utf-8");
}

void AnswerError(httplib::Response& res, const absl::Status& s) {
  const int status = HttpStatus(s);
  if (status == 401) res.set_header("WWW-Authenticate", "Bearer");
  Answer(res, status,
         fmt::format("{{\"error\":{}}}", JsonString(std::string(s.message()))),
         "application/json; charset=utf-8");
}

// The Host header names a loopback host (or is absent): a page from
// elsewhere that rebinds its own name to 127.0.0.1 cannot pass this.
bool LoopbackHost(const httplib::Request& req) {
  if (!req.has_header("Host")) return true;
  std::string host = req.get_header_value("Host");
  if (host.starts_with("[")) {
    host = host.substr(0, host.find(']') + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return host == "localhost" || host == "127.0.0.1" || host == "[::1]";
}

// A job's routes: its id is "N", or "N@<node>" in cluster mode.
constexpr char kJobRoute[] = R"(/api/jobs/(\d+(?:@[A-Za-z0-9._-]+)?))";
constexpr char kCancelRoute[] =
    R"(/api/jobs/(\d+(?:@[A-Za-z0-9._-]+)?)/cancel)";

absl::StatusOr<uint64_t> JobId(const httplib::Request& req) {
  // This node's jobs only.
  const uint64_t id =
      req.matches.size() < 2 ? 0 : OwnJobNumber(req.matches[1].str());
  if (id == 0) {
    return absl::InvalidArgumentError(
        "job id: expected one of this node's job ids");
  }
  return id;
}

// What a list shows of a job: no spec arguments, result or error text.
v1::Job Slim(const v1::Job& job) {
  v1::Job s;
  s.set_id(job.id());
  s.set_state(job.state());
  s.set_executor(job.executor());
  *s.mutable_create_time() = job.create_time();
  if (job.has_start_time()) *s.mutable_start_time() = job.start_time();
  if (job.has_finish_time()) *s.mutable_finish_time() = job.finish_time();
  s.mutable_spec()->set_task(job.spec().task());
  if (job.has_error()) s.mutable_error()->set_reason(job.error().reason());
  if (job.has_progress()) *s.mutable_progress() = job.progress();
  s.set_attempts(job.attempts());
  s.set_owner(job.owner());
  return s;
}

// Waits (bounded) for a Scheduler::Show* callback.
// Read `value` only once `done` is notified.
template <typename T>
struct Awaited {
  absl::Notification done;
  absl::StatusOr<T> value;
};

absl::Status NotConfirmed(std::string_view what) {
  return absl::UnavailableError(
      fmt::format("jobd's journal did not confirm {} in time; retry", what));
}

class EventCollector : public EventSink {
 public:
  bool Deliver(const Event& e, uint64_t) override {
    absl::MutexLock lock(&mu_);
    if (events_.size() < kMaxEvents * 2) events_.push_back(e);
    return false;
  }
  void Flush() override {}
  std::vector<Event> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(events_);
  }

 private:
  absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
};

v1::JobEvent ToProtoEvent(const Event& e) {
  v1::JobEvent out;
  out.set_sequence(e.sequence);
  out.set_job_id(FormatJobId(e.job_id));
  out.set_type(e.type);
  *out.mutable_time() = ToProtoTime(e.time);
  out.set_executor(e.executor);
  if (e.progress() != nullptr) *out.mutable_progress() = *e.progress();
  if (e.end() != nullptr && e.end()->state != v1::JOB_STATE_SUCCEEDED) {
    *out.mutable_error() = e.end()->error();
  }
  return out;
}

}  // namespace

Dashboard::Dashboard(Scheduler& scheduler, const Authenticator& auth,
                     DashboardOptions options)
    : scheduler_(scheduler),
      auth_(auth),
      options_(options),
      history_(options.history) {}

Dashboard::~Dashboard() { Stop(); }

void Dashboard::Start() {
  Sample();
  sampler_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval);
        if (stopping_) return;
      }
      Sample();
    }
  });
}

void Dashboard::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (sampler_.joinable()) sampler_.join();
}

void Dashboard::Sample() {
  v1::GetStatsResponse stats = scheduler_.GetStats();
  stats.set_version(options_.version);
  const absl::Time now = absl::Now();
  history_.Add(ThroughputSample::From(stats, absl::ToUnixMillis(now)));
  auto json = std::make_shared<const std::string>(ToJson(stats));
  absl::MutexLock lock(&mu_);
  stats_json_ = std::move(json);
}

absl::StatusOr<Caller> Dashboard::Authorize(const httplib::Request& req,
                                            uint32_t roles,
                                            std::string_view what) const {
  if (!auth_.required() && !LoopbackHost(req)) {
    return absl::PermissionDeniedError(
        "the dashboard answers requests for localhost, 127.0.0.1 or [::1] "
        "only (no tokens are configured)");
  }
  return HttpCaller(auth_, req, roles, what);  // As /metrics checks.
}

std::string Dashboard::StatsJson() {
  std::shared_ptr<const std::string> json;
  {
    absl::MutexLock lock(&mu_);
    json = stats_json_;
  }
  if (json == nullptr) return ToJson(scheduler_.GetStats());  // Not started.
  return *json;
}

std::string Dashboard::JobListsJson(const Caller& caller) {
  const std::string owner = caller.admin() ? std::string() : caller.name;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    auto it = lists_.find(owner);
    if (it != lists_.end() && now - it->second.taken < options_.interval) {
      return it->second.json;
    }
  }
  auto page = [&](std::vector<v1::JobState> states,
                  size_t limit) -> absl::StatusOr<v1::ListJobsResponse> {
    ListJobsQuery q;
    q.states = std::move(states);
    q.owner = owner;
    q.limit = limit;
    q.newest_first = true;
    q.max_scanned = options_.max_scanned;
    auto wait = std::make_shared<Awaited<std::vector<v1::Job>>>();
    scheduler_.ShowJobs(
        q, [wait](absl::StatusOr<std::vector<v1::Job>> jobs, bool) {
          wait->value = std::move(jobs);
          wait->done.Notify();
        });
    if (!wait->done.WaitForNotificationWithTimeout(kDurableWait)) {
      return NotConfirmed("the job list");
    }
    if (!wait->value.ok()) return wait->value.status();
    v1::ListJobsResponse out;
    for (const v1::Job& j : *wait->value) *out.add_jobs() = Slim(j);
    return out;
  };
  absl::StatusOr<v1::ListJobsResponse> running =
      page({v1::JOB_STATE_RUNNING}, options_.running_jobs);
  absl::StatusOr<v1::ListJobsResponse> recent = page({}, options_.recent_jobs);
  if (!running.ok() || !recent.ok()) {
    const absl::Status& s = !running.ok() ? running.status() : recent.status();
    return fmt::format("{{\"error\":{}}}",
                       JsonString(std::string(s.message())));
  }
  std::string json =
      fmt::format("{{\"running\":{},\"recent\":{},\"maxScanned\":{}}}",
                  ToJson(*running), ToJson(*recent), options_.max_scanned);
  absl::MutexLock lock(&mu_);
  if (lists_.size() >= kMaxViews && !lists_.contains(owner)) lists_.clear();
  lists_[owner] = JobLists{.taken = now, .json = json};
  return json;
}

absl::StatusOr<std::string> Dashboard::JobJson(uint64_t id,
                                               const Caller& caller) {
  const std::string owner = caller.admin() ? std::string() : caller.name;
  absl::StatusOr<v1::Job> now = scheduler_.GetJob(id, owner);
  if (!now.ok()) return now.status();
  // Its events still in the log, replayed (a window before its latest).
  auto collector = std::make_shared<EventCollector>();
  const uint64_t after = now->last_sequence() > kEventWindow
                             ? now->last_sequence() - kEventWindow
                             : 1;
  absl::StatusOr<WatchResult> watched = scheduler_.Watch(
      {id}, after, Subscriber{.sink = collector, .owner = owner});
  if (watched.ok()) scheduler_.Unwatch(collector.get(), {id});
  // The job once what it shows is durable (its events before it too).
  auto wait = std::make_shared<Awaited<v1::Job>>();
  scheduler_.ShowJob(id, owner, [wait](absl::StatusOr<v1::Job> job) {
    wait->value = std::move(job);
    wait->done.Notify();
  });
  if (!wait->done.WaitForNotificationWithTimeout(kDurableWait)) {
    return NotConfirmed("the job");
  }
  if (!wait->value.ok()) return wait->value.status();
  v1::Job& job = *wait->value;
  std::vector<Event> events = collector->Take();
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return a.sequence < b.sequence;
  });
  std::erase_if(events, [&](const Event& e) {
    return e.sequence > job.last_sequence();  // Not yet durable.
  });
  events.erase(std::unique(events.begin(), events.end(),
                           [](const Event& a, const Event& b) {
                             return a.sequence == b.sequence;
                           }),
               events.end());
  const bool accepted = std::any_of(
      events.begin(), events.end(),
      [](const Event& e) { return e.type == v1::EVENT_TYPE_ACCEPTED; });
  v1::WatchJobsResponse shown;
  if (!accepted) {  // Older than the window: it is the job's creation.
    v1::JobEvent* created = shown.add_events();
    created->set_job_id(job.id());
    created->set_type(v1::EVENT_TYPE_ACCEPTED);
    *created->mutable_time() = job.create_time();
    created->set_executor(job.executor());
  }
  // The latest ones if there are too many (progress reports).
  const size_t skip =
      events.size() > kMaxEvents ? events.size() - kMaxEvents : 0;
  for (size_t i = skip; i < events.size(); ++i) {
    *shown.add_events() = ToProtoEvent(events[i]);
  }
  // Events between the creation and the first one shown may be missing.
  shown.set_events_lost(skip > 0 || (!accepted && (after > 1 || !watched.ok() ||
                                                   watched->events_lost)));
  bool truncated = false;
  if (job.ByteSizeLong() > options_.max_job_bytes) {
    job.mutable_spec()->clear_payload();
    job.mutable_spec()->clear_args();
    job.mutable_spec()->clear_kwargs();
    job.mutable_spec()->clear_calls();
    job.mutable_result()->clear_value();
    job.mutable_result()->clear_batch();
    job.mutable_result()->clear_payload();
    truncated = true;
  }
  return fmt::format("{{\"job\":{},\"events\":{},\"truncated\":{}}}",
                     ToJson(job), ToJson(shown), truncated);
}

absl::StatusOr<std::string> Dashboard::CancelJson(uint64_t id,
                                                  const Caller& caller) {
  auto result =
      scheduler_.Cancel(id, caller.admin() ? std::string_view() : caller.name);
  if (!result.ok()) return result.status();
  // The answer waits for the cancellation to be durable, like its event.
  auto durable = std::make_shared<Awaited<bool>>();
  scheduler_.WhenDurable(
      scheduler_.journal_ticket(),
      [durable](bool ok) {
        durable->value = ok;
        durable->done.Notify();
      },
      Journal::Wait::kFailFast);
  if (!durable->done.WaitForNotificationWithTimeout(kDurableWait) ||
      !durable->value.ok() || !*durable->value) {
    return absl::UnavailableError(fmt::format(
        "the job was cancelled here, but that is not durable yet: {}",
        std::string(scheduler_.NotDurable().message())));
  }
  v1::CancelJobResponse r;
  r.set_state(result->first);
  r.set_already_ended(result->second);
  return ToJson(r);
}

void Dashboard::AddRoutes(httplib::Server& s) {
  constexpr uint32_t kView = kRoleSubmit | kRoleRead;
  for (const DashboardAsset& asset : DashboardAssets()) {
    s.Get(std::string(asset.path),
          [&asset](const httplib::Request&, httplib::Response& res) {
            // Scripts and styles from jobd only, none inline, nothing sent
            // elsewhere.
            res.set_header("Content-Security-Policy",
                           "default-src 'none'; script-src 'self'; "
                           "style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'none'; "
                           "frame-ancestors 'none'; base-uri 'none'");
            Answer(res, 200, std::string(asset.body),
                   std::string(asset.content_type).c_str());
          });
  }
  s.Get("/api/me", [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<Caller> c = Authorize(req, kView, "dashboard");
    if (!c.ok()) return AnswerError(res, c.status());
    AnswerJson(res,
               fmt::format("{{\"name\":{},\"roles\":{},\"admin\":{},"
                           "\"canSubmit\":{},\"authRequired\":{}}}",
                           JsonString(c->name), JsonString(RolesName(c->roles)),
                           c->admin(), (c->roles & kRoleSubmit) != 0,
                           auth_.required()));
  });
  s.Get("/api/stats",
        [this](const httplib::Request& req, httplib::Response& res) {
          absl::StatusOr<Caller> c = Authorize(req, kView, "dashboard");
          if (!c.ok()) return AnswerError(res, c.status());
          AnswerJson(res, StatsJson());
        });
  s.Get("/api/throughput", [this](const httplib::Request& req,
                                  httplib::Response& res) {
    absl::StatusOr<Caller> c = Authorize(req, kView, "dashboard");
    if (!c.ok()) return AnswerError(res, c.status());
    int64_t after = 0;
    if (req.has_param("after") &&
        !absl::SimpleAtoi(req.get_param_value("after"), &after)) {
      return AnswerError(res, absl::InvalidArgumentError(
                                  "after: expected milliseconds since 1970"));
    }
    AnswerJson(res, ThroughputJson(history_.After(after),
                                   absl::ToInt64Milliseconds(options_.interval),
                                   history_.capacity()));
  });
  s.Get("/api/jobs",
        [this](const httplib::Request& req, httplib::Response& res) {
          absl::StatusOr<Caller> c = Authorize(req, kView, "dashboard");
          if (!c.ok()) return AnswerError(res, c.status());
          AnswerJson(res, JobListsJson(*c));
        });
  s.Get(kJobRoute, [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<Caller> c = Authorize(req, kView, "dashboard");
    if (!c.ok()) return AnswerError(res, c.status());
    absl::StatusOr<uint64_t> id = JobId(req);
    if (!id.ok()) return AnswerError(res, id.status());
    absl::StatusOr<std::string> json = JobJson(*id, *c);
    if (!json.ok()) return AnswerError(res, json.status());
    AnswerJson(res, *json);
  });
  s.Post(kCancelRoute, [this](const httplib::Request& req,
                              httplib::Response& res) {
    absl::StatusOr<Caller> c = Authorize(req, kRoleSubmit, "cancel");
    if (!c.ok()) return AnswerError(res, c.status());
    if (!req.has_header(kRequestHeader)) {
      return AnswerError(res, absl::PermissionDeniedError(fmt::format(
                                  "cancel: the {} header is required (it "
                                  "keeps other sites' forms out)",
                                  kRequestHeader)));
    }
    absl::StatusOr<uint64_t> id = JobId(req);
    if (!id.ok()) return AnswerError(res, id.status());
    absl::StatusOr<std::string> json = CancelJson(*id, *c);
    if (!json.ok()) return AnswerError(res, json.status());
    spdlog::info("dashboard: job {} cancelled by {}", *id, c->name);
    AnswerJson(res, *json);
  });
}

}  // namespace jobd
