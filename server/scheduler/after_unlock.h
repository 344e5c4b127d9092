// AfterUnlock: work the scheduler collects while it holds its lock and
// runs once it has released it (DESIGN.md "the After pattern"): sinks to
// flush, answers to callers that wait for their journal batch to be
// durable, wake-ups of lanes whose claimed starts wait for a batch, and
// the runs of trivial tasks, made on the calling thread.
//
// Thread-safety: a value of one call, on its thread; Run() is called
// without the scheduler lock held.
// Ownership: holds shared sinks and the callbacks until Run().
#ifndef JOBD_SERVER_SCHEDULER_AFTER_UNLOCK_H_
#define JOBD_SERVER_SCHEDULER_AFTER_UNLOCK_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "server/journal/journal.h"
#include "server/scheduler/event_log.h"
#include "workers/executor/executor.h"

namespace jobd {

struct AfterUnlock {
  SinksToFlush flush;
  // Answers to waiting callers: run once `ticket` is durable (true), or
  // when it never will be (false).
  std::vector<std::function<void(bool durable)>> calls;
  uint64_t ticket = 0;
  // Wake-ups for gated starts: (ticket, callback).
  std::vector<std::pair<uint64_t, std::function<void(bool)>>> gates;
  // Readers of job output to wake (JobOutputs waiters), first.
  std::vector<std::function<void()>> wakes;
  // Started runs of trivial tasks (TaskDef::trivial), handed to
  // `run_trivial` (Scheduler::Hand sets it), which runs them on this thread
  // (`here`: up to `trivial_here` of them) or hands them to the lane's
  // executor as one batch: none on a timer's thread (it must not be held
  // up), a few on a journal's (a lone job's start, once its acceptance is
  // durable, saves the hand-off; many go to the pool and the journal goes
  // on) or a Submit's (a short request's answer comes sooner; a long one's
  // jobs run on a pool thread while this one reads the next request), any
  // number on a pool thread.
  size_t trivial_here = 0;
  std::vector<JobRun> trivial;
  std::function<void(std::vector<JobRun>, bool here)> run_trivial;
  // The scheduler's clock, read once while the lock is held
  // (Scheduler::Now): the events and times of one call share it (reading
  // the clock was ~5% of a no-op job's CPU, several times a job).
  std::optional<absl::Time> now;

  // Wakes the output readers, registers the wake-ups, answers the callers
  // once `ticket` is durable (at once without a journal; never held through
  // an outage), and flushes the sinks (they hold back what is not durable
  // yet themselves); runs the trivial tasks' jobs before the flush (a job
  // run here has its ACCEPTED and its end leave in one write), or hands
  // them on after it.
  void Run(Journal* journal);
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_AFTER_UNLOCK_H_
