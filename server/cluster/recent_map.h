// RecentMap: a map that keeps the values of the last `capacity` keys set
// (a key set again counts from then): WorkSharing's memory of where runs
// are, bounded.
//
// Thread-safety: none (its owner's thread). Ownership: holds its keys and
// values.
#ifndef JOBD_SERVER_CLUSTER_RECENT_MAP_H_
#define JOBD_SERVER_CLUSTER_RECENT_MAP_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace jobd::cluster {

template <typename Key, typename Value>
class RecentMap {
 public:
  explicit RecentMap(size_t capacity) : capacity_(capacity) {}

  void Set(const Key& key, Value value) {
    Slot& slot = map_[key];
    slot.value = std::move(value);
    slot.generation = ++generation_;
    order_.emplace_back(key, slot.generation);
    // The oldest go: past the capacity, and (keys set again leave stale
    // places behind) past twice as many places.
    while (map_.size() > capacity_ || order_.size() > 2 * capacity_) {
      auto it = map_.find(order_.front().first);
      if (it != map_.end() && it->second.generation == order_.front().second) {
        map_.erase(it);
      }
      order_.pop_front();
    }
  }
  // The value set last for `key`, or null.
  const Value* Find(const Key& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }
  size_t size() const { return map_.size(); }

 private:
  struct Slot {
    Value value;
    uint64_t generation = 0;
  };
  const size_t capacity_;
  absl::flat_hash_map<Key, Slot> map_;
  std::deque<std::pair<Key, uint64_t>> order_;  // Oldest first.
  uint64_t generation_ = 0;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_RECENT_MAP_H_
