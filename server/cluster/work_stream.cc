#include "server/cluster/work_stream.h"

#include <utility>

#include "absl/strings/match.h"
#include "server/cluster/cluster_options.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::cluster {
namespace {

// KEYS: jobs stream. ARGV: group, consumer, entry id. 1: renewed; 0: not
// pending; -1: another consumer's.
constexpr char kRenewScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
)lua";

// KEYS: jobs stream, results stream. ARGV: group, consumer, entry id,
// result. 1: acknowledged and result appended; 0: not pending; -1: another
// consumer's (nothing written).
constexpr char kCompleteScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[3], 'result', ARGV[4])
return 1
)lua";

absl::StatusOr<Fence> ToFence(absl::StatusOr<RedisValue> r) {
  if (!r.ok()) return r.status();
  if (r->type != RedisValue::Type::kInteger) {
    return absl::InternalError(
        fmt::format("redis: unexpected fence reply {}", r->DebugString()));
  }
  switch (r->integer) {
    case 1:
      return Fence::kDone;
    case 0:
      return Fence::kNotPending;
    default:
      return Fence::kOwnedByAnother;
  }
}

// [[id, [field, value, ...]], ...] -> entries (the "job" field); deleted
// entries (nil fields) are skipped.
std::vector<StreamEntry> ToEntries(const RedisValue& list) {
  std::vector<StreamEntry> out;
  for (const RedisValue& e : list.elements) {
    if (e.elements.size() != 2 ||
        e.elements[1].type != RedisValue::Type::kArray) {
      continue;
    }
    StreamEntry entry;
    entry.id = e.elements[0].str;
    const auto& fields = e.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "job") entry.payload = fields[i + 1].str;
    }
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

WorkStream::WorkStream(std::shared_ptr<RedisConnection> commands,
                       std::shared_ptr<RedisConnection> blocking)
    : commands_(std::move(commands)), blocking_(std::move(blocking)) {}

std::string WorkStream::JobsKey(int partition) {
  return keys::Partition(partition, "jobs");
}

std::string WorkStream::ResultsKey(int partition) {
  return keys::Partition(partition, "results");
}

std::string WorkStream::Consumer(std::string_view node, uint64_t epoch) {
  return fmt::format("{}:{}", node, epoch);
}

void WorkStream::EnsureGroup(int partition, Done<bool> done) {
  commands_->Command(
      {"XGROUP", "CREATE", JobsKey(partition), kGroup, "0", "MKSTREAM"},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (r.ok()) return done(true);
        if (absl::StrContains(r.status().message(), "BUSYGROUP")) {
          return done(false);  // It was there.
        }
        done(r.status());
      });
}

void WorkStream::Publish(int partition, std::string payload,
                         Done<std::string> done) {
  commands_->Command(
      {"XADD", JobsKey(partition), "*", "job", std::move(payload)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        done(std::move(r->str));
      });
}

void WorkStream::Take(int partition, std::string consumer, int count,
                      absl::Duration block,
                      Done<std::vector<StreamEntry>> done) {
  blocking_->Command(
      {"XREADGROUP", "GROUP", kGroup, std::move(consumer), "COUNT",
       std::to_string(count), "BLOCK",
       std::to_string(absl::ToInt64Milliseconds(block)), "STREAMS",
       JobsKey(partition), ">"},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        // nil (timed out) or [[key, [entries]]].
        if (r->is_nil() || r->elements.empty() ||
            r->elements[0].elements.size() != 2) {
          return done(std::vector<StreamEntry>{});
        }
        done(ToEntries(r->elements[0].elements[1]));
      },
      block);
}

void WorkStream::Reclaim(int partition, std::string consumer,
                         absl::Duration min_idle, int count,
                         Done<std::vector<StreamEntry>> done) {
  commands_->Command(
      {"XAUTOCLAIM", JobsKey(partition), kGroup, std::move(consumer),
       std::to_string(absl::ToInt64Milliseconds(min_idle)), "0-0", "COUNT",
       std::to_string(count)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        // [next cursor, [entries], [deleted ids]].
        if (r->elements.size() < 2) return done(std::vector<StreamEntry>{});
        done(ToEntries(r->elements[1]));
      });
}

void WorkStream::Renew(int partition, std::string consumer, std::string id,
                       Done<Fence> done) {
  commands_->Command(
      {"EVAL", kRenewScript, "1", JobsKey(partition), kGroup,
       std::move(consumer), std::move(id)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

void WorkStream::Complete(int partition, std::string consumer, std::string id,
                          std::string result, Done<Fence> done) {
  commands_->Command(
      {"EVAL", kCompleteScript, "2", JobsKey(partition), ResultsKey(partition),
       kGroup, std::move(consumer), std::move(id), std::move(result)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

}  // namespace jobd::cluster
