#include "server/cluster/membership.h"

#include <algorithm>
#include <utility>

#include "asio/post.hpp"
#include "spdlog/spdlog.h"

namespace jobd::cluster {
namespace {

// KEYS: epoch counter, registry, this node's lease, dead list.
// ARGV: node name, lease TTL in ms. Returns the new epoch: the counter's
// next value, but never below Redis's clock in ms, so that epochs keep
// growing even when Redis lost its data (restarted without persistence).
constexpr char kJoinScript[] = R"lua(
local epoch = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if epoch < now then
  epoch = now
  redis.call('SET', KEYS[1], string.format('%.0f', epoch))
end
epoch = string.format('%.0f', epoch)
redis.call('SET', KEYS[3], epoch, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], epoch)
redis.call('HDEL', KEYS[4], ARGV[1])
return tonumber(epoch)
)lua";

// KEYS: this node's lease. ARGV: its epoch, the TTL in ms. 1: renewed; 0:
// the lease is gone or another incarnation's.
constexpr char kHeartbeatScript[] = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
)lua";

// KEYS: registry, dead list. ARGV: lease key prefix, forget-after in ms.
// Returns {now_ms, {name, epoch, pttl_ms, dead_since_ms, newly_dead}...}.
// A lease key is {jobd}:node:<name>, in the registry's slot.
constexpr char kReapScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reg = redis.call('HGETALL', KEYS[1])
local out = {now}
for i = 1, #reg, 2 do
  local name, epoch = reg[i], reg[i + 1]
  local pttl = redis.call('PTTL', ARGV[1] .. name)
  local since, newly = 0, 0
  if pttl == -2 then
    local d = redis.call('HGET', KEYS[2], name)
    if d then
      since = tonumber(string.match(d, ':(%d+)$')) or now
    else
      since = now
      newly = 1
      redis.call('HSET', KEYS[2], name, epoch .. ':' .. now)
    end
    if now - since > tonumber(ARGV[2]) then
      redis.call('HDEL', KEYS[1], name)
      redis.call('HDEL', KEYS[2], name)
    end
  end
  out[#out + 1] = {name, tonumber(epoch) or 0, pttl, since, newly}
end
return out
)lua";

std::string Ms(absl::Duration d) {
  return std::to_string(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

}  // namespace

std::shared_ptr<Membership> Membership::Create(
    asio::io_context& io, std::shared_ptr<RedisConnection> redis,
    const ClusterOptions& options) {
  return std::shared_ptr<Membership>(
      new Membership(io, std::move(redis), options));
}

Membership::Membership(asio::io_context& io,
                       std::shared_ptr<RedisConnection> redis,
                       const ClusterOptions& options)
    : io_(io),
      redis_(std::move(redis)),
      options_(options),
      heartbeat_timer_(io),
      reaper_timer_(io) {}

void Membership::Start() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->stopped_ || self->started_) return;
    self->started_ = true;
    self->Join();  // Queued until the connection is up, or fails fast.
    self->ArmReaper(self->options_.reaper_period);
  });
}

void Membership::Stop() {
  asio::post(io_, [self = shared_from_this()] {
    self->stopped_ = true;
    self->heartbeat_timer_.cancel();
    self->reaper_timer_.cancel();
  });
}

void Membership::OnConnectionState(bool up) {
  {
    absl::MutexLock lock(&mu_);
    snapshot_.redis_connected = up;
    if (up && ever_up_) ++snapshot_.redis_reconnects;
  }
  if (!up || stopped_) return;
  ever_up_ = true;
  if (!started_) return;  // Start joins.
  // Renew (or join) at once: the lease may be close to expiring.
  ArmHeartbeat(absl::ZeroDuration());
  ArmReaper(absl::ZeroDuration());
}

void Membership::ArmHeartbeat(absl::Duration after) {
  if (stopped_) return;
  heartbeat_timer_.expires_after(absl::ToChronoNanoseconds(after));
  heartbeat_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (ec || self->stopped_) return;
    self->Beat();
  });
}

void Membership::ArmReaper(absl::Duration after) {
  if (stopped_) return;
  reaper_timer_.expires_after(absl::ToChronoNanoseconds(after));
  reaper_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (ec || self->stopped_) return;
    self->Reap();
  });
}

void Membership::Join() {
  if (joining_ || stopped_) return;
  joining_ = true;
  redis_->Command(
      {"EVAL", kJoinScript, "4", keys::Epoch(), keys::Nodes(),
       keys::Node(options_.node_name), keys::Dead(), options_.node_name,
       Ms(options_.node_ttl)},
      [self = shared_from_this()](absl::StatusOr<RedisValue> r) {
        self->joining_ = false;
        if (self->stopped_) return;
        if (!r.ok() || r->type != RedisValue::Type::kInteger) {
          if (self->redis_->connected()) {
            spdlog::warn("cluster: node '{}' could not join: {}",
                         self->options_.node_name,
                         r.ok() ? r->DebugString() : r.status().ToString());
          }
          // Down: the connection's listener re-arms the heartbeat.
          if (self->redis_->connected()) {
            self->ArmHeartbeat(self->options_.heartbeat);
          }
          return;
        }
        const auto epoch = static_cast<uint64_t>(r->integer);
        spdlog::info("cluster: node '{}' joined with epoch {}",
                     self->options_.node_name, epoch);
        self->epoch_io_ = epoch;
        {
          absl::MutexLock lock(&self->mu_);
          self->snapshot_.epoch = epoch;
        }
        self->ArmHeartbeat(self->options_.heartbeat);
        self->ArmReaper(absl::ZeroDuration());  // Show itself at once.
      });
}

void Membership::Beat() {
  if (epoch_io_ == 0) {
    Join();
    return;
  }
  const uint64_t epoch = epoch_io_;
  redis_->Command(
      {"EVAL", kHeartbeatScript, "1", keys::Node(options_.node_name),
       std::to_string(epoch), Ms(options_.node_ttl)},
      [self = shared_from_this(), epoch](absl::StatusOr<RedisValue> r) {
        if (self->stopped_) return;
        if (!r.ok()) {
          // Down: the listener renews at once when it is back; else retry
          // at the next beat.
          if (self->redis_->connected()) {
            self->ArmHeartbeat(self->options_.heartbeat);
          }
          return;
        }
        if (r->type == RedisValue::Type::kInteger && r->integer == 1) {
          self->ArmHeartbeat(self->options_.heartbeat);
          return;
        }
        if (self->epoch_io_ != epoch) return;  // Joined again meanwhile.
        spdlog::warn(
            "cluster: node '{}' lost its lease (epoch {}): it expired or "
            "another incarnation holds it; joining again",
            self->options_.node_name, epoch);
        self->epoch_io_ = 0;
        {
          absl::MutexLock lock(&self->mu_);
          ++self->snapshot_.lease_losses;
          self->snapshot_.epoch = 0;
        }
        self->Join();
      });
}

void Membership::Reap() {
  redis_->Command(
      {"EVAL", kReapScript, "2", keys::Nodes(), keys::Dead(),
       keys::NodePrefix(), Ms(kForgetDeadAfter)},
      [self = shared_from_this()](absl::StatusOr<RedisValue> r) {
        if (self->stopped_) return;
        self->ArmReaper(self->options_.reaper_period);
        if (!r.ok()) return;  // Keep the last view; redis_connected says.
        if (r->type != RedisValue::Type::kArray || r->elements.empty()) {
          spdlog::warn("cluster: the reaper got {}", r->DebugString());
          return;
        }
        const absl::Time now = absl::FromUnixMillis(r->elements[0].integer);
        std::vector<NodeView> nodes;
        uint64_t declared = 0;
        for (size_t i = 1; i < r->elements.size(); ++i) {
          const RedisValue& e = r->elements[i];
          if (e.type != RedisValue::Type::kArray || e.elements.size() != 5) {
            continue;
          }
          NodeView n;
          n.name = e.elements[0].str;
          n.epoch = static_cast<uint64_t>(
              std::max<int64_t>(0, e.elements[1].integer));
          const int64_t pttl = e.elements[2].integer;
          n.alive = pttl != -2;
          if (n.alive) {
            n.lease_left =
                pttl >= 0 ? absl::Milliseconds(pttl) : absl::InfiniteDuration();
          } else {
            n.dead_since = absl::FromUnixMillis(e.elements[3].integer);
            if (e.elements[4].integer == 1) {
              ++declared;
              spdlog::warn(
                  "cluster: node '{}' (epoch {}) is dead: its lease expired "
                  "(found by '{}')",
                  n.name, n.epoch, self->options_.node_name);
            }
          }
          n.self = n.name == self->options_.node_name;
          nodes.push_back(std::move(n));
        }
        std::sort(nodes.begin(), nodes.end(),
                  [](const NodeView& a, const NodeView& b) {
                    return a.name < b.name;
                  });
        if (nodes.size() > kMaxNodesShown) nodes.resize(kMaxNodesShown);
        absl::MutexLock lock(&self->mu_);
        self->snapshot_.nodes = std::move(nodes);
        self->snapshot_.last_reap = now;
        self->snapshot_.nodes_declared_dead += declared;
      });
}

MembershipSnapshot Membership::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

}  // namespace jobd::cluster
