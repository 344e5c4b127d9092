#include "server/cluster/work_stream.h"

#include <utility>

#include "absl/strings/match.h"
#include "jobd/v1/jobd.pb.h"
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

// KEYS: jobs stream, marker. ARGV: marker TTL (ms), spec, origin, origin
// id, create ns, owner. The entry's id (the earlier one if the marker is
// there).
constexpr char kPublishScript[] = R"lua(
local prev = redis.call('GET', KEYS[2])
if prev then return prev end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2], 'origin', ARGV[3],
                      'origin_id', ARGV[4], 'create', ARGV[5], 'owner', ARGV[6])
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return id
)lua";

// KEYS: jobs stream, the origin's results stream, dead-letter stream, the
// partition's results nodes. ARGV: group, consumer, entry id, result, "1"
// to dead-letter the entry, the origin.
// 1: done; 0: not pending; -1: another consumer's (nothing written). The
// dead-letter stream is capped (nothing is pending there).
constexpr char kCompleteJobScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
if ARGV[5] == '1' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
  if #e > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'entry', ARGV[3],
               unpack(e[1][2]))
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[3], 'result', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[6])
return 1
)lua";

// KEYS: the partition's results nodes. ARGV: the age (ms), the results
// streams' prefix. Trims each node's stream to entries younger than the
// age by Redis's clock; deletes (and forgets) the streams left empty.
// The entries trimmed.
constexpr char kTrimResultsScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minid = string.format('%d', math.max(0, now - tonumber(ARGV[1])))
local trimmed = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. node
  trimmed = trimmed + redis.call('XTRIM', key, 'MINID', minid)
  if redis.call('XLEN', key) == 0 then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], node)
  end
end
return trimmed
)lua";

// KEYS: jobs stream. ARGV: group, consumer, entry id. 1: given back
// (appended again); 0: not pending; -1: another consumer's. A shared
// job's publication marker (MarkerKey, in the same slot: built here from
// the entry's fields) follows it to its new id: a withdrawal finds the
// entry by it (job_router.h).
constexpr char kReleaseScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if #e == 0 then return 1 end
local id = redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
local f = {}
for i = 1, #e[1][2], 2 do f[e[1][2][i]] = e[1][2][i + 1] end
if f['origin'] and f['origin_id'] and f['create'] then
  local marker = string.sub(KEYS[1], 1, -5) .. 'pub:' .. f['origin'] .. ':' ..
                 f['origin_id'] .. ':' .. f['create']
  if redis.call('GET', marker) == ARGV[3] then
    redis.call('SET', marker, id, 'KEEPTTL')
  end
end
return 1
)lua";

// KEYS: jobs stream. ARGV: group, consumer, min idle (ms), count.
// [[id, delivery count, [field, value, ...]], ...].
constexpr char kReclaimScript[] = R"lua(
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0',
                     'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  if e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local n = 0
    if #p > 0 then n = p[1][4] end
    out[#out + 1] = {e[1], n, e[2]}
  end
end
return out
)lua";

void ReadFields(const RedisValue& fields, StreamEntry& entry) {
  const auto& f = fields.elements;
  for (size_t i = 0; i + 1 < f.size(); i += 2) {
    const std::string& name = f[i].str;
    const std::string& value = f[i + 1].str;
    if (name == "job" || name == "result") {
      entry.payload = value;
    } else if (name == "origin") {
      entry.origin = value;
    } else if (name == "origin_id") {
      entry.origin_id = value;
    } else if (name == "create") {
      entry.create_ns = value;
    } else if (name == "owner") {
      entry.owner = value;
    } else if (name == "for") {
      entry.for_job = value;
    }
  }
}

// [[id, [field, value, ...]], ...] -> entries; deleted entries (nil
// fields) are skipped.
std::vector<StreamEntry> ToEntries(const RedisValue& list, int partition = -1) {
  std::vector<StreamEntry> out;
  for (const RedisValue& e : list.elements) {
    if (e.elements.size() != 2 ||
        e.elements[1].type != RedisValue::Type::kArray) {
      continue;
    }
    StreamEntry entry;
    entry.id = e.elements[0].str;
    entry.partition = partition;
    ReadFields(e.elements[1], entry);
    out.push_back(std::move(entry));
  }
  return out;
}

// XREAD/XREADGROUP over several streams: [[key, [entries]], ...] (nil:
// none) -> entries with their partition (`keys`' index in `partitions`).
std::vector<StreamEntry> ToMultiEntries(const RedisValue& r,
                                        const std::vector<std::string>& keys,
                                        const std::vector<int>& partitions) {
  std::vector<StreamEntry> out;
  for (const RedisValue& stream : r.elements) {
    if (stream.elements.size() != 2) continue;
    int partition = -1;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == stream.elements[0].str) partition = partitions[i];
    }
    if (partition < 0) continue;
    for (StreamEntry& e : ToEntries(stream.elements[1], partition)) {
      out.push_back(std::move(e));
    }
  }
  return out;
}

}  // namespace

std::shared_ptr<JobEnd> EndOfResult(v1::Job& job) {
  auto end = std::make_shared<JobEnd>();
  end->state = job.state();
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    end->mutable_result() = std::move(*job.mutable_result());
  } else {
    end->mutable_error() = std::move(*job.mutable_error());
  }
  return end;
}

WorkStream::WorkStream(std::shared_ptr<RedisConnection> commands,
                       std::shared_ptr<RedisConnection> blocking)
    : commands_(std::move(commands)), blocking_(std::move(blocking)) {}

std::string WorkStream::JobsKey(int partition) {
  return keys::Partition(partition, "jobs");
}

std::string WorkStream::ResultsKey(int partition) {
  return keys::Partition(partition, "results");
}

std::string WorkStream::ResultsKey(int partition, std::string_view origin) {
  return keys::Partition(partition, fmt::format("results:{}", origin));
}

std::string WorkStream::MarkerKey(int partition, std::string_view origin,
                                  uint64_t id, int64_t create_ns) {
  return keys::Partition(partition,
                         fmt::format("pub:{}:{}:{}", origin, id, create_ns));
}

std::string WorkStream::DeadLetterKey(int partition) {
  return keys::Partition(partition, "dead-letter");
}

std::string WorkStream::ResultsNodesKey(int partition) {
  return keys::Partition(partition, "results-nodes");
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

void WorkStream::PublishJob(int partition, const JobEntry& job,
                            absl::Duration marker_ttl, Done<std::string> done) {
  commands_->Command(
      {"EVAL", kPublishScript, "2", JobsKey(partition),
       MarkerKey(partition, job.origin, job.id, job.create_ns),
       std::to_string(absl::ToInt64Milliseconds(marker_ttl)), job.spec,
       job.origin, std::to_string(job.id), std::to_string(job.create_ns),
       job.owner},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        done(std::move(r->str));
      });
}

void WorkStream::TakeNow(int partition, std::string consumer, int count,
                         Done<std::vector<StreamEntry>> done) {
  commands_->Command(
      {"XREADGROUP", "GROUP", kGroup, std::move(consumer), "COUNT",
       std::to_string(count), "STREAMS", JobsKey(partition), ">"},
      [done = std::move(done),
       partition](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_nil() || r->elements.empty() ||
            r->elements[0].elements.size() != 2) {
          return done(std::vector<StreamEntry>{});
        }
        done(ToEntries(r->elements[0].elements[1], partition));
      });
}

void WorkStream::TakeAny(const std::vector<int>& partitions,
                         std::string consumer, int count, absl::Duration block,
                         Done<std::vector<StreamEntry>> done) {
  std::vector<std::string> argv = {
      "XREADGROUP", "GROUP",
      kGroup,       std::move(consumer),
      "COUNT",      std::to_string(count),
      "BLOCK",      std::to_string(absl::ToInt64Milliseconds(block)),
      "STREAMS"};
  std::vector<std::string> keys;
  for (int p : partitions) keys.push_back(JobsKey(p));
  argv.insert(argv.end(), keys.begin(), keys.end());
  for (size_t i = 0; i < partitions.size(); ++i) argv.push_back(">");
  blocking_->Command(
      std::move(argv),
      [done = std::move(done), keys = std::move(keys),
       partitions](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        done(ToMultiEntries(*r, keys, partitions));
      },
      block);
}

void WorkStream::ReclaimCounted(int partition, std::string consumer,
                                absl::Duration min_idle, int count,
                                Done<std::vector<StreamEntry>> done) {
  commands_->Command(
      {"EVAL", kReclaimScript, "1", JobsKey(partition), kGroup,
       std::move(consumer), std::to_string(absl::ToInt64Milliseconds(min_idle)),
       std::to_string(count)},
      [done = std::move(done),
       partition](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        std::vector<StreamEntry> out;
        for (const RedisValue& e : r->elements) {
          if (e.elements.size() != 3) continue;
          StreamEntry entry;
          entry.id = e.elements[0].str;
          entry.deliveries = e.elements[1].integer;
          entry.partition = partition;
          ReadFields(e.elements[2], entry);
          out.push_back(std::move(entry));
        }
        done(std::move(out));
      });
}

void WorkStream::Release(int partition, std::string consumer, std::string id,
                         Done<Fence> done) {
  commands_->Command(
      {"EVAL", kReleaseScript, "1", JobsKey(partition), kGroup,
       std::move(consumer), std::move(id)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

void WorkStream::CompleteJob(int partition, std::string consumer,
                             std::string id, std::string origin,
                             std::string result, bool dead_letter,
                             Done<Fence> done) {
  commands_->Command(
      {"EVAL", kCompleteJobScript, "4", JobsKey(partition),
       ResultsKey(partition, origin), DeadLetterKey(partition),
       ResultsNodesKey(partition), kGroup, std::move(consumer), std::move(id),
       std::move(result), dead_letter ? "1" : "0", origin},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

void WorkStream::ReadResults(RedisConnection& reader,
                             const std::vector<int>& partitions,
                             const std::string& origin,
                             const std::vector<std::string>& after, int count,
                             absl::Duration block,
                             Done<std::vector<StreamEntry>> done) {
  std::vector<std::string> argv = {
      "XREAD",
      "COUNT",
      std::to_string(count),
      "BLOCK",
      std::to_string(absl::ToInt64Milliseconds(block)),
      "STREAMS"};
  std::vector<std::string> keys;
  for (int p : partitions) keys.push_back(ResultsKey(p, origin));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), after.begin(), after.end());
  reader.Command(
      std::move(argv),
      [done = std::move(done), keys = std::move(keys),
       partitions](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        done(ToMultiEntries(*r, keys, partitions));
      },
      block);
}

void WorkStream::TrimResults(int partition, absl::Duration ttl,
                             Done<int64_t> done) {
  commands_->Command(
      {"EVAL", kTrimResultsScript, "1", ResultsNodesKey(partition),
       std::to_string(absl::ToInt64Milliseconds(ttl)),
       keys::Partition(partition, "results:")},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        done(r->integer);
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
