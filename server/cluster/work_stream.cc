#include "server/cluster/work_stream.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "jobd/v1/jobd.pb.h"
#include "server/cluster/cluster_options.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::cluster {
namespace {

// The scripts' shared part. repack(stream, prefix, old, fields, skip):
// appends the jobs of entry `old` (its `fields`) not in `skip` (a set of
// indexes, as strings) to `stream` as a new entry, and moves their
// markers (those still naming `old`) to it; the new id, or false if no
// job is left. `prefix`: the partition's key prefix ("{jobd:pN}:").
constexpr char kRepackLua[] = R"lua(
local function repack(stream, prefix, old, fields, skip)
  local f = {}
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  if not f['origin'] then return false end
  local out, markers, n = {}, {}, 0
  for k = 0, (tonumber(f['n']) or 0) - 1 do
    local key = tostring(k)
    if not skip[key] and f['job.' .. key] then
      for _, name in ipairs({'job.', 'id.', 'create.', 'owner.'}) do
        out[#out + 1] = name .. n
        out[#out + 1] = f[name .. key] or ''
      end
      markers[#markers + 1] = prefix .. 'pub:' .. f['origin'] .. ':' ..
                              (f['id.' .. key] or '') .. ':' ..
                              (f['create.' .. key] or '')
      n = n + 1
    end
  end
  if n == 0 then return false end
  local id = redis.call('XADD', stream, '*', 'origin', f['origin'], 'n', n,
                        unpack(out))
  for _, m in ipairs(markers) do
    if redis.call('GET', m) == old then
      redis.call('SET', m, id, 'KEEPTTL')
    end
  end
  return id
end
)lua";

// KEYS: jobs stream, the entry's done set. ARGV: group, consumer, entry
// id. {1, [index withdrawn, ...]}: renewed; {0}: not pending; {-1}:
// another consumer's.
constexpr char kRenewScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return {0} end
if p[1][2] ~= ARGV[2] then return {-1} end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
local w = {}
local d = redis.call('HGETALL', KEYS[2])
for i = 1, #d, 2 do
  if d[i + 1] == 'w' then w[#w + 1] = d[i] end
end
return {1, w}
)lua";

// KEYS: jobs stream, then each job's marker. ARGV: marker TTL (ms),
// origin, then per job: spec, id, create ns, owner. The new entry's id,
// or "" (every job's marker was there). A job given twice is packed once.
constexpr char kPublishScript[] = R"lua(
local jobs, fresh, seen = {}, {}, {}
for i = 2, #KEYS do
  if not seen[KEYS[i]] and not redis.call('GET', KEYS[i]) then
    seen[KEYS[i]] = true
    local b = 2 + (i - 2) * 4
    local k = #fresh
    jobs[#jobs + 1] = 'job.' .. k
    jobs[#jobs + 1] = ARGV[b + 1]
    jobs[#jobs + 1] = 'id.' .. k
    jobs[#jobs + 1] = ARGV[b + 2]
    jobs[#jobs + 1] = 'create.' .. k
    jobs[#jobs + 1] = ARGV[b + 3]
    jobs[#jobs + 1] = 'owner.' .. k
    jobs[#jobs + 1] = ARGV[b + 4]
    fresh[#fresh + 1] = KEYS[i]
  end
end
if #fresh == 0 then return '' end
local id = redis.call('XADD', KEYS[1], '*', 'origin', ARGV[2], 'n', #fresh,
                      unpack(jobs))
for _, m in ipairs(fresh) do redis.call('SET', m, id, 'PX', ARGV[1]) end
return id
)lua";

// KEYS: jobs stream, dead-letter stream, the partition's results nodes.
// ARGV: group, consumer, the partition's key prefix, then per job: entry
// id, index, the entry's job count, origin, result, "1" to dead-letter.
// Per job, 1: done; 0: not pending; -1: another consumer's (nothing
// written). The dead-letter stream is capped (nothing is pending there).
constexpr char kCompleteJobsScript[] = R"lua(
local out = {}
for i = 4, #ARGV, 6 do
  local entry, k, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) or 1
  local origin = ARGV[i + 3]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
  if #p == 0 then
    out[#out + 1] = 0
  elseif p[1][2] ~= ARGV[2] then
    out[#out + 1] = -1
  else
    if ARGV[i + 5] == '1' then
      local e = redis.call('XRANGE', KEYS[1], entry, entry)
      local letter = {'entry', entry, 'index', k}
      if #e > 0 then
        local f = e[1][2]
        for j = 1, #f, 2 do
          if f[j] == 'origin' or string.sub(f[j], -(#k + 1)) == '.' .. k then
            letter[#letter + 1] = f[j]
            letter[#letter + 1] = f[j + 1]
          end
        end
      end
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', unpack(letter))
    end
    local done = ARGV[3] .. 'done:' .. entry
    local finished = n <= 1
    if not finished then
      redis.call('HSET', done, k, '1')
      finished = redis.call('HLEN', done) >= n
    end
    if finished then
      redis.call('XACK', KEYS[1], ARGV[1], entry)
      redis.call('XDEL', KEYS[1], entry)
      redis.call('DEL', done, ARGV[3] .. 'begun:' .. entry)
    end
    redis.call('XADD', ARGV[3] .. 'results:' .. origin, '*', 'entry', entry,
               'by', ARGV[2], 'result', ARGV[i + 4])
    redis.call('SADD', KEYS[3], origin)
    out[#out + 1] = 1
  end
end
return out
)lua";

// KEYS: the partition's results nodes. ARGV: the age (ms), the results
// streams' prefix. Trims each node's stream to entries younger than the
// age by Redis's clock; deletes (and forgets) the streams left empty
// whose last entry is older than that too. (Not one written to lately,
// though its node read it empty: created again, its next ids would start
// over within the current millisecond, at or below its reader's cursor,
// and the reader would skip them.) The entries trimmed.
constexpr char kTrimResultsScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = math.max(0, now - tonumber(ARGV[1]))
local minid = string.format('%d', oldest)
local trimmed = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. node
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], node)  -- Gone (deleted by hand, evicted).
  else
    trimmed = trimmed + redis.call('XTRIM', key, 'MINID', minid)
    if redis.call('XLEN', key) == 0 then
      local info = redis.call('XINFO', 'STREAM', key)
      local last = 0
      for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then
          last = tonumber(string.match(info[i + 1], '^(%d+)')) or 0
        end
      end
      if last < oldest then
        redis.call('DEL', key)
        redis.call('SREM', KEYS[1], node)
      end
    end
  end
end
return trimmed
)lua";

// (After kRepackLua.) KEYS: jobs stream. ARGV: group, consumer, entry
// id, the partition's key prefix, then the indexes of the jobs to give
// back. Those not done are appended again as a new entry and marked 'g'
// in the entry's done set; once every job of the entry is done or given
// back, it is acknowledged and deleted. 1: given back; 0: not pending;
// -1: another consumer's.
constexpr char kReleaseBody[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local done = ARGV[4] .. 'done:' .. ARGV[3]
local finished = #e == 0
if not finished then
  local fields = e[1][2]
  local n = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then n = tonumber(fields[i + 1]) or 0 end
  end
  local skip = {}
  for k = 0, n - 1 do skip[tostring(k)] = true end
  for i = 5, #ARGV do skip[ARGV[i]] = nil end
  for _, k in ipairs(redis.call('HKEYS', done)) do skip[k] = true end
  repack(KEYS[1], ARGV[4], ARGV[3], fields, skip)
  for i = 5, #ARGV do redis.call('HSETNX', done, ARGV[i], 'g') end
  finished = redis.call('HLEN', done) >= n
end
if finished then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
  redis.call('DEL', done, ARGV[4] .. 'begun:' .. ARGV[3])
end
return 1
)lua";

// KEYS: jobs stream. ARGV: group, consumer, entry id, the partition's key
// prefix, then the indexes of the jobs about to begin. Adds them to the
// entry's begun set if the caller owns it. 1: marked; 0: not pending;
// -1: another consumer's.
constexpr char kMarkBegunScript[] = R"lua(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[2] then return -1 end
redis.call('SADD', ARGV[4] .. 'begun:' .. ARGV[3], unpack(ARGV, 5))
return 1
)lua";

// (After kRepackLua.) KEYS: the job's marker, its partition's jobs
// stream. ARGV: group, marker TTL (ms), the partition's key prefix, the
// job's id, its create ns. {0}: not published (the marker now keeps a
// late publication from appending); {1, entry}: removed before any node
// took it (or ended already); {2, entry, consumer, index}: held by that
// consumer, marked withdrawn in the entry's done set.
constexpr char kWithdrawBody[] = R"lua(
local entry = redis.call('GET', KEYS[1])
if not entry then
  redis.call('SET', KEYS[1], '0-0', 'PX', ARGV[2])
  return {0}
end
if entry == '0-0' then return {0} end
local e = redis.call('XRANGE', KEYS[2], entry, entry)
if #e == 0 then return {1, entry} end
local fields = e[1][2]
local f = {}
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
local k = nil
for j = 0, (tonumber(f['n']) or 0) - 1 do
  if f['id.' .. j] == ARGV[4] and f['create.' .. j] == ARGV[5] then
    k = tostring(j)
  end
end
if not k then return {1, entry} end
local p = redis.call('XPENDING', KEYS[2], ARGV[1], entry, entry, 1)
if #p == 0 then
  redis.call('XDEL', KEYS[2], entry)
  repack(KEYS[2], ARGV[3], entry, fields, {[k] = true})
  return {1, entry}
end
redis.call('HSET', ARGV[3] .. 'done:' .. entry, k, 'w')
return {2, entry, p[1][2], k}
)lua";

// KEYS: jobs stream. ARGV: group, consumer, min idle (ms), count, the
// partition's key prefix, the cursor to start at. {next cursor, [[id,
// delivery count, [field, value, ...], [done index, ...], [begun index,
// ...]], ...]}; an entry whose jobs are all done is acknowledged and
// deleted instead.
constexpr char kReclaimScript[] = R"lua(
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3],
                     ARGV[6], 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  if e[2] then
    local done = ARGV[5] .. 'done:' .. e[1]
    local skip = redis.call('HKEYS', done)
    local n = 0
    for i = 1, #e[2], 2 do
      if e[2][i] == 'n' then n = tonumber(e[2][i + 1]) or 0 end
    end
    local begun = ARGV[5] .. 'begun:' .. e[1]
    if n > 0 and #skip >= n then
      redis.call('XACK', KEYS[1], ARGV[1], e[1])
      redis.call('XDEL', KEYS[1], e[1])
      redis.call('DEL', done, begun)
    else
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
      local c = 0
      if #p > 0 then c = p[1][4] end
      out[#out + 1] = {e[1], c, e[2], skip, redis.call('SMEMBERS', begun)}
    end
  end
end
return {r[1], out}
)lua";

absl::StatusOr<Fence> ToFence(const RedisValue& r) {
  if (r.type != RedisValue::Type::kInteger) {
    return absl::InternalError(
        fmt::format("redis: unexpected fence reply {}", r.DebugString()));
  }
  switch (r.integer) {
    case 1:
      return Fence::kDone;
    case 0:
      return Fence::kNotPending;
    default:
      return Fence::kOwnedByAnother;
  }
}

absl::StatusOr<Fence> ToFence(absl::StatusOr<RedisValue> r) {
  if (!r.ok()) return r.status();
  return ToFence(*r);
}

// The partition's key prefix, "{jobd:pN}:".
std::string Prefix(int partition) { return keys::Partition(partition, ""); }

// A job entry packs at most this many jobs (a bound on what a read may
// allocate from a malformed "n").
constexpr int kMaxReadPack = 100000;

void ReadFields(const RedisValue& fields, StreamEntry& entry) {
  const auto& f = fields.elements;
  for (size_t i = 0; i + 1 < f.size(); i += 2) {
    const std::string& name = f[i].str;
    const std::string& value = f[i + 1].str;
    if (name == "result") {
      entry.payload = value;
    } else if (name == "origin") {
      entry.origin = value;
    } else if (name == "n") {
      if (!absl::SimpleAtoi(value, &entry.count) || entry.count < 0 ||
          entry.count > kMaxReadPack) {
        entry.count = 0;
      }
    } else if (name == "for") {
      entry.for_job = value;
    } else if (name == "by") {
      entry.by = value;
    }
  }
  if (entry.count == 0) return;
  entry.jobs.resize(static_cast<size_t>(entry.count));
  for (int k = 0; k < entry.count; ++k) entry.jobs[k].index = k;
  for (size_t i = 0; i + 1 < f.size(); i += 2) {
    const std::string& name = f[i].str;
    const size_t dot = name.find('.');
    int k = -1;
    if (dot == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(name).substr(dot + 1), &k) ||
        k < 0 || k >= entry.count) {
      continue;
    }
    PackedJob& job = entry.jobs[static_cast<size_t>(k)];
    const std::string_view field = std::string_view(name).substr(0, dot);
    std::string value = f[i + 1].str;
    if (field == "job") {
      job.spec = std::move(value);
    } else if (field == "id") {
      job.id = std::move(value);
    } else if (field == "create") {
      job.create_ns = std::move(value);
    } else if (field == "owner") {
      job.owner = std::move(value);
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

std::string WorkStream::ResultsKey(int partition, std::string_view origin) {
  return keys::Partition(partition, fmt::format("results:{}", origin));
}

std::string WorkStream::MarkerKey(int partition, std::string_view origin,
                                  uint64_t id, int64_t create_ns) {
  return keys::Partition(partition,
                         fmt::format("pub:{}:{}:{}", origin, id, create_ns));
}

std::string WorkStream::DoneKey(int partition, std::string_view entry) {
  return keys::Partition(partition, fmt::format("done:{}", entry));
}

std::string WorkStream::BegunKey(int partition, std::string_view entry) {
  return keys::Partition(partition, fmt::format("begun:{}", entry));
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

void WorkStream::PublishJobs(int partition, const std::vector<JobEntry>& jobs,
                             absl::Duration marker_ttl,
                             Done<std::string> done) {
  if (jobs.empty()) return done(std::string());
  std::vector<std::string> argv = {"EVAL", kPublishScript,
                                   std::to_string(1 + jobs.size()),
                                   JobsKey(partition)};
  argv.reserve(argv.size() + 5 * jobs.size() + 2);
  for (const JobEntry& job : jobs) {
    argv.push_back(MarkerKey(partition, job.origin, job.id, job.create_ns));
  }
  argv.push_back(std::to_string(absl::ToInt64Milliseconds(marker_ttl)));
  argv.push_back(jobs.front().origin);
  for (const JobEntry& job : jobs) {
    argv.push_back(job.spec);
    argv.push_back(std::to_string(job.id));
    argv.push_back(std::to_string(job.create_ns));
    argv.push_back(job.owner);
  }
  commands_->Command(
      std::move(argv),
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
                                std::string cursor, Done<Reclaimed> done) {
  commands_->Command(
      {"EVAL", kReclaimScript, "1", JobsKey(partition), kGroup,
       std::move(consumer), std::to_string(absl::ToInt64Milliseconds(min_idle)),
       std::to_string(count), Prefix(partition), std::move(cursor)},
      [done = std::move(done),
       partition](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->type != RedisValue::Type::kArray || r->elements.size() != 2) {
          return done(absl::InternalError(fmt::format(
              "redis: unexpected reclaim reply {}", r->DebugString())));
        }
        Reclaimed out;
        out.next = r->elements[0].str;
        for (const RedisValue& e : r->elements[1].elements) {
          if (e.elements.size() != 5) continue;
          StreamEntry entry;
          entry.id = e.elements[0].str;
          entry.deliveries = e.elements[1].integer;
          entry.partition = partition;
          ReadFields(e.elements[2], entry);
          // Its jobs done (or withdrawn) before are not run again.
          absl::flat_hash_set<int> done_jobs;
          for (const RedisValue& k : e.elements[3].elements) {
            int index = 0;
            if (absl::SimpleAtoi(k.str, &index)) done_jobs.insert(index);
          }
          std::erase_if(entry.jobs, [&](const PackedJob& job) {
            return done_jobs.contains(job.index);
          });
          for (const RedisValue& k : e.elements[4].elements) {
            int index = 0;
            if (absl::SimpleAtoi(k.str, &index)) entry.begun.push_back(index);
          }
          out.entries.push_back(std::move(entry));
        }
        done(std::move(out));
      });
}

void WorkStream::Release(int partition, std::string consumer, std::string id,
                         const std::vector<int>& indexes, Done<Fence> done) {
  static const std::string script = std::string(kRepackLua) + kReleaseBody;
  std::vector<std::string> argv = {"EVAL",        script,
                                   "1",           JobsKey(partition),
                                   kGroup,        std::move(consumer),
                                   std::move(id), Prefix(partition)};
  for (int index : indexes) argv.push_back(std::to_string(index));
  commands_->Command(
      std::move(argv),
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

void WorkStream::MarkBegun(int partition, std::string consumer, std::string id,
                           const std::vector<int>& indexes, Done<Fence> done) {
  std::vector<std::string> argv = {
      "EVAL", kMarkBegunScript,    "1",           JobsKey(partition),
      kGroup, std::move(consumer), std::move(id), Prefix(partition)};
  for (int index : indexes) argv.push_back(std::to_string(index));
  commands_->Command(
      std::move(argv),
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        done(ToFence(std::move(r)));
      });
}

void WorkStream::CompleteJobs(int partition, std::string consumer,
                              const std::vector<Completion>& jobs,
                              Done<std::vector<Fence>> done) {
  if (jobs.empty()) return done(std::vector<Fence>{});
  std::vector<std::string> argv = {"EVAL",
                                   kCompleteJobsScript,
                                   "3",
                                   JobsKey(partition),
                                   DeadLetterKey(partition),
                                   ResultsNodesKey(partition),
                                   kGroup,
                                   std::move(consumer),
                                   Prefix(partition)};
  argv.reserve(argv.size() + 6 * jobs.size());
  for (const Completion& c : jobs) {
    argv.push_back(c.entry);
    argv.push_back(std::to_string(c.index));
    argv.push_back(std::to_string(c.count));
    argv.push_back(c.origin);
    argv.push_back(c.result);
    argv.push_back(c.dead_letter ? "1" : "0");
  }
  commands_->Command(
      std::move(argv), [done = std::move(done),
                        n = jobs.size()](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->elements.size() != n) {
          return done(absl::InternalError(
              fmt::format("redis: {} answers to {} completions: {}",
                          r->elements.size(), n, r->DebugString())));
        }
        std::vector<Fence> out;
        out.reserve(n);
        for (const RedisValue& v : r->elements) {
          absl::StatusOr<Fence> f = ToFence(v);
          if (!f.ok()) return done(f.status());
          out.push_back(*f);
        }
        done(std::move(out));
      });
}

void WorkStream::Holder(int partition, const std::string& origin, uint64_t id,
                        int64_t create_ns, Done<std::string> done) {
  static constexpr char kScript[] = R"lua(
local entry = redis.call('GET', KEYS[1])
if not entry or entry == '0-0' then return '' end
local p = redis.call('XPENDING', KEYS[2], ARGV[1], entry, entry, 1)
if #p == 0 then return '' end
return p[1][2]
)lua";
  commands_->Command(
      {"EVAL", kScript, "2", MarkerKey(partition, origin, id, create_ns),
       JobsKey(partition), kGroup},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_error()) return done(absl::UnavailableError(r->str));
        done(r->str);
      });
}

void WorkStream::Withdraw(RedisConnection& commands, int partition,
                          const std::string& origin, uint64_t id,
                          int64_t create_ns, absl::Duration marker_ttl,
                          Done<Withdrawal> done) {
  static const std::string script = std::string(kRepackLua) + kWithdrawBody;
  commands.Command(
      {"EVAL", script, "2", MarkerKey(partition, origin, id, create_ns),
       JobsKey(partition), kGroup,
       std::to_string(absl::ToInt64Milliseconds(marker_ttl)), Prefix(partition),
       std::to_string(id), std::to_string(create_ns)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        const auto& e = r->elements;
        if (r->type != RedisValue::Type::kArray || e.empty() ||
            e[0].type != RedisValue::Type::kInteger) {
          return done(absl::InternalError(fmt::format(
              "redis: unexpected withdrawal reply {}", r->DebugString())));
        }
        Withdrawal w;
        if (e[0].integer == 0) return done(w);
        w.entry = e.size() > 1 ? e[1].str : "";
        if (e[0].integer == 1 || e.size() != 4) {
          w.was = Withdrawal::Was::kRemoved;
          return done(w);
        }
        w.was = Withdrawal::Was::kHeld;
        w.consumer = e[2].str;
        if (!absl::SimpleAtoi(e[3].str, &w.index)) w.index = -1;
        done(w);
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
                       Done<Renewal> done) {
  std::string done_key = DoneKey(partition, id);
  commands_->Command(
      {"EVAL", kRenewScript, "2", JobsKey(partition), std::move(done_key),
       kGroup, std::move(consumer), std::move(id)},
      [done = std::move(done)](absl::StatusOr<RedisValue> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->type != RedisValue::Type::kArray || r->elements.empty()) {
          return done(absl::InternalError(fmt::format(
              "redis: unexpected renewal reply {}", r->DebugString())));
        }
        absl::StatusOr<Fence> fence = ToFence(r->elements[0]);
        if (!fence.ok()) return done(fence.status());
        Renewal out{.fence = *fence};
        if (r->elements.size() > 1) {
          for (const RedisValue& k : r->elements[1].elements) {
            int index = 0;
            if (absl::SimpleAtoi(k.str, &index)) out.withdrawn.push_back(index);
          }
        }
        done(std::move(out));
      });
}

}  // namespace jobd::cluster
