// StreamTags: the client tags of one Submit stream's latest items and
// their jobs, for depends_on_tags: the latest item with a tag wins; only
// the latest kMax items are remembered.
//
// Clients tag items with increasing numbers as a rule (their index, as
// jobctl and the client libraries do): while every tag is larger than the
// one before, a tag is found by binary search in the items kept in order,
// with no per-item hash map to keep up. The first tag out of order builds
// that map from the kept items, and it is kept from then on.
//
// Thread-safety: none; one stream's reader owns it.
#ifndef JOBD_SERVER_FRONTEND_STREAM_TAGS_H_
#define JOBD_SERVER_FRONTEND_STREAM_TAGS_H_

#include <cstddef>
#include <cstdint>
#include <deque>

#include "absl/container/flat_hash_map.h"

namespace jobd {

class StreamTags {
 public:
  static constexpr size_t kMax = 100000;

  struct TagJob {
    uint64_t index = 0;   // Its stream index.
    uint64_t job_id = 0;  // 0: rejected.
  };

  explicit StreamTags(size_t max = kMax) : max_(max) {}

  // The item of stream index `index` (increasing from one call to the
  // next) has client tag `tag` and job `job_id` (0: rejected).
  void Remember(uint64_t tag, uint64_t index, uint64_t job_id);
  // The latest remembered item with `tag`, or null.
  const TagJob* Find(uint64_t tag) const;
  // Whether lookups still take the binary search (for tests).
  bool ascending() const { return ascending_; }

 private:
  struct Item {
    uint64_t tag;
    TagJob job;
  };
  const size_t max_;
  std::deque<Item> items_;  // In stream order, the latest max_.
  bool ascending_ = true;   // Every tag in items_ larger than the one before.
  absl::flat_hash_map<uint64_t, TagJob> by_tag_;  // Once not ascending.
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_STREAM_TAGS_H_
