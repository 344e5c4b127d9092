#include "workers/process/internal/quarantine.h"

#include <algorithm>

#include "fmt/format.h"

namespace jobd {

bool CrashQuarantine::CountKill(const std::string& task) {
  if (quarantine_after_ <= 0) return false;
  if (++streak_[task] < quarantine_after_) return false;
  return quarantined_.insert(task).second;
}

bool CrashQuarantine::Release(const std::string& task) {
  streak_.erase(task);
  return quarantined_.erase(task) > 0;
}

std::vector<std::string> CrashQuarantine::Sorted() const {
  std::vector<std::string> tasks(quarantined_.begin(), quarantined_.end());
  std::sort(tasks.begin(), tasks.end());
  return tasks;
}

std::string CrashQuarantine::Message(std::string_view task) const {
  return fmt::format(
      "task '{}' is quarantined: it killed its worker process {} times in a "
      "row; lift with `jobctl unquarantine {}` (or restart jobd)",
      task, quarantine_after_, task);
}

}  // namespace jobd
