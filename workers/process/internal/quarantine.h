// Internal to the process pool (not part of its public API): the quarantine
// of tasks that keep killing their worker process. Each task's kills in a
// row are counted (a job of it that ends, however, resets the count); at
// `quarantine_after` the task is quarantined, and the pool fails its jobs
// at once (QUARANTINED) until it is released (ClearQuarantine, `jobctl
// unquarantine`) or jobd restarts.
//
// Thread-safety: none; the pool's mutex guards it.
// Ownership: a plain value; task names are copied in.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_QUARANTINE_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_QUARANTINE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace jobd {

class CrashQuarantine {
 public:
  // `quarantine_after` kills in a row quarantine a task; 0 or less: never.
  explicit CrashQuarantine(int quarantine_after)
      : quarantine_after_(quarantine_after) {}

  // A job of `task` killed its worker. True if that quarantined the task
  // (it was not before).
  bool CountKill(const std::string& task);
  // A job of `task` ended in its worker: its streak of kills is over.
  void CountEnd(const std::string& task) { streak_.erase(task); }

  bool Contains(const std::string& task) const {
    return quarantined_.contains(task);
  }
  // Releases `task` and forgets its streak; false if it was not
  // quarantined.
  bool Release(const std::string& task);
  // The quarantined tasks, sorted by name.
  std::vector<std::string> Sorted() const;

  // The error of a job refused because its task is quarantined.
  std::string Message(std::string_view task) const;

 private:
  const int quarantine_after_;
  absl::flat_hash_map<std::string, int> streak_;
  absl::flat_hash_set<std::string> quarantined_;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_QUARANTINE_H_
