#include "server/scheduler/after_unlock.h"

namespace jobd {

void AfterUnlock::Run(Journal* journal) {
  now.reset();  // Read again if the lock is taken again with this.
  for (auto& wake : wakes) wake();
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
  // Jobs run on this thread, before the flush: they end within
  // microseconds, and each end then leaves in the same write as its
  // ACCEPTED (a round trip of one message, not two); their OnFinished
  // flushes what these sinks hold first, in order. Jobs handed to a pool
  // thread go after it, as their events follow those flushed here.
  const bool here = !trivial.empty() && trivial.size() <= trivial_here;
  if (here) run_trivial(std::move(trivial), /*here=*/true);
  // Sinks hold back what is not durable yet themselves (Event::ticket).
  for (const auto& sink : flush) sink->Flush();
  if (!here && !trivial.empty()) run_trivial(std::move(trivial), false);
}

}  // namespace jobd
