#include "server/cluster/redis_connection.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>

#include <algorithm>
#include <random>
#include <utility>

#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "spdlog/spdlog.h"

namespace jobd::cluster {
namespace {

// hiredis's reply as an owned value; nesting is bounded by what Redis sends
// (RESP2 arrays of arrays, a few levels for the commands jobd issues).
RedisValue ToValue(const redisReply* r) {
  RedisValue v;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = RedisValue::Type::kString;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::Type::kStatus;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = RedisValue::Type::kError;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) {
        v.elements.push_back(ToValue(r->element[i]));
      }
      break;
    default:
      break;  // REDIS_REPLY_NIL.
  }
  return v;
}

// Whether `fd` is ready for `events` now (or has an error or hang-up that
// hiredis must see): a level-triggered check without waiting.
bool ReadyNow(int fd, short events) {
  pollfd p{fd, events, 0};
  int n = ::poll(&p, 1, 0);
  return n > 0 && (p.revents & (events | POLLERR | POLLHUP)) != 0;
}

std::chrono::nanoseconds ToChrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

}  // namespace

// A context's fd on Asio. Handlers hold it shared; `ac` is null once
// hiredis cleaned up (the descriptor released, never closed by us).
struct RedisConnection::Watch {
  explicit Watch(asio::io_context& io) : sd(io) {}
  asio::posix::stream_descriptor sd;
  redisAsyncContext* ac = nullptr;
  std::weak_ptr<RedisConnection> owner;
  std::weak_ptr<Watch> self;
  bool want_read = false, want_write = false;
  bool read_armed = false, write_armed = false;
};

// One command in hiredis's hands: its callback and its bytes.
struct RedisConnection::Pending {
  std::shared_ptr<RedisConnection> conn;
  RedisCallback done;
  size_t bytes = 0;
};

std::shared_ptr<RedisConnection> RedisConnection::Create(
    asio::io_context& io, RedisConnectionOptions options) {
  return std::shared_ptr<RedisConnection>(
      new RedisConnection(io, std::move(options)));
}

RedisConnection::RedisConnection(asio::io_context& io,
                                 RedisConnectionOptions options)
    : io_(io),
      options_(std::move(options)),
      backoff_timer_(io),
      watchdog_timer_(io) {}

RedisConnection::~RedisConnection() {
  // Stop ran and freed the context; if not (an io_context destroyed while
  // running), free it now: its callbacks hold this object, so this runs
  // only once none is pending.
  if (ctx_ != nullptr) redisAsyncFree(ctx_);
}

void RedisConnection::Start() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->state_ == State::kIdle) self->Connect();
  });
}

void RedisConnection::Stop() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->state_ == State::kStopped) return;
    self->state_ = State::kStopped;
    self->last_error_ = "stopped";
    self->backoff_timer_.cancel();
    self->watchdog_timer_.cancel();
    if (self->ctx_ != nullptr) {
      // Runs the callbacks in flight (UNAVAILABLE), then Cleanup, then
      // OnDisconnect (if it was up), which reconnects only if not stopped.
      redisAsyncFree(self->ctx_);
      self->ctx_ = nullptr;
    }
    self->SetUp(false);
    self->listener_ = nullptr;
  });
}

absl::Status RedisConnection::Down(const std::string& why) const {
  return absl::UnavailableError(fmt::format(
      "redis {} ({}): {}", options_.endpoint.ToString(), options_.name, why));
}

void RedisConnection::SetUp(bool up) {
  if (connected_.exchange(up, std::memory_order_relaxed) == up) return;
  if (up) connects_.fetch_add(1, std::memory_order_relaxed);
  if (listener_) listener_(up);
}

void RedisConnection::Connect() {
  const RedisEndpoint& e = options_.endpoint;
  redisAsyncContext* ac = e.is_unix()
                              ? redisAsyncConnectUnix(e.unix_path.c_str())
                              : redisAsyncConnect(e.host.c_str(), e.port);
  if (ac == nullptr) {
    ScheduleReconnect("out of memory");
    return;
  }
  if (ac->err != 0) {
    std::string why = ac->errstr;
    redisAsyncFree(ac);
    ScheduleReconnect(why);
    return;
  }
  auto watch = std::make_shared<Watch>(io_);
  std::error_code ec;
  watch->sd.assign(ac->c.fd, ec);  // Registers the fd with the reactor.
  if (ec) {
    redisAsyncFree(ac);  // No hooks yet: closes its fd.
    ScheduleReconnect(fmt::format("cannot watch its socket: {}", ec.message()));
    return;
  }
  watch->ac = ac;
  watch->owner = weak_from_this();
  watch->self = watch;
  watch_ = watch;
  ctx_ = ac;
  ac->data = this;
  ac->ev.data = watch.get();
  ac->ev.addRead = &AddRead;
  ac->ev.delRead = &DelRead;
  ac->ev.addWrite = &AddWrite;
  ac->ev.delWrite = &DelWrite;
  ac->ev.cleanup = &Cleanup;
  state_ = State::kConnecting;
  // The hooks are in place: hiredis asks for a write event to learn that
  // the connection is established.
  redisAsyncSetConnectCallback(ac, &OnConnect);
  redisAsyncSetDisconnectCallback(ac, &OnDisconnect);
  deadlines_.clear();  // The previous context answered all its commands.
  connect_deadline_ = absl::Now() + options_.reply_timeout;
  if (options_.endpoint.db != 0) {
    DoCommand(
        {"SELECT", std::to_string(options_.endpoint.db)},
        [self = shared_from_this()](absl::StatusOr<RedisValue> r) {
          if (!r.ok() && self->state_ != State::kStopped) {
            spdlog::error("redis {} ({}): SELECT failed: {}",
                          self->options_.endpoint.ToString(),
                          self->options_.name, r.status().ToString());
          }
        },
        absl::ZeroDuration());
  }
  ArmWatchdog();
}

void RedisConnection::ScheduleReconnect(const std::string& why) {
  if (state_ == State::kStopped) return;
  last_error_ = why;
  state_ = State::kBackoff;
  ++failures_;
  absl::Duration delay = options_.first_backoff;
  for (int i = 1; i < failures_ && delay < options_.max_backoff; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, options_.max_backoff);
  // Jitter: somewhere in [delay/2, delay], so nodes do not come back in step.
  static thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  delay = delay * jitter(rng);
  if (failures_ == 1 || failures_ % 20 == 0) {
    spdlog::warn("redis {} ({}): {}; reconnecting in {} (attempt {})",
                 options_.endpoint.ToString(), options_.name, why,
                 absl::FormatDuration(delay), failures_);
  }
  backoff_timer_.expires_after(ToChrono(delay));
  backoff_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (ec || self->state_ != State::kBackoff) return;
    self->Connect();
  });
}

void RedisConnection::Command(std::vector<std::string> argv, RedisCallback done,
                              absl::Duration block) {
  asio::post(io_, [self = shared_from_this(), argv = std::move(argv),
                   done = std::move(done), block]() mutable {
    self->DoCommand(std::move(argv), std::move(done), block);
  });
}

void RedisConnection::Fail(RedisCallback done, absl::Status status) {
  // Never from inside the caller's own call: the answer is posted.
  asio::post(io_,
             [done = std::move(done), status = std::move(status)]() mutable {
               done(std::move(status));
             });
}

void RedisConnection::DoCommand(std::vector<std::string> argv,
                                RedisCallback done, absl::Duration block) {
  if (state_ != State::kConnected && state_ != State::kConnecting) {
    Fail(std::move(done),
         Down(state_ == State::kStopped
                  ? "stopped"
                  : fmt::format("not connected ({})", last_error_)));
    return;
  }
  if (argv.empty()) {
    Fail(std::move(done), absl::InvalidArgumentError("redis: empty command"));
    return;
  }
  size_t bytes = 0;
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
    bytes += a.size();
  }
  if (deadlines_.size() >= options_.max_in_flight ||
      in_flight_bytes_ + bytes > options_.max_in_flight_bytes) {
    Fail(std::move(done),
         absl::ResourceExhaustedError(fmt::format(
             "redis {} ({}): {} commands ({} bytes) in flight, the most "
             "allowed",
             options_.endpoint.ToString(), options_.name, deadlines_.size(),
             in_flight_bytes_)));
    return;
  }
  auto* pending = new Pending{shared_from_this(), std::move(done), bytes};
  if (redisAsyncCommandArgv(ctx_, &OnReply, pending,
                            static_cast<int>(args.size()), args.data(),
                            lens.data()) != REDIS_OK) {
    RedisCallback cb = std::move(pending->done);
    delete pending;
    Fail(std::move(cb), Down("the connection is closing"));
    return;
  }
  in_flight_bytes_ += bytes;
  deadlines_.push_back(absl::Now() + options_.reply_timeout + block);
  ArmWatchdog();
}

void RedisConnection::OnReply(redisAsyncContext* ac, void* reply,
                              void* privdata) {
  std::unique_ptr<Pending> pending(static_cast<Pending*>(privdata));
  RedisConnection& self = *pending->conn;
  if (!self.deadlines_.empty()) self.deadlines_.pop_front();
  self.in_flight_bytes_ -= std::min(self.in_flight_bytes_, pending->bytes);
  if (reply == nullptr) {
    // The context is being freed: the command may or may not have run.
    std::string why = self.state_ == State::kStopped ? "stopped"
                      : ac->errstr[0] != '\0'
                          ? fmt::format("connection lost ({})", ac->errstr)
                          : "connection lost";
    pending->done(self.Down(why));
    return;
  }
  const auto* r = static_cast<const redisReply*>(reply);
  if (r->type == REDIS_REPLY_ERROR) {
    pending->done(absl::InternalError(
        fmt::format("redis replied: {}", std::string_view(r->str, r->len))));
    return;
  }
  pending->done(ToValue(r));
}

void RedisConnection::OnConnect(const redisAsyncContext* ac, int status) {
  auto& self = *static_cast<RedisConnection*>(ac->data);
  if (status != REDIS_OK) {
    // hiredis frees the context after this returns (Cleanup first).
    self.ScheduleReconnect(ac->errstr[0] != '\0' ? ac->errstr
                                                 : "connect failed");
    return;
  }
  if (self.state_ != State::kConnecting) return;
  self.state_ = State::kConnected;
  if (self.failures_ > 0) {
    spdlog::info("redis {} ({}): connected after {} failed attempts",
                 self.options_.endpoint.ToString(), self.options_.name,
                 self.failures_);
  }
  self.failures_ = 0;
  self.SetUp(true);
}

void RedisConnection::OnDisconnect(const redisAsyncContext* ac, int status) {
  auto& self = *static_cast<RedisConnection*>(ac->data);
  std::string why = status == REDIS_OK      ? self.last_error_
                    : ac->errstr[0] != '\0' ? std::string(ac->errstr)
                                            : "connection lost";
  self.ctx_ = nullptr;
  self.SetUp(false);
  if (self.state_ == State::kStopped) return;
  self.failures_ = 0;  // It was up: the first retry comes soon.
  self.ScheduleReconnect(why);
}

absl::Time RedisConnection::NextDeadline() const {
  absl::Time next =
      deadlines_.empty() ? absl::InfiniteFuture() : deadlines_.front();
  if (state_ == State::kConnecting) next = std::min(next, connect_deadline_);
  return next;
}

void RedisConnection::ArmWatchdog() {
  if (watchdog_armed_ || ctx_ == nullptr ||
      NextDeadline() == absl::InfiniteFuture()) {
    return;
  }
  watchdog_armed_ = true;
  absl::Duration wait =
      std::max(absl::Milliseconds(1), NextDeadline() - absl::Now());
  watchdog_timer_.expires_after(ToChrono(wait));
  watchdog_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    self->watchdog_armed_ = false;
    if (ec) return;
    self->OnWatchdog();
  });
}

void RedisConnection::OnWatchdog() {
  if (ctx_ == nullptr || NextDeadline() == absl::InfiniteFuture()) return;
  if (NextDeadline() > absl::Now()) {
    ArmWatchdog();
    return;
  }
  const bool connecting = state_ == State::kConnecting;
  spdlog::warn("redis {} ({}): {} within {}; dropping the connection",
               options_.endpoint.ToString(), options_.name,
               connecting ? "not connected" : "no reply",
               absl::FormatDuration(options_.reply_timeout));
  redisAsyncContext* ac = ctx_;
  ctx_ = nullptr;
  // Fails what is in flight, cleans up; OnDisconnect (if it was up) or the
  // line below schedules the next attempt.
  last_error_ = connecting ? "connect timed out" : "reply timed out";
  redisAsyncFree(ac);
  if (connecting) ScheduleReconnect(last_error_);
}

// --- Event hooks: hiredis asks, Asio waits. --------------------------------

void RedisConnection::AddRead(void* data) {
  auto* w = static_cast<Watch*>(data);
  w->want_read = true;
  ArmRead(w->self.lock());
}

void RedisConnection::DelRead(void* data) {
  static_cast<Watch*>(data)->want_read = false;
}

void RedisConnection::AddWrite(void* data) {
  auto* w = static_cast<Watch*>(data);
  w->want_write = true;
  ArmWrite(w->self.lock());
}

void RedisConnection::DelWrite(void* data) {
  static_cast<Watch*>(data)->want_write = false;
}

void RedisConnection::Cleanup(void* data) {
  auto* w = static_cast<Watch*>(data);
  if (auto owner = w->owner.lock(); owner && owner->ctx_ == w->ac) {
    owner->ctx_ = nullptr;
  }
  w->ac = nullptr;
  w->want_read = w->want_write = false;
  // hiredis closes the fd itself: hand it back without closing it (this
  // also cancels the waits, whose handlers see `ac` null).
  std::error_code ignored;
  w->sd.cancel(ignored);
  (void)w->sd.release();
}

void RedisConnection::ArmRead(const std::shared_ptr<Watch>& w) {
  if (!w || w->ac == nullptr || !w->want_read || w->read_armed) return;
  w->read_armed = true;
  auto on_ready = [w](std::error_code ec) {
    w->read_armed = false;
    if (ec || w->ac == nullptr || !w->want_read) return;
    redisAsyncHandleRead(w->ac);  // May free the context (then ac is null).
    ArmRead(w);
  };
  if (ReadyNow(w->sd.native_handle(), POLLIN)) {
    asio::post(w->sd.get_executor(),
               [on_ready = std::move(on_ready)] { on_ready({}); });
  } else {
    w->sd.async_wait(asio::posix::descriptor_base::wait_read,
                     std::move(on_ready));
  }
}

void RedisConnection::ArmWrite(const std::shared_ptr<Watch>& w) {
  if (!w || w->ac == nullptr || !w->want_write || w->write_armed) return;
  w->write_armed = true;
  auto on_ready = [w](std::error_code ec) {
    w->write_armed = false;
    if (ec || w->ac == nullptr || !w->want_write) return;
    redisAsyncHandleWrite(w->ac);  // May free the context (then ac is null).
    ArmWrite(w);
  };
  if (ReadyNow(w->sd.native_handle(), POLLOUT)) {
    asio::post(w->sd.get_executor(),
               [on_ready = std::move(on_ready)] { on_ready({}); });
  } else {
    w->sd.async_wait(asio::posix::descriptor_base::wait_write,
                     std::move(on_ready));
  }
}

}  // namespace jobd::cluster
