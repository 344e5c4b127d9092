// Dependencies (dependencies.h).
#include "server/scheduler/dependencies.h"

#include <utility>

namespace jobd {

void Dependencies::Add(uint64_t dependant, std::span<const uint64_t> unmet) {
  if (unmet.empty()) return;
  unmet_[dependant] = static_cast<uint32_t>(unmet.size());
  for (uint64_t dependency : unmet) {
    dependants_[dependency].push_back(dependant);
  }
}

std::vector<uint64_t> Dependencies::TakeDependants(uint64_t dependency) {
  auto it = dependants_.find(dependency);
  if (it == dependants_.end()) return {};
  std::vector<uint64_t> out;
  out.reserve(it->second.size());
  for (uint64_t dependant : it->second) {
    if (unmet_.contains(dependant)) out.push_back(dependant);
  }
  dependants_.erase(it);
  return out;
}

bool Dependencies::Met(uint64_t dependant) {
  auto it = unmet_.find(dependant);
  if (it == unmet_.end()) return false;
  if (--it->second > 0) return false;
  unmet_.erase(it);
  return true;
}

bool Dependencies::Remove(uint64_t dependant) {
  return unmet_.erase(dependant) > 0;
}

uint32_t Dependencies::Unmet(uint64_t dependant) const {
  auto it = unmet_.find(dependant);
  return it == unmet_.end() ? 0 : it->second;
}

}  // namespace jobd
