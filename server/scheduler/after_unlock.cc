#include "server/scheduler/after_unlock.h"

namespace jobd {

void AfterUnlock::Run(Journal* journal) {
  now.reset();  // Read again if the lock is taken again with this.
  for (auto& wake : wakes) wake();
  // Sinks hold back what is not durable yet themselves (Event::ticket).
  for (const auto& sink : flush) sink->Flush();
  for (auto& [gate_ticket, fn] : gates) {
    journal->WhenDurable(gate_ticket, std::move(fn));
  }
  if (calls.empty()) {
    // Nothing to answer.
  } else if (journal == nullptr || ticket <= journal->durable()) {
    for (auto& call : calls) call(true);
  } else {
    // Answers to callers: never held through an outage.
    journal->WhenDurable(
        ticket,
        [calls = std::move(calls)](bool durable) {
          for (auto& call : calls) call(durable);
        },
        Journal::Wait::kFailFast);
  }
  // Last: their events follow those flushed above.
  if (!trivial.empty()) run_trivial(std::move(trivial));
}

}  // namespace jobd
