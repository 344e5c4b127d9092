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
  // Before the flush: a trivial job run here ends within microseconds, and
  // its end then leaves in the same write as its ACCEPTED (a round trip of
  // one message, not two). Its end's own flush (its OnFinished) sends
  // what these sinks hold first, in order.
  if (!trivial.empty()) run_trivial(std::move(trivial));
  // Sinks hold back what is not durable yet themselves (Event::ticket).
  for (const auto& sink : flush) sink->Flush();
}

}  // namespace jobd
