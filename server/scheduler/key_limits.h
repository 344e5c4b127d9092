// KeyLimits: limits by key (JobSpec.concurrency_key), a networked semaphore
// and rate limiter. Per key: a limit of jobs holding it at once
// (max_running), a token bucket of starts per second (rate), the jobs that
// hold it, and the jobs parked in it: held back by its limits, in priority
// order (highest first), FIFO within a priority.
//
// The scheduler asks Acquire when it picks a keyed job off its lane (at
// its claim with the journal's durable-start gate, at its hand-over
// without): the job either holds its key from then on, until Release (its
// run returned, or it ended without running), or is parked here instead
// of staying at its lane's head, so the jobs behind it go on (no
// head-of-line blocking). A parked job is granted its key as soon as the
// key has room (a holder released it, its limit was raised, a token came):
// the scheduler puts it back at the front of its priority in its lane.
// Tokens are taken when a job is granted its key: `rate` per second, at
// most max(1, rate/10) saved up (a burst of a tenth of a second). When a
// key runs out of tokens with jobs parked, one wake-up at the next token's
// time is asked for (Out::wakes); Woken is the answer.
//
// Limits come from the config (per key, and a default for every key) or
// from SetRpc (kept in the journal by the scheduler), which overrides the
// config's for that key. A key is forgotten when nothing holds it, nothing
// is parked in it and it has no limit of its own.
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_.
// Ownership: refers to jobs by id; owns its keys.
#ifndef JOBD_SERVER_SCHEDULER_KEY_LIMITS_H_
#define JOBD_SERVER_SCHEDULER_KEY_LIMITS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd {

// A key's limits: 0 = none of that kind.
struct KeyLimit {
  uint32_t max_running = 0;
  double rate = 0;  // Starts per second.
  bool operator==(const KeyLimit&) const = default;
};

// The longest concurrency key (bytes).
inline constexpr size_t kMaxKeyBytes = 128;
// The most keys with limits set through SetRpc.
inline constexpr size_t kMaxRpcKeys = 10000;
// The highest rate a key may have (starts per second).
inline constexpr double kMaxKeyRate = 1e6;

// Checks a concurrency key: "" is fine (no key); else 1 to kMaxKeyBytes
// bytes of valid UTF-8 without control characters. `field` names it in
// the error (InvalidArgument).
absl::Status ValidateKey(std::string_view key, std::string_view field);

struct KeyLimitOptions {
  // Every key without a limit of its own: at most this many running; 0:
  // no limit.
  uint32_t default_max_running = 0;
  // Keys' limits from the config.
  absl::flat_hash_map<std::string, KeyLimit> keys;
};

class KeyLimits {
 public:
  explicit KeyLimits(KeyLimitOptions options = {});

  // A parked job that was granted its key: put it back in its lane.
  struct Grant {
    uint64_t id;
    int32_t priority;
    v1::Executor lane;
  };
  // What an operation asks of the scheduler.
  struct Out {
    std::vector<Grant> granted;
    // Wake-ups to arm: Woken(key) at that time.
    std::vector<std::pair<std::string, absl::Time>> wakes;
    bool empty() const { return granted.empty() && wakes.empty(); }
  };

  // Whether any job holds a key (if not, Release has nothing to do).
  bool holding() const { return !holders_.empty(); }
  // Whether job `id` holds its key (acquired, or granted when parked).
  bool holds(uint64_t id) const { return holders_.contains(id); }
  // Jobs parked over all keys.
  size_t parked() const { return parked_; }

  // Job `id` of `key` (in lane `lane`, at `priority`) is about to start.
  // True: it holds the key from now until Release(id). False: it is
  // parked (Unpark if it ends while parked). Parked jobs that the key has
  // room for are granted first (out.granted).
  bool Acquire(absl::string_view key, uint64_t id, int32_t priority,
               v1::Executor lane, absl::Time now, Out& out);
  // Job `id` no longer holds its key (if it did): its run returned, or it
  // ended or went back to its queue without running. Grants the key to a
  // parked job if it has room.
  void Release(uint64_t id, absl::Time now, Out& out);
  // Parked job `id` ended (cancelled): forgets it. False if not parked.
  bool Unpark(absl::string_view key, uint64_t id, int32_t priority);
  // The wake-up armed for `key` is due: grants what its tokens allow.
  void Woken(absl::string_view key, absl::Time now, Out& out);

  // Sets `key`'s own limits (nullopt: drops them, the config's apply).
  // ResourceExhausted past kMaxRpcKeys keys with limits of their own.
  absl::Status SetRpc(absl::string_view key, std::optional<KeyLimit> limit,
                      absl::Time now, Out& out);
  // Keys' own limits as they were (journal, at start), before any job.
  void LoadRpc(absl::string_view key, KeyLimit limit);

  // The keys with limits or jobs, by key (at most `max`).
  std::vector<v1::KeyLimit> List(size_t max) const;
  // One key as List shows it.
  v1::KeyLimit Show(absl::string_view key) const;

 private:
  struct Parked {
    uint64_t id;
    v1::Executor lane;
  };
  struct Key {
    std::optional<KeyLimit> rpc;  // Its own limits (SetRpc).
    uint32_t running = 0;         // Jobs holding it.
    size_t parked_count = 0;
    double tokens = 0;
    absl::Time refilled = absl::InfinitePast();
    bool wake_armed = false;
    // priority (highest first) -> parked jobs, FIFO.
    absl::btree_map<int32_t, std::deque<Parked>, std::greater<int32_t>> parked;
  };
  using Keys = absl::node_hash_map<std::string, Key>;

  KeyLimit LimitOf(absl::string_view name, const Key& key) const;
  Key& Find(absl::string_view name, absl::Time now);
  // Tokens earned since the last refill; true if one is there.
  bool HasToken(Key& key, double rate, absl::Time now) const;
  // Grants parked jobs while the key has room and tokens.
  void GrantParked(const std::string& name, Key& key, absl::Time now, Out& out);
  // Forgets the key if it holds nothing and has no limit of its own.
  void MaybeForget(Keys::iterator it);
  v1::KeyLimit Describe(absl::string_view name, const Key* key) const;

  const KeyLimitOptions options_;
  Keys keys_;
  // Job -> the key it holds (node_hash_map: stable entries).
  absl::flat_hash_map<uint64_t, Keys::pointer> holders_;
  size_t parked_ = 0;
  size_t rpc_keys_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_KEY_LIMITS_H_
