#include "server/cluster/key_claims.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "asio/post.hpp"
#include "jobd/v1/jobd.pb.h"
#include "server/cluster/end_sink.h"
#include "server/cluster/work_stream.h"
#include "server/jobs/job_id.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd::cluster {
namespace {

// KEYS: the claim. ARGV: this job ("<node>:<id>:<create ns>"), the live
// TTL (ms). {1}: this job holds the key; {0, holder}: another job holds
// it, and this one waits for its end; {0, holder, end}: it ended.
constexpr char kClaimScript[] = R"lua(
local holder = redis.call('HGET', KEYS[1], 'job')
if not holder then
  redis.call('HSET', KEYS[1], 'job', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if holder == ARGV[1] then return {1} end
local e = redis.call('HGET', KEYS[1], 'end')
if e then return {0, holder, e} end
redis.call('HSET', KEYS[1], 'w:' .. ARGV[1], '1')
return {0, holder}
)lua";

// KEYS: the claim, the partition's results nodes. ARGV: the job that
// holds it, its end (a serialized v1::Job), the retention (ms), the
// partition's results stream prefix.
// Stores the end, sends it to each waiter's results stream (field "for":
// the waiter's "<id>:<create ns>"), and sets the claim to expire. 1: done;
// 0: the claim is not this job's (expired, or Redis lost it).
constexpr char kEndScript[] = R"lua(
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'end', ARGV[2])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'w:' then
    local w = string.sub(f, 3)
    local colon = string.find(w, ':', 1, true)
    if colon then
      local node = string.sub(w, 1, colon - 1)
      redis.call('XADD', ARGV[4] .. node, '*', 'for', string.sub(w, colon + 1),
                 'result', ARGV[2])
      redis.call('SADD', KEYS[2], node)
    end
    redis.call('HDEL', KEYS[1], f)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
)lua";

}  // namespace

KeyClaims::KeyClaims(asio::io_context& io,
                     std::shared_ptr<RedisConnection> commands,
                     const ClusterOptions& options, Scheduler& scheduler,
                     absl::Duration retention)
    : io_(io),
      commands_(std::move(commands)),
      options_(options),
      scheduler_(scheduler),
      retention_(retention),
      sink_(std::make_shared<EndSink>(io)),
      grace_timer_(io) {}

KeyClaims::~KeyClaims() = default;

std::string KeyClaims::ClaimKey(int partition, std::string_view owner,
                                std::string_view key) {
  return keys::Partition(
      partition, fmt::format("idem:{}:{}:{}", owner.size(), owner, key));
}

int KeyClaims::PartitionOf(std::string_view owner, std::string_view key) const {
  // Over the owner, a NUL and the key.
  const uint64_t h = keys::Fnv1a(
      key, keys::Fnv1a(std::string_view("\0", 1), keys::Fnv1a(owner)));
  return static_cast<int>(h % static_cast<uint64_t>(options_.partitions));
}

std::string KeyClaims::Me(uint64_t id, int64_t create_ns) const {
  return fmt::format("{}:{}:{}", options_.node_name, id, create_ns);
}

bool KeyClaims::Claiming() const {
  return !halted_.load(std::memory_order_relaxed) && commands_->connected();
}

std::shared_ptr<EventSink> KeyClaims::ClaimedEnds() { return sink_; }

void KeyClaims::Claim(KeyClaim claim) {
  {
    absl::MutexLock lock(&mu_);
    to_claim_.push_back(std::move(claim));
    if (to_claim_.size() > 1) return;  // A drain is posted already.
  }
  asio::post(io_, [self = weak_from_this()] {
    if (auto s = self.lock()) s->Drain();
  });
}

void KeyClaims::Start() {
  sink_->SetOnEnds([owner = weak_from_this()] {
    if (auto self = owner.lock()) self->OnEnds();
  });
  asio::post(io_, [self = shared_from_this()] {
    // Claims held at restore wait for Redis this long, then go on here.
    self->grace_timer_.expires_after(absl::ToChronoNanoseconds(
        std::max(kRestoreGrace, self->options_.node_ttl)));
    self->grace_timer_.async_wait([self](std::error_code ec) {
      if (ec) return;
      self->in_grace_ = false;
      std::deque<KeyClaim> waiting;
      waiting.swap(self->waiting_);
      for (KeyClaim& c : waiting) self->ClaimNow(std::move(c));
    });
  });
}

void KeyClaims::Stop() {
  if (halted_.exchange(true)) return;
  sink_->Detach();
  scheduler_.SetKeyClaims(nullptr);
  asio::post(io_, [self = shared_from_this()] { self->grace_timer_.cancel(); });
}

void KeyClaims::OnConnectionState(bool up) {
  if (!up || halted_) return;
  std::deque<KeyClaim> waiting;
  waiting.swap(waiting_);
  for (KeyClaim& c : waiting) ClaimNow(std::move(c));
  auto unrecorded = std::move(unrecorded_);
  unrecorded_.clear();
  for (auto& [id, end] : unrecorded) {
    if (auto it = won_.find(id); it != won_.end()) {
      RecordEnd(id, it->second, *end);
    }
  }
}

void KeyClaims::Drain() {
  std::deque<KeyClaim> claims;
  {
    absl::MutexLock lock(&mu_);
    claims.swap(to_claim_);
  }
  for (KeyClaim& claim : claims) {
    // Once its job's row is durable: a claim never names a job that a
    // crash could lose.
    const uint64_t ticket = claim.ticket;
    scheduler_.WhenDurable(
        ticket, [self = weak_from_this(),
                 claim = std::move(claim)](bool durable) mutable {
          auto s = self.lock();
          // Not durable: jobd is stopping; it is held again at the next
          // start.
          if (!durable || s == nullptr || s->halted_.load()) return;
          asio::post(s->io_, [s, claim = std::move(claim)]() mutable {
            s->ClaimNow(std::move(claim));
          });
        });
  }
}

void KeyClaims::GoLocal(const KeyClaim& claim) {
  spdlog::warn(
      "cluster: the idempotency key of job {} could not be claimed (Redis "
      "unreachable): it is unique on this node only",
      claim.id);
  (void)scheduler_.ClaimWon(claim.id, claim.create_ns);
}

void KeyClaims::ClaimNow(KeyClaim claim) {
  if (halted_) return;
  if (!commands_->connected()) {
    if (in_grace_) {
      waiting_.push_back(std::move(claim));
    } else {
      GoLocal(claim);
    }
    return;
  }
  const int partition = PartitionOf(claim.owner, claim.key);
  std::string key = ClaimKey(partition, claim.owner, claim.key);
  commands_->Command(
      {"EVAL", kClaimScript, "1", key, Me(claim.id, claim.create_ns),
       std::to_string(absl::ToInt64Milliseconds(kLiveTtl + retention_))},
      [self = shared_from_this(), claim = std::move(claim), partition,
       key](absl::StatusOr<RedisValue> r) mutable {
        if (self->halted_) return;
        if (!r.ok() || r->elements.empty() ||
            r->elements[0].type != RedisValue::Type::kInteger) {
          return self->GoLocal(claim);
        }
        if (r->elements[0].integer == 1) {
          Won& won = self->won_[claim.id];
          won.partition = partition;
          won.key = std::move(key);
          won.create_ns = claim.create_ns;
          if (std::shared_ptr<const JobEnd> end =
                  self->scheduler_.ClaimWon(claim.id, claim.create_ns)) {
            self->RecordEnd(claim.id, won, *end);  // Ended while held.
          }
          return;
        }
        // Another job holds the key: "<node>:<id>:<create ns>".
        uint64_t other = 0;
        const std::vector<std::string> holder =
            r->elements.size() > 1 ? absl::StrSplit(r->elements[1].str, ':')
                                   : std::vector<std::string>{};
        // The node's name goes into the duplicate's id on the wire: a
        // valid name only (ASCII, server/cluster/cluster_options.h).
        if (holder.size() != 3 || !absl::SimpleAtoi(holder[1], &other) ||
            !CheckNodeName(holder[0], "claim holder").ok()) {
          return self->GoLocal(claim);
        }
        std::shared_ptr<JobEnd> end;
        if (r->elements.size() > 2) {
          v1::Job job;
          if (job.ParseFromString(r->elements[2].str)) end = EndOfResult(job);
        }
        spdlog::debug("cluster: job {} is a duplicate of job {} of node {}",
                      claim.id, other, holder[0]);
        (void)self->scheduler_.ClaimLost(claim.id, claim.create_ns, other,
                                         holder[0], std::move(end));
      });
}

void KeyClaims::OnEnds() {
  for (EndSink::Item& item : sink_->Take()) {
    auto it = won_.find(item.tag);
    if (item.end == nullptr || it == won_.end()) continue;
    RecordEnd(item.tag, it->second, *item.end);
  }
}

void KeyClaims::RecordEnd(uint64_t id, const Won& won, const JobEnd& end) {
  if (halted_) return;
  v1::Job job;
  // Qualified ("42@node"): a mirror's node names its duplicate after it.
  job.set_id(FormatJobId(id));
  job.mutable_create_time()->set_seconds(won.create_ns / 1000000000);
  job.mutable_create_time()->set_nanos(
      static_cast<int32_t>(won.create_ns % 1000000000));
  job.set_state(end.state);
  SetEnd(end, &job);
  commands_->Command({"EVAL", kEndScript, "2", won.key,
                      WorkStream::ResultsNodesKey(won.partition),
                      Me(id, won.create_ns), job.SerializeAsString(),
                      std::to_string(std::max<int64_t>(
                          1, absl::ToInt64Milliseconds(retention_))),
                      keys::Partition(won.partition, "results:")},
                     [self = shared_from_this(), id,
                      end = std::make_shared<const JobEnd>(end)](
                         absl::StatusOr<RedisValue> r) {
                       if (r.ok()) {
                         self->won_.erase(id);
                         return;
                       }
                       // Redis down: recorded once it is back (the claim lives
                       // on).
                       self->unrecorded_.emplace_back(id, end);
                     });
}

}  // namespace jobd::cluster
