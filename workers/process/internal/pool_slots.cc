#include "workers/process/internal/pool_slots.h"

#include <algorithm>

namespace jobd {

int ChooseFreeSlot(const std::vector<Slot>& slots, int workers, int depth) {
  int chosen = -1;
  for (int i = 0; i < workers && i < static_cast<int>(slots.size()); ++i) {
    const Slot& s = slots[i];
    if (s.chunks >= depth) continue;
    if (chosen < 0 || s.chunks < slots[chosen].chunks ||
        (s.chunks == slots[chosen].chunks && s.worker != 0 &&
         slots[chosen].worker == 0)) {
      chosen = i;  // Less loaded, or as loaded with its worker up.
    }
  }
  return chosen;
}

void RequeueInFlight(Slot& slot) {
  while (!slot.inflight.empty()) {
    slot.pending.push_front(std::move(slot.inflight.back()));
    slot.inflight.pop_back();
  }
}

absl::Duration QuickDeathBackoff(int quick_deaths) {
  return std::min(absl::Seconds(5),
                  absl::Milliseconds(10) * (1 << std::min(quick_deaths, 9)));
}

v1::ErrorReason CancelOutcomeReason(const JobRun& run) {
  return run.cancel->reason() == CancelReason::kTimeout
             ? v1::ERROR_REASON_TIMEOUT
         : run.cancel->reason() == CancelReason::kShutdown
             ? v1::ERROR_REASON_SHUTDOWN
             : v1::ERROR_REASON_CANCELLED;
}

}  // namespace jobd
