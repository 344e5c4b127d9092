#include "server/cluster/job_router.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "jobd/v1/jobd.pb.h"
#include "server/cluster/work_stream.h"
#include "server/jobs/event_proto.h"
#include "server/jobs/proto_time.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd::cluster {
namespace {

// KEYS: the stream. ARGV: cap, TTL (ms), then field, value, ... The
// entry's id.
constexpr char kSendScript[] = R"lua(
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
)lua";

std::string Field(const absl::flat_hash_map<std::string, std::string>& f,
                  const char* name) {
  auto it = f.find(name);
  return it == f.end() ? std::string() : it->second;
}

// What a watch request collects at the job's node (ServeWatch): the
// job's events as the scheduler delivers them; `first` runs (once) when
// the first arrives, without the scheduler's lock.
class EventCollector final : public EventSink {
 public:
  explicit EventCollector(std::function<void()> first)
      : first_(std::move(first)) {}
  bool Deliver(const Event& event, uint64_t) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
    return !flushed_;
  }
  void Flush() override {
    std::function<void()> first;
    {
      absl::MutexLock lock(&mu_);
      if (flushed_) return;
      flushed_ = true;
      first = std::move(first_);
    }
    if (first) first();
  }
  std::vector<Event> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(events_);
  }

 private:
  absl::Mutex mu_;  // A leaf.
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  bool flushed_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> first_ ABSL_GUARDED_BY(mu_);
};

// A watch reply's body: the horizon, whether the job ended, then the
// events (a serialized WatchJobsResponse).
std::string WatchReply(uint64_t horizon, bool ended,
                       const v1::WatchJobsResponse& events) {
  return fmt::format("{} {}\n{}", horizon, ended ? 1 : 0,
                     events.SerializeAsString());
}

absl::StatusOr<RemoteJobs::RemoteEvents> ParseWatchReply(
    const std::string& body) {
  const size_t eol = body.find('\n');
  const size_t space = body.find(' ');
  RemoteJobs::RemoteEvents out;
  v1::WatchJobsResponse events;
  int ended = 0;
  if (eol == std::string::npos || space > eol ||
      !absl::SimpleAtoi(body.substr(0, space), &out.horizon) ||
      !absl::SimpleAtoi(body.substr(space + 1, eol - space - 1), &ended) ||
      !events.ParseFromString(body.substr(eol + 1))) {
    return absl::InternalError("an unreadable watch reply");
  }
  out.ended = ended != 0;
  out.events.assign(std::make_move_iterator(events.mutable_events()->begin()),
                    std::make_move_iterator(events.mutable_events()->end()));
  return out;
}

}  // namespace

JobRouter::JobRouter(asio::io_context& io,
                     std::shared_ptr<RedisConnection> commands,
                     std::shared_ptr<RedisConnection> reader,
                     std::shared_ptr<Membership> membership,
                     std::shared_ptr<WorkSharing> work,
                     const ClusterOptions& options, Scheduler& scheduler)
    : io_(io),
      commands_(std::move(commands)),
      reader_(std::move(reader)),
      membership_(std::move(membership)),
      work_(std::move(work)),
      options_(options),
      scheduler_(scheduler),
      read_timer_(io),
      // Numbered from a random start: a late reply to a request of an
      // earlier incarnation of this node (the same name, before a
      // restart) matches none of this one's requests.
      next_req_(absl::Uniform<uint64_t>(absl::BitGen(), 1, uint64_t{1} << 62)) {
}

std::string JobRouter::RequestsKey(std::string_view node) {
  return fmt::format("{{jobd:rpc:{}}}:in", node);
}

std::string JobRouter::RepliesKey(std::string_view node) {
  return fmt::format("{{jobd:rpc:{}}}:replies", node);
}

void JobRouter::Start(std::function<void()> reading) {
  Post([self = shared_from_this(), reading = std::move(reading)]() mutable {
    if (self->started_ || self->stopped_) return;
    self->started_ = true;
    self->reading_ = std::move(reading);
    self->ReadLoop();
  });
}

bool JobRouter::Post(std::function<void()> fn) {
  absl::MutexLock lock(&gate_mu_);
  if (closed_) return false;
  asio::post(io_, std::move(fn));
  return true;
}

void JobRouter::Stop() {
  scheduler_.SetRemoteJobs(nullptr);  // Its remote dependencies stop.
  absl::MutexLock lock(&gate_mu_);
  if (closed_) return;
  closed_ = true;
  asio::post(io_, [self = shared_from_this()] {
    self->stopped_ = true;
    self->read_timer_.cancel();
    auto waiting = std::move(self->waiting_);
    self->waiting_.clear();
    for (const auto& timer : self->polls_) timer->cancel();
    for (const auto& timer : self->watches_) timer->cancel();
    for (auto& [req, w] : waiting) {
      w.timer->cancel();
      w.done(absl::UnavailableError("this node is stopping"));
    }
  });
}

template <typename Message>
void JobRouter::AskFor(const std::string& node, Fields fields,
                       absl::Time deadline,
                       std::function<void(absl::StatusOr<Message>)> done) {
  const bool posted = Post([self = shared_from_this(), node,
                            fields = std::move(fields), deadline,
                            done]() mutable {
    self->Ask(
        node, std::move(fields), deadline,
        [done = std::move(done)](absl::StatusOr<std::string> body) {
          if (!body.ok()) return done(body.status());
          Message reply;
          if (!reply.ParseFromString(*body)) {
            return done(absl::InternalError(fmt::format(
                "an unreadable {} in a reply", Message::descriptor()->name())));
          }
          done(std::move(reply));
        });
  });
  if (!posted) done(absl::UnavailableError("this node is stopping"));
}

void JobRouter::Get(const JobRef& job, std::string owner, absl::Time wait_until,
                    absl::Time deadline,
                    std::function<void(absl::StatusOr<v1::Job>)> done) {
  Fields f;
  f["op"] = "get";
  f["job"] = std::to_string(job.number);
  f["owner"] = std::move(owner);
  if (wait_until != absl::InfinitePast()) {
    // The answer must be back before the asker gives up: the job's node
    // answers a little earlier (one round trip through Redis).
    const absl::Duration wait = std::max(
        absl::Milliseconds(1),
        std::min(wait_until, deadline) - absl::Now() - absl::Milliseconds(100));
    f["wait_ms"] = std::to_string(absl::ToInt64Milliseconds(wait));
  }
  AskFor<v1::Job>(job.node, std::move(f), deadline, std::move(done));
}

void JobRouter::Cancel(
    const JobRef& job, std::string owner, absl::Time deadline,
    std::function<void(absl::StatusOr<v1::CancelJobResponse>)> done) {
  Fields f;
  f["op"] = "cancel";
  f["job"] = std::to_string(job.number);
  f["owner"] = std::move(owner);
  AskFor<v1::CancelJobResponse>(job.node, std::move(f), deadline,
                                std::move(done));
}

void JobRouter::ReadOutput(
    const JobRef& job, std::string owner, uint64_t offset, size_t max_bytes,
    absl::Time wait_until,
    std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done) {
  ReadOutputAt(job, std::nullopt, std::move(owner), offset, max_bytes,
               wait_until, std::move(done));
}

void JobRouter::ReadOutputAt(
    const JobRef& job, std::optional<int64_t> run_of, std::string owner,
    uint64_t offset, size_t max_bytes, absl::Time wait_until,
    std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done) {
  Fields f;
  f["op"] = "output";
  f["job"] = std::to_string(job.number);
  if (run_of.has_value()) {
    f["run_of"] = "1";
    f["create"] = std::to_string(*run_of);
  }
  f["owner"] = owner;
  f["offset"] = std::to_string(offset);
  f["max_bytes"] = std::to_string(max_bytes);
  AskFor<v1::StreamJobOutputResponse>(
      job.node, std::move(f), absl::Now() + kDefaultWait,
      [self = shared_from_this(), job, run_of, owner = std::move(owner), offset,
       max_bytes, wait_until, done = std::move(done)](
          absl::StatusOr<v1::StreamJobOutputResponse> r) mutable {
        // (On the io thread.)
        if (!r.ok() || !NothingNew(*r) ||
            absl::Now() + kOutputPoll >= wait_until) {
          return done(std::move(r));
        }
        // Nothing new yet: asked again after a poll interval.
        self->AfterPoll(
            [self, job, run_of, owner = std::move(owner), offset, max_bytes,
             wait_until, done]() mutable {
              self->ReadOutputAt(job, run_of, std::move(owner), offset,
                                 max_bytes, wait_until, std::move(done));
            },
            done);
      });
}

void JobRouter::ReadSharedOutput(
    uint64_t id, int64_t create_ns, std::string owner, uint64_t offset,
    size_t max_bytes, absl::Time wait_until,
    std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done) {
  const bool posted =
      Post([self = shared_from_this(), id, create_ns, owner = std::move(owner),
            offset, max_bytes, wait_until, done]() mutable {
        self->FollowShared(id, create_ns, std::move(owner), offset, max_bytes,
                           wait_until, std::move(done));
      });
  if (!posted) done(absl::UnavailableError("this node is stopping"));
}

void JobRouter::FollowShared(
    uint64_t id, int64_t create_ns, std::string owner, uint64_t offset,
    size_t max_bytes, absl::Time wait_until,
    std::function<void(absl::StatusOr<v1::StreamJobOutputResponse>)> done) {
  if (work_ == nullptr) {
    return done(absl::FailedPreconditionError("no work sharing here"));
  }
  // Ended here (or gone): what its runner says now is its last; until
  // then a run that ended there (handed back, reclaimed, not run there
  // after all) is not the job's end: it is looked for again.
  absl::StatusOr<OutputRead> here = scheduler_.ReadOutput(id, "", offset, 1);
  const bool ended = !here.ok() || here->ended;
  auto again = [self = shared_from_this(), id, create_ns, owner, offset,
                max_bytes, wait_until,
                done](v1::StreamJobOutputResponse r) mutable {
    if (!NothingNew(r) || absl::Now() + kOutputPoll >= wait_until) {
      return done(std::move(r));
    }
    self->AfterPoll(
        [self, id, create_ns, owner = std::move(owner), offset, max_bytes,
         wait_until, done]() mutable {
          self->FollowShared(id, create_ns, std::move(owner), offset, max_bytes,
                             wait_until, std::move(done));
        },
        done);
  };
  work_->Locate(
      id, create_ns,
      [self = shared_from_this(), id, create_ns, owner, ended, offset,
       max_bytes,
       again = std::move(again)](absl::StatusOr<std::string> node) mutable {
        v1::StreamJobOutputResponse none;
        none.set_next_offset(offset);
        none.set_ended(ended);
        // No node holds it: not taken yet, or ended here with its runner
        // unknown (its output is out of reach).
        if (!node.ok() || node->empty()) return again(std::move(none));
        self->ReadOutputAt(
            JobRef{.number = id, .node = *node}, create_ns, std::move(owner),
            offset, max_bytes, absl::InfinitePast(),
            [ended, none, again = std::move(again)](
                absl::StatusOr<v1::StreamJobOutputResponse> r) mutable {
              // Its runner's error (gone, restarted, no run of it there):
              // nothing new, looked for again; its end once ended here.
              if (!r.ok()) return again(std::move(none));
              if (!ended) r->set_ended(false);
              again(*std::move(r));
            });
      });
}

template <typename Done>
void JobRouter::AfterPoll(std::function<void()> again, Done done) {
  auto timer = std::make_shared<asio::steady_timer>(io_);
  polls_.insert(timer);
  timer->expires_after(absl::ToChronoNanoseconds(kOutputPoll));
  timer->async_wait([self = shared_from_this(), timer, again = std::move(again),
                     done = std::move(done)](std::error_code ec) mutable {
    self->polls_.erase(timer);
    if (ec || self->stopped_) {
      return done(absl::UnavailableError("this node is stopping"));
    }
    again();
  });
}

void JobRouter::Watch(const JobRef& job, std::string owner,
                      uint64_t after_sequence, bool include_progress,
                      absl::Time wait_until,
                      std::function<void(absl::StatusOr<RemoteEvents>)> done) {
  Fields f;
  f["op"] = "watch";
  f["job"] = std::to_string(job.number);
  f["owner"] = std::move(owner);
  f["after"] = std::to_string(after_sequence);
  f["progress"] = include_progress ? "1" : "0";
  // Answered a little before the asker gives up (a round trip through
  // Redis, and the wait for its events to be durable there).
  const absl::Duration wait =
      std::max(absl::Milliseconds(1),
               wait_until - absl::Now() - absl::Milliseconds(500));
  f["wait_ms"] = std::to_string(absl::ToInt64Milliseconds(wait));
  const bool posted = Post([self = shared_from_this(), node = job.node,
                            f = std::move(f), wait_until, done]() mutable {
    self->Ask(node, std::move(f), wait_until,
              [done = std::move(done)](absl::StatusOr<std::string> body) {
                if (!body.ok()) return done(body.status());
                done(ParseWatchReply(*body));
              });
  });
  if (!posted) done(absl::UnavailableError("this node is stopping"));
}

std::vector<std::string> JobRouter::LiveNodes() const {
  std::vector<std::string> names;
  for (const NodeView& n : membership_->Snapshot().nodes) {
    if (n.alive || n.name == options_.node_name) names.push_back(n.name);
  }
  if (std::find(names.begin(), names.end(), options_.node_name) ==
      names.end()) {
    names.push_back(options_.node_name);  // Not registered yet.
  }
  std::sort(names.begin(), names.end());
  return names;
}

void JobRouter::List(
    const std::string& node, v1::ListJobsRequest request, std::string owner,
    size_t max_bytes, absl::Time deadline,
    std::function<void(absl::StatusOr<v1::ListJobsResponse>)> done) {
  Fields f;
  f["op"] = "list";
  f["owner"] = std::move(owner);
  f["body"] = request.SerializeAsString();
  f["max_bytes"] = std::to_string(max_bytes);
  AskFor<v1::ListJobsResponse>(node, std::move(f), deadline, std::move(done));
}

void JobRouter::Ask(const std::string& node, Fields fields, absl::Time deadline,
                    BodyDone done) {
  if (stopped_) return done(absl::UnavailableError("this node is stopping"));
  // What the errors name: the job, or the node's list.
  const std::string subject =
      fields["op"] == "list" ? fmt::format("listing the jobs of {}", node)
                             : fmt::format("job {}@{}", fields["job"], node);
  const MembershipSnapshot s = membership_->Snapshot();
  const NodeView* view = nullptr;
  for (const NodeView& n : s.nodes) {
    if (n.name == node) view = &n;
  }
  if (view == nullptr && s.last_reap == absl::InfinitePast()) {
    // Not read yet (this node just started): unknown is not "none".
    return done(absl::UnavailableError(fmt::format(
        "{}: this node has not read the cluster's registry yet", subject)));
  }
  if (view == nullptr) {
    return done(absl::NotFoundError(
        fmt::format("{}: no node '{}' in the cluster", subject, node)));
  }
  if (!view->alive) {
    return done(absl::UnavailableError(
        fmt::format("{}: node '{}' is dead (since {}); its jobs are out of "
                    "reach until it is back",
                    subject, node,
                    absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", view->dead_since,
                                     absl::UTCTimeZone()))));
  }
  if (commands_->connected() && after_replies_.empty() &&
      absl::Now() < deadline) {
    // Just started: replies can be read once the reader knows where to
    // begin (a round trip away). Asked again shortly.
    auto retry = std::make_shared<asio::steady_timer>(io_);
    retry->expires_after(std::chrono::milliseconds(20));
    retry->async_wait([self = shared_from_this(), retry, node,
                       fields = std::move(fields), deadline,
                       done = std::move(done)](std::error_code) mutable {
      self->Ask(node, std::move(fields), deadline, std::move(done));
    });
    return;
  }
  if (!commands_->connected() || !reader_->connected() ||
      after_replies_.empty()) {
    return done(absl::UnavailableError(fmt::format(
        "{}: Redis is unreachable from this node: other nodes' jobs "
        "are out of reach",
        subject)));
  }
  const uint64_t req = next_req_++;
  fields["req"] = std::to_string(req);
  fields["from"] = options_.node_name;
  Waiting& w = waiting_[req];
  w.done = std::move(done);
  w.timer = std::make_unique<asio::steady_timer>(io_);
  const absl::Duration left =
      std::max(absl::ZeroDuration(), deadline - absl::Now());
  w.timer->expires_after(absl::ToChronoNanoseconds(left));
  w.timer->async_wait(
      [self = shared_from_this(), req, node, left](std::error_code ec) {
        if (ec) return;
        self->Finish(req, absl::UnavailableError(
                              fmt::format("node '{}' did not answer within {}",
                                          node, absl::FormatDuration(left))));
      });
  if (!Send(RequestsKey(node), std::move(fields),
            [self = shared_from_this(), req](absl::Status sent) {
              if (!sent.ok()) self->Finish(req, sent);
            })) {
    Finish(req, absl::UnavailableError("this node is stopping"));
  }
}

bool JobRouter::Send(const std::string& key, Fields fields,
                     std::function<void(absl::Status)> sent) {
  std::vector<std::string> argv = {
      "EVAL",
      kSendScript,
      "1",
      key,
      std::to_string(kStreamCap),
      std::to_string(absl::ToInt64Milliseconds(kStreamTtl))};
  for (auto& [name, value] : fields) {
    argv.push_back(name);
    argv.push_back(std::move(value));
  }
  absl::MutexLock lock(&gate_mu_);
  if (closed_) return false;
  // Command only posts to the io thread: a leaf under the gate.
  commands_->Command(std::move(argv),
                     [sent = std::move(sent)](absl::StatusOr<RedisValue> r) {
                       if (!sent) return;
                       if (!r.ok()) return sent(r.status());
                       if (r->is_error())
                         return sent(absl::UnavailableError(r->str));
                       sent(absl::OkStatus());
                     });
  return true;
}

void JobRouter::Answer(const std::string& to, const std::string& req,
                       const absl::Status& status, std::string body) {
  Fields f;
  f["req"] = req;
  f["code"] = std::to_string(static_cast<int>(status.code()));
  f["msg"] = std::string(status.message());
  f["body"] = std::move(body);
  SendAnswer(RepliesKey(to), std::make_shared<const Fields>(std::move(f)),
             absl::Now() + kAnswerFor);
}

void JobRouter::SendAnswer(std::string key,
                           std::shared_ptr<const Fields> fields,
                           absl::Time give_up) {
  // On any thread, perhaps after Stop (then nothing is sent).
  (void)Send(key, *fields,
             [self = shared_from_this(), key, fields,
              give_up](absl::Status sent) mutable {
               // On the io thread.
               if (sent.ok() || self->stopped_) return;
               if (absl::Now() >= give_up) {
                 spdlog::warn("cluster: cannot answer request {} on {}: {}",
                              fields->at("req"), key, sent.ToString());
                 return;
               }
               auto retry = std::make_shared<asio::steady_timer>(self->io_);
               retry->expires_after(std::chrono::milliseconds(100));
               retry->async_wait([self, retry, key = std::move(key),
                                  fields = std::move(fields),
                                  give_up](std::error_code ec) mutable {
                 if (!ec) {
                   self->SendAnswer(std::move(key), std::move(fields), give_up);
                 }
               });
             });
}

void JobRouter::ReadLoop() {
  if (stopped_) return;
  auto again = [self = shared_from_this()] {
    self->read_timer_.expires_after(std::chrono::milliseconds(100));
    self->read_timer_.async_wait([self](std::error_code ec) {
      if (!ec) self->ReadLoop();
    });
  };
  if (!reader_->connected()) return again();
  if (after_replies_.empty()) {
    // Reads begin now (Redis's clock, as the entries' ids): requests from
    // before this start are stale, their askers gave up.
    reader_->Command({"TIME"}, [self = shared_from_this(),
                                again](absl::StatusOr<RedisValue> r) {
      int64_t sec = 0, usec = 0;
      if (!r.ok() || r->elements.size() != 2 ||
          !absl::SimpleAtoi(r->elements[0].str, &sec) ||
          !absl::SimpleAtoi(r->elements[1].str, &usec)) {
        // The node joins only once it has its start point: say why not
        // (at the first failure and every 100th, about every 10 s).
        if (self->time_failures_++ % 100 == 0) {
          spdlog::warn(
              "cluster: node '{}' cannot read Redis's TIME on its requests' "
              "connection ({}); it joins the cluster once it can",
              self->options_.node_name,
              r.ok() ? r->DebugString() : r.status().ToString());
        }
        return again();
      }
      // Entries after the last id of the millisecond before (XREAD reads
      // after an id): one written in this millisecond is read.
      const std::string now = fmt::format("{}-{}", sec * 1000 + usec / 1000 - 1,
                                          std::numeric_limits<uint64_t>::max());
      self->after_in_ = self->after_replies_ = now;
      if (self->reading_ != nullptr && !self->stopped_) {
        std::exchange(self->reading_, nullptr)();
      }
      self->ReadLoop();
    });
    return;
  }
  const std::string in = RequestsKey(options_.node_name);
  const std::string replies = RepliesKey(options_.node_name);
  const absl::Duration block = absl::Milliseconds(500);
  reader_->Command(
      {"XREAD", "COUNT", "128", "BLOCK",
       std::to_string(absl::ToInt64Milliseconds(block)), "STREAMS", in, replies,
       after_in_, after_replies_},
      [self = shared_from_this(), in, again](absl::StatusOr<RedisValue> r) {
        if (self->stopped_) return;
        if (!r.ok() || r->is_error()) return again();
        // nil (nothing came), or [[key, [[id, [field, value, ...]], ...]]].
        for (const RedisValue& stream : r->elements) {
          if (stream.elements.size() != 2) continue;
          const bool request = stream.elements[0].str == in;
          for (const RedisValue& e : stream.elements[1].elements) {
            if (e.elements.size() != 2) continue;
            (request ? self->after_in_ : self->after_replies_) =
                e.elements[0].str;
            Fields f;
            const auto& kv = e.elements[1].elements;
            for (size_t i = 0; i + 1 < kv.size(); i += 2) {
              f[kv[i].str] = kv[i + 1].str;
            }
            if (request) {
              self->Serve(std::move(f));
            } else {
              self->OnReply(f);
            }
          }
        }
        self->ReadLoop();
      },
      block);
}

void JobRouter::Serve(Fields f) {
  const std::string op = Field(f, "op");
  if (op == "stop") {
    int partition = 0, index = 0;
    if (work_ != nullptr &&
        absl::SimpleAtoi(Field(f, "partition"), &partition) &&
        absl::SimpleAtoi(Field(f, "index"), &index)) {
      work_->StopEntry(partition, Field(f, "entry"), index);
    }
    return;
  }
  if (op == "running") return ServeRunning(Field(f, "body"));
  const std::string from = Field(f, "from");
  const std::string req = Field(f, "req");
  if (from.empty() || req.empty()) return;  // Nobody to answer.
  if (op == "list") return ServeList(f, from, req);
  uint64_t id = 0;
  if (!absl::SimpleAtoi(Field(f, "job"), &id) || id == 0) {
    return Answer(from, req, absl::InvalidArgumentError("job: not a job id"),
                  {});
  }
  const std::string owner = Field(f, "owner");
  auto answer_job = [self = shared_from_this(), from,
                     req](absl::StatusOr<v1::Job> job) {
    // On the calling, journal or timer thread: Answer only sends.
    self->Answer(from, req, job.status(),
                 job.ok() ? job->SerializeAsString() : std::string());
  };
  if (op == "get") {
    int64_t wait_ms = 0;
    if (absl::SimpleAtoi(Field(f, "wait_ms"), &wait_ms) && wait_ms > 0) {
      scheduler_.WaitJob(id, absl::Now() + absl::Milliseconds(wait_ms),
                         std::move(answer_job), owner);
    } else {
      scheduler_.ShowJob(id, owner, std::move(answer_job));
    }
    return;
  }
  if (op == "output") return ServeOutput(f, id, from, req);
  if (op == "watch") return ServeWatch(f, id, from, req);
  if (op == "cancel") {
    auto result = scheduler_.Cancel(id, owner);
    if (!result.ok()) return Answer(from, req, result.status(), {});
    v1::CancelJobResponse r;
    r.set_state(result->first);
    r.set_already_ended(result->second);
    // Answered once the cancellation is durable, as at its node.
    AnswerWhenDurable(
        from, req, scheduler_.journal_ticket(), r.SerializeAsString(),
        fmt::format("the job was cancelled at node {}, but that is not "
                    "durable yet",
                    options_.node_name));
    return;
  }
  Answer(from, req,
         absl::InvalidArgumentError(fmt::format("op: '{}' is unknown", op)),
         {});
}

void JobRouter::ServeList(const Fields& f, const std::string& from,
                          const std::string& req) {
  v1::ListJobsRequest request;
  if (!request.ParseFromString(Field(f, "body"))) {
    return Answer(from, req, absl::InvalidArgumentError("body: unreadable"),
                  {});
  }
  absl::StatusOr<ListJobsQuery> query =
      ListJobsQueryOf(request, Field(f, "owner"));
  if (!query.ok()) return Answer(from, req, query.status(), {});
  if (!request.page_token().empty() &&
      !absl::SimpleAtoi(request.page_token(), &query->after_id)) {
    return Answer(from, req,
                  absl::InvalidArgumentError("page_token: not a job number"),
                  {});
  }
  uint64_t max_bytes = 0;
  (void)absl::SimpleAtoi(Field(f, "max_bytes"), &max_bytes);
  query->max_bytes = max_bytes;
  query->own_only = true;  // What it runs for others is listed at them.
  scheduler_.ShowJobs(
      *query, [self = shared_from_this(), from, req, limit = query->limit](
                  absl::StatusOr<std::vector<v1::Job>> jobs, bool more) {
        v1::ListJobsResponse page;
        if (jobs.ok()) AddListJobsPage(*std::move(jobs), more, limit, &page);
        self->Answer(from, req, jobs.status(),
                     jobs.ok() ? page.SerializeAsString() : std::string());
      });
}

void JobRouter::ServeOutput(const Fields& f, uint64_t id,
                            const std::string& from, const std::string& req) {
  // What it keeps now, answered at once (a follower polls): at most one
  // StreamJobOutput message's worth.
  constexpr uint64_t kMaxBytes = 64 << 10;
  uint64_t offset = 0, max_bytes = 0;
  (void)absl::SimpleAtoi(Field(f, "offset"), &offset);
  (void)absl::SimpleAtoi(Field(f, "max_bytes"), &max_bytes);
  max_bytes = std::clamp<uint64_t>(max_bytes, 1, kMaxBytes);
  if (Field(f, "run_of") == "1") {
    // The asker's job, which it shared: its run here, if this node took it.
    int64_t create_ns = 0;
    (void)absl::SimpleAtoi(Field(f, "create"), &create_ns);
    const uint64_t local =
        work_ == nullptr ? 0 : work_->RunOf(from, id, create_ns);
    if (local == 0) {
      return Answer(
          from, req,
          absl::NotFoundError(fmt::format("node {} holds no run of job {}@{}",
                                          options_.node_name, id, from)),
          {});
    }
    id = local;
  }
  absl::StatusOr<OutputRead> read =
      scheduler_.ReadOutput(id, Field(f, "owner"), offset, max_bytes);
  if (!read.ok()) return Answer(from, req, read.status(), {});
  if (read->shared && Field(f, "run_of") != "1") {
    // This node's job that another runs: read there, answered once.
    return FollowShared(id, read->create_ns, Field(f, "owner"), offset,
                        max_bytes, absl::InfinitePast(),
                        [self = shared_from_this(), from,
                         req](absl::StatusOr<v1::StreamJobOutputResponse> r) {
                          self->Answer(
                              from, req, r.status(),
                              r.ok() ? r->SerializeAsString() : std::string());
                        });
  }
  Answer(from, req, absl::OkStatus(), read->TakeResponse().SerializeAsString());
}

void JobRouter::ServeWatch(const Fields& f, uint64_t id,
                           const std::string& from, const std::string& req) {
  // The job's events after `after`, answered when the first comes (or the
  // wait ends), once durable here: a watcher at another node follows the
  // job by asking again after the horizon.
  constexpr int kMaxEvents = 256;
  uint64_t after = 0;
  int64_t wait_ms = 0;
  (void)absl::SimpleAtoi(Field(f, "after"), &after);
  (void)absl::SimpleAtoi(Field(f, "wait_ms"), &wait_ms);
  uint32_t mask = kAllEvents;
  if (Field(f, "progress") != "1") mask &= ~EventBit(v1::EVENT_TYPE_PROGRESS);
  auto timer = std::make_shared<asio::steady_timer>(io_);
  auto collector =
      std::make_shared<EventCollector>([weak = weak_from_this(), timer] {
        if (auto self = weak.lock()) {
          self->Post([timer] { timer->cancel(); });  // Answer now.
        }
      });
  absl::StatusOr<WatchResult> watched = scheduler_.Watch(
      {id}, after, Subscriber{collector, 0, mask, Field(f, "owner")});
  if (!watched.ok()) return Answer(from, req, watched.status(), {});
  const bool ended_before = !watched->already_seen_ends.empty();
  watches_.insert(timer);
  timer->expires_after(absl::ToChronoNanoseconds(
      ended_before ? absl::ZeroDuration()
                   : std::clamp(absl::Milliseconds(wait_ms),
                                absl::Milliseconds(1), absl::Minutes(5))));
  timer->async_wait([self = shared_from_this(), timer, collector, id, from, req,
                     ended_before](std::error_code) {
    self->watches_.erase(timer);
    uint64_t horizon = self->scheduler_.Unwatch(collector.get(), {id});
    std::vector<Event> events = collector->Take();
    if (events.size() > static_cast<size_t>(kMaxEvents)) {
      events.resize(kMaxEvents);  // The rest at the next ask.
      horizon = events.back().sequence;
    }
    v1::WatchJobsResponse reply;
    bool ended = ended_before;
    uint64_t ticket = 0;
    for (const Event& e : events) {
      ToProto(e, 0, reply.add_events());
      ended = ended || IsTerminal(e.type);
      ticket = std::max(ticket, e.ticket);
    }
    self->AnswerWhenDurable(
        from, req, ticket, WatchReply(horizon, ended, reply),
        fmt::format("node {} cannot make the job's events durable",
                    self->options_.node_name));
  });
}

void JobRouter::AnswerWhenDurable(const std::string& to, const std::string& req,
                                  uint64_t ticket, std::string body,
                                  std::string not_durable) {
  scheduler_.WhenDurable(
      ticket,
      [self = shared_from_this(), to, req, body = std::move(body),
       not_durable = std::move(not_durable)](bool durable) mutable {
        // On the journal's thread: Answer only sends.
        if (durable) return self->Answer(to, req, absl::OkStatus(), body);
        self->Answer(
            to, req,
            absl::UnavailableError(absl::StrCat(
                not_durable, ": ", self->scheduler_.NotDurable().message())),
            {});
      },
      Journal::Wait::kFailFast);
}

void JobRouter::OnReply(const Fields& f) {
  uint64_t req = 0;
  int code = 0;
  if (!absl::SimpleAtoi(Field(f, "req"), &req) ||
      !absl::SimpleAtoi(Field(f, "code"), &code)) {
    return;
  }
  if (code == 0) return Finish(req, Field(f, "body"));
  Finish(req,
         absl::Status(static_cast<absl::StatusCode>(code), Field(f, "msg")));
}

void JobRouter::Finish(uint64_t req, absl::StatusOr<std::string> body) {
  auto it = waiting_.find(req);
  if (it == waiting_.end()) return;  // Answered late: dropped.
  Waiting w = std::move(it->second);
  waiting_.erase(it);
  w.timer->cancel();
  w.done(std::move(body));
}

void JobRouter::Withdraw(int partition, uint64_t id, int64_t create_ns) {
  if (stopped_) return;
  WorkStream::Withdraw(
      *commands_, partition, options_.node_name, id, create_ns,
      options_.results_ttl,
      [self = shared_from_this(), partition, id](absl::StatusOr<Withdrawal> w) {
        if (!w.ok()) {
          // A run elsewhere goes on; its end is dropped here.
          spdlog::warn("cluster: could not withdraw job {}: {}", id,
                       std::string(w.status().message()));
          return;
        }
        if (w->was != Withdrawal::Was::kHeld) {
          spdlog::debug("cluster: job {} withdrawn ({})", id,
                        w->was == Withdrawal::Was::kRemoved
                            ? "no node had taken it"
                            : "it was not published");
          return;
        }
        const std::string holder =
            w->consumer.substr(0, w->consumer.rfind(':'));
        spdlog::info("cluster: job {} withdrawn; stopping its run on {}", id,
                     holder);
        if (holder == self->options_.node_name) {
          if (self->work_ != nullptr) {
            self->work_->StopEntry(partition, w->entry, w->index);
          }
          return;
        }
        Fields f;
        f["op"] = "stop";
        f["from"] = self->options_.node_name;
        f["partition"] = std::to_string(partition);
        f["entry"] = w->entry;
        f["index"] = std::to_string(w->index);
        (void)self->Send(RequestsKey(holder), std::move(f), nullptr);
      });
}

void JobRouter::Notify(const std::string& origin, std::string body) {
  if (origin == options_.node_name) return ServeRunning(body);
  Fields f;
  f["op"] = "running";
  f["from"] = options_.node_name;
  f["body"] = std::move(body);
  (void)Send(RequestsKey(origin), std::move(f), nullptr);
}

void JobRouter::ServeRunning(const std::string& body) {
  v1::ListJobsResponse notes;
  if (!notes.ParseFromString(body)) return;  // One-way: nobody to tell.
  for (v1::Job& job : *notes.mutable_jobs()) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(job.id(), &id) || !job.has_start_time()) continue;
    std::shared_ptr<const v1::Progress> progress;
    if (job.has_progress()) {
      progress = std::make_shared<const v1::Progress>(
          std::move(*job.mutable_progress()));
    }
    (void)scheduler_.SharedRunning(
        id, absl::ToUnixNanos(FromProtoTime(job.create_time())),
        FromProtoTime(job.start_time()), std::move(progress));
  }
}

}  // namespace jobd::cluster
