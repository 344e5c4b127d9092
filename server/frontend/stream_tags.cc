#include "server/frontend/stream_tags.h"

#include <algorithm>

namespace jobd {

void StreamTags::Remember(uint64_t tag, uint64_t index, uint64_t job_id) {
  if (ascending_ && !items_.empty() && tag <= items_.back().tag) {
    ascending_ = false;  // From now on, by the map.
    by_tag_.reserve(items_.size() + 1);
    for (const Item& item : items_) by_tag_[item.tag] = item.job;
  }
  items_.push_back({tag, {index, job_id}});
  if (!ascending_) by_tag_[tag] = {index, job_id};
  if (items_.size() <= max_) return;
  const Item oldest = items_.front();
  items_.pop_front();
  if (ascending_) return;
  auto it = by_tag_.find(oldest.tag);
  // Not if a later item took the tag since.
  if (it != by_tag_.end() && it->second.index == oldest.job.index) {
    by_tag_.erase(it);
  }
}

const StreamTags::TagJob* StreamTags::Find(uint64_t tag) const {
  if (!ascending_) {
    auto it = by_tag_.find(tag);
    return it == by_tag_.end() ? nullptr : &it->second;
  }
  auto it = std::lower_bound(
      items_.begin(), items_.end(), tag,
      [](const Item& item, uint64_t t) { return item.tag < t; });
  return it == items_.end() || it->tag != tag ? nullptr : &it->job;
}

}  // namespace jobd
