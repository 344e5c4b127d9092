#include "server/scheduler/key_limits.h"

#include <algorithm>
#include <cmath>

#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {

namespace {

double Burst(double rate) { return std::max(1.0, rate / 10); }

}  // namespace

absl::Status ValidateKey(std::string_view key, std::string_view field) {
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes, longer than the {} a key may have", field,
                    key.size(), kMaxKeyBytes));
  }
  if (!IsValidUtf8(key)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: not valid UTF-8", field));
  }
  for (const char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: control character 0x{:02x} (a key is printable text)", field,
          u));
    }
  }
  return absl::OkStatus();
}

KeyLimits::KeyLimits(KeyLimitOptions options) : options_(std::move(options)) {}

KeyLimit KeyLimits::LimitOf(absl::string_view name, const Key& key) const {
  if (key.rpc.has_value()) return *key.rpc;
  if (auto it = options_.keys.find(name); it != options_.keys.end()) {
    return it->second;
  }
  return {.max_running = options_.default_max_running};
}

KeyLimits::Key& KeyLimits::Find(absl::string_view name, absl::Time now) {
  auto [it, fresh] = keys_.try_emplace(name);
  if (fresh) {
    it->second.tokens = Burst(LimitOf(name, it->second).rate);
    it->second.refilled = now;
  }
  return it->second;
}

bool KeyLimits::HasToken(Key& key, double rate, absl::Time now) const {
  if (rate <= 0) return true;
  if (now > key.refilled) {
    // An idle key saves up at most a burst. With jobs parked, every token
    // is spent as it comes, so tokens piling up past a burst mean jobd woke
    // late (a loaded machine): those starts are owed and made up, up to a
    // second's worth, so that the rate holds over time.
    const double cap =
        key.parked_count > 0 ? std::max(Burst(rate), rate) : Burst(rate);
    key.tokens = std::min(
        cap, key.tokens + rate * absl::ToDoubleSeconds(now - key.refilled));
    key.refilled = now;
  }
  return key.tokens >= 1;
}

void KeyLimits::GrantParked(const std::string& name, Key& key, absl::Time now,
                            Out& out) {
  const KeyLimit limit = LimitOf(name, key);
  while (key.parked_count > 0 &&
         (limit.max_running == 0 || key.running < limit.max_running)) {
    if (!HasToken(key, limit.rate, now)) {
      if (!key.wake_armed) {
        key.wake_armed = true;
        // The next token, rounded up to a whole microsecond.
        const double wait = (1 - key.tokens) / limit.rate;
        out.wakes.emplace_back(name,
                               now + absl::Microseconds(std::ceil(wait * 1e6)));
      }
      return;
    }
    if (limit.rate > 0) key.tokens -= 1;
    auto bucket = key.parked.begin();
    const Parked job = bucket->second.front();
    bucket->second.pop_front();
    const int32_t priority = bucket->first;
    if (bucket->second.empty()) key.parked.erase(bucket);
    --key.parked_count;
    --parked_;
    ++key.running;
    holders_[job.id] = &*keys_.find(name);
    out.granted.push_back({job.id, priority, job.lane});
  }
}

bool KeyLimits::Acquire(absl::string_view key_name, uint64_t id,
                        int32_t priority, v1::Executor lane, absl::Time now,
                        Out& out) {
  Key& key = Find(key_name, now);
  auto entry = keys_.find(key_name);
  if (key.parked_count > 0) GrantParked(entry->first, key, now, out);
  const KeyLimit limit = LimitOf(key_name, key);
  if (key.parked_count == 0 &&
      (limit.max_running == 0 || key.running < limit.max_running) &&
      HasToken(key, limit.rate, now)) {
    if (limit.rate > 0) key.tokens -= 1;
    ++key.running;
    holders_[id] = &*entry;
    return true;
  }
  key.parked[priority].push_back({id, lane});
  ++key.parked_count;
  ++parked_;
  // Out of tokens (not of room): a wake-up at the next token.
  if (limit.max_running == 0 || key.running < limit.max_running) {
    GrantParked(entry->first, key, now, out);
  }
  return false;
}

void KeyLimits::Release(uint64_t id, absl::Time now, Out& out) {
  auto holder = holders_.find(id);
  if (holder == holders_.end()) return;
  Keys::pointer entry = holder->second;
  holders_.erase(holder);
  Key& key = entry->second;
  --key.running;
  GrantParked(entry->first, key, now, out);
  MaybeForget(keys_.find(entry->first));
}

bool KeyLimits::Unpark(absl::string_view name, uint64_t id, int32_t priority) {
  auto it = keys_.find(name);
  if (it == keys_.end()) return false;
  Key& key = it->second;
  auto bucket = key.parked.find(priority);
  if (bucket == key.parked.end()) return false;
  std::deque<Parked>& jobs = bucket->second;
  auto job = std::find_if(jobs.begin(), jobs.end(),
                          [id](const Parked& p) { return p.id == id; });
  if (job == jobs.end()) return false;
  jobs.erase(job);
  if (jobs.empty()) key.parked.erase(bucket);
  --key.parked_count;
  --parked_;
  MaybeForget(it);
  return true;
}

void KeyLimits::Woken(absl::string_view name, absl::Time now, Out& out) {
  auto it = keys_.find(name);
  if (it == keys_.end()) return;
  it->second.wake_armed = false;
  GrantParked(it->first, it->second, now, out);
  MaybeForget(it);
}

absl::Status KeyLimits::SetRpc(absl::string_view name,
                               std::optional<KeyLimit> limit, absl::Time now,
                               Out& out) {
  auto it = keys_.find(name);
  const bool had = it != keys_.end() && it->second.rpc.has_value();
  if (limit.has_value() && !had && rpc_keys_ >= kMaxRpcKeys) {
    return absl::ResourceExhaustedError(
        fmt::format("key: {} keys have limits set already, the most there "
                    "may be; clear some first",
                    kMaxRpcKeys));
  }
  Key& key = Find(name, now);
  it = keys_.find(name);
  const KeyLimit before = LimitOf(name, key);
  key.rpc = limit;
  rpc_keys_ += (limit.has_value() ? 1 : 0) - (had ? 1 : 0);
  const KeyLimit after = LimitOf(name, key);
  if (after.rate != before.rate) {
    HasToken(key, before.rate, now);  // Earned at the old rate.
    key.tokens = std::min(key.tokens, Burst(after.rate));
    if (before.rate <= 0) key.tokens = Burst(after.rate);
  }
  GrantParked(it->first, key, now, out);
  MaybeForget(it);
  return absl::OkStatus();
}

void KeyLimits::LoadRpc(absl::string_view name, KeyLimit limit) {
  Key& key = Find(name, absl::InfinitePast());
  if (!key.rpc.has_value()) ++rpc_keys_;
  key.rpc = limit;
  key.tokens = Burst(limit.rate);
}

void KeyLimits::MaybeForget(Keys::iterator it) {
  if (it == keys_.end()) return;
  const Key& key = it->second;
  if (key.running > 0 || key.parked_count > 0 || key.rpc.has_value() ||
      key.wake_armed) {
    return;
  }
  // A rate's bucket is kept until it is full again (else forgetting it
  // would hand out a fresh burst early).
  const double rate = LimitOf(it->first, key).rate;
  if (rate > 0 && key.tokens < Burst(rate)) return;
  keys_.erase(it);
}

v1::KeyLimit KeyLimits::Describe(absl::string_view name, const Key* key) const {
  v1::KeyLimit out;
  out.set_key(std::string(name));
  KeyLimit limit{.max_running = options_.default_max_running};
  std::string source = limit.max_running > 0 ? "config" : "";
  if (key != nullptr && key->rpc.has_value()) {
    limit = *key->rpc;
    source = "rpc";
  } else if (auto it = options_.keys.find(name); it != options_.keys.end()) {
    limit = it->second;
    source = "config";
  }
  out.set_max_running(limit.max_running);
  out.set_max_starts_per_second(limit.rate);
  out.set_source(source);
  if (key != nullptr) {
    out.set_running(key->running);
    out.set_parked(static_cast<uint32_t>(key->parked_count));
  }
  return out;
}

std::vector<v1::KeyLimit> KeyLimits::List(size_t max) const {
  std::vector<absl::string_view> names;
  names.reserve(keys_.size() + options_.keys.size());
  for (const auto& [name, key] : keys_) names.push_back(name);
  for (const auto& [name, limit] : options_.keys) {
    if (!keys_.contains(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  if (names.size() > max) names.resize(max);
  std::vector<v1::KeyLimit> out;
  out.reserve(names.size());
  for (absl::string_view name : names) {
    auto it = keys_.find(name);
    out.push_back(Describe(name, it == keys_.end() ? nullptr : &it->second));
  }
  return out;
}

v1::KeyLimit KeyLimits::Show(absl::string_view name) const {
  auto it = keys_.find(name);
  return Describe(name, it == keys_.end() ? nullptr : &it->second);
}

}  // namespace jobd
