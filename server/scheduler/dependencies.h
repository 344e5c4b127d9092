// Dependencies: the jobs WAITING for other jobs to end (JobSpec.depends_on),
// apart from the Waiting set (waiting.h), which holds jobs waiting for a
// time.
//
// For each dependant, the number of its dependencies that have not ended;
// for each dependency that has not ended, the dependants waiting for it.
// When a dependency ends, TakeDependants hands back its dependants in O(1)
// per dependant (the scheduler then calls Met or Remove for each); a
// dependant whose count reaches 0 is ready. Memory: about 12 bytes per
// dependant and 8 per edge, plus the hash maps' own; bounded by the live
// jobs times --max-dependencies.
//
// A dependant that ends otherwise (cancelled) is Removed; the edges naming
// it stay in its dependencies' lists until they end, and are skipped then
// (ids are never reused).
//
// Thread-safety: none; a member of Scheduler guarded by Scheduler::mu_.
// Ownership: holds job ids only.
#ifndef JOBD_SERVER_SCHEDULER_DEPENDENCIES_H_
#define JOBD_SERVER_SCHEDULER_DEPENDENCIES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"

namespace jobd {

class Dependencies {
 public:
  // `dependant` waits for each of `unmet` (live jobs, each named once; not
  // empty). A dependant must not be added twice.
  void Add(uint64_t dependant, std::span<const uint64_t> unmet);
  // Removes and returns the dependants still waiting for `dependency` (it
  // ended), in the order they were added. Each is still counted: call Met
  // or Remove for it.
  std::vector<uint64_t> TakeDependants(uint64_t dependency);
  // One dependency of `dependant` ended and is met: true if it was its
  // last (it is no longer held here then).
  bool Met(uint64_t dependant);
  // Forgets `dependant` (it ended otherwise); false if it was not here.
  bool Remove(uint64_t dependant);
  // Its dependencies not ended yet (0 if it is not here).
  uint32_t Unmet(uint64_t dependant) const;
  bool Contains(uint64_t dependant) const { return unmet_.contains(dependant); }
  // Dependants waiting.
  size_t size() const { return unmet_.size(); }
  bool empty() const { return unmet_.empty(); }
  // Whether any job waits for `dependency`.
  bool HasDependants(uint64_t dependency) const {
    return !dependants_.empty() && dependants_.contains(dependency);
  }
  // Forgets the edges naming `dependency` (no dependant still here waits
  // for it: AnyWaiting is false).
  void Drop(uint64_t dependency) { dependants_.erase(dependency); }
  // Whether a dependant still here waits for `dependency` (those removed
  // since it was added do not count).
  bool AnyWaiting(uint64_t dependency) const {
    auto it = dependants_.find(dependency);
    if (it == dependants_.end()) return false;
    for (uint64_t d : it->second) {
      if (unmet_.contains(d)) return true;
    }
    return false;
  }

 private:
  absl::flat_hash_map<uint64_t, uint32_t> unmet_;  // Dependant -> count.
  // Dependency -> its dependants (most have one).
  absl::flat_hash_map<uint64_t, absl::InlinedVector<uint64_t, 1>> dependants_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_DEPENDENCIES_H_
