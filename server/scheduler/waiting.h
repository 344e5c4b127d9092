// Waiting: the jobs that are WAITING for their time (a delay, not_before,
// or the backoff before a retry), ordered by the time they are due.
//
// One entry per job, 16 bytes in a B-tree (about 20 bytes with the tree's
// own), so that a million waiting jobs cost tens of megabytes on top of
// their records. The scheduler arms one timer for the earliest due time
// (next()), not one per job; when it fires, TakeDue hands back the jobs due
// by then in bounded batches, earliest first.
//
// The due time of a waiting job is kept in its record too (the caller's:
// Remove needs it), so that the set holds nothing else.
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_.
// Ownership: holds job ids only.
#ifndef JOBD_SERVER_SCHEDULER_WAITING_H_
#define JOBD_SERVER_SCHEDULER_WAITING_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/time/time.h"

namespace jobd {

class Waiting {
 public:
  // `id` is due at `due`. An id must not be added twice.
  void Add(uint64_t id, absl::Time due);
  // Removes `id`, added with `due`; false if it was not there.
  bool Remove(uint64_t id, absl::Time due);
  // The earliest due time; InfiniteFuture when empty.
  absl::Time next() const;
  // Removes and returns up to `max` ids due at `now` or before, earliest
  // first (ties in id order).
  std::vector<uint64_t> TakeDue(absl::Time now, size_t max);
  size_t size() const { return set_.size(); }
  bool empty() const { return set_.empty(); }

 private:
  // (Unix nanoseconds, id).
  absl::btree_set<std::pair<int64_t, uint64_t>> set_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_WAITING_H_
