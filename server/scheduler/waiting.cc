#include "server/scheduler/waiting.h"

#include <limits>

namespace jobd {
namespace {

int64_t Key(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixNanos(t);
}

}  // namespace

void Waiting::Add(uint64_t id, absl::Time due) { set_.emplace(Key(due), id); }

bool Waiting::Remove(uint64_t id, absl::Time due) {
  return set_.erase({Key(due), id}) > 0;
}

absl::Time Waiting::next() const {
  if (set_.empty()) return absl::InfiniteFuture();
  const int64_t ns = set_.begin()->first;
  if (ns == std::numeric_limits<int64_t>::min()) return absl::InfinitePast();
  if (ns == std::numeric_limits<int64_t>::max()) return absl::InfiniteFuture();
  return absl::FromUnixNanos(ns);
}

std::vector<uint64_t> Waiting::TakeDue(absl::Time now, size_t max) {
  std::vector<uint64_t> out;
  const int64_t limit = Key(now);
  auto it = set_.begin();
  while (it != set_.end() && out.size() < max && it->first <= limit) {
    out.push_back(it->second);
    ++it;
  }
  set_.erase(set_.begin(), it);
  return out;
}

}  // namespace jobd
