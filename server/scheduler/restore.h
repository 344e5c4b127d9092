// Restore and shutdown: what becomes of jobs across a restart.
//
// At start, Restorer turns the rows a journal held into job records as
// they were (Revive), and judges each job that was live when jobd stopped
// (Judge): a queued one queues again (a waiting one waits again); a running one
// runs again if its spec allows it (DELIVERY_AT_LEAST_ONCE), else fails
// LOST_ON_RESTART; one whose task is gone or changed fails; one whose row could
// not be read back, or whose result no longer fits a message, fails saying why.
// Ended jobs are retained again. The Scheduler applies the verdicts
// (Scheduler::Restore).
//
// At shutdown, with a journal, queued and waiting jobs and running
// at-least-once jobs
// are kept for the next start (KeptAtShutdown); the others end CANCELLED
// (ShutdownEnd). The Scheduler applies it (Scheduler::EndForShutdown).
//
// Thread-safety: none; used with Scheduler::mu_ held (Restorer reads and
// measures through the scheduler's Router).
// Ownership: Restorer refers to the registry, the router and the
// scheduler's list of vanished tasks, which outlive it; revived records
// are the caller's.
#ifndef JOBD_SERVER_SCHEDULER_RESTORE_H_
#define JOBD_SERVER_SCHEDULER_RESTORE_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "jobd/v1/jobd.pb.h"
#include "server/journal/journal.h"
#include "server/scheduler/event_log.h"
#include "server/scheduler/job_record.h"
#include "server/scheduler/router.h"
#include "workers/sdk/task.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

class Restorer {
 public:
  // `vanished` keeps a TaskDef for each task name the registry no longer
  // knows (revived records point at it). `max_message_bytes`:
  // SchedulerOptions::max_message_bytes.
  Restorer(const TaskRegistry& registry, const Router& router,
           std::deque<TaskDef>& vanished, size_t max_message_bytes);

  struct Revived {
    std::unique_ptr<JobRecord> job;
    // Why its row could not be read back (JournalRow::problem), or "": the
    // job is QUEUED then, to be failed by Judge.
    std::string problem;
    // Its end changed (a result that no longer fits a message: FAILED
    // RESULT_TOO_LARGE): its row must be rewritten.
    bool rewrite = false;
  };
  // The job of `row` (moved from) as it was, owned by `owner` (interned);
  // appends the events its row records to `log`.
  Revived Revive(JournalRow& row, const std::string* owner,
                 std::vector<LoggedEvent>& log) const;

  enum class Fate {
    kQueue,       // Was queued: queued again.
    kRerun,       // Was running, at-least-once: queued again.
    kLost,        // Was running, at-most-once: LOST_ON_RESTART.
    kUnrunnable,  // Its task is gone or changed: INVALID_INPUT.
    kUnreadable,  // Its row could not be read back: LOST_ON_RESTART.
  };
  struct Verdict {
    Fate fate = Fate::kQueue;
    std::shared_ptr<JobEnd> end;  // The failing fates: how it ends.
    // kQueue, kRerun: where it runs and its bound arguments.
    v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
    std::shared_ptr<JobRecord::RunState> run;
  };
  // What becomes of `job`, live when jobd stopped (QUEUED or RUNNING);
  // `problem` is Revived::problem.
  Verdict Judge(const JobRecord& job, const std::string& problem) const;

 private:
  const TaskRegistry& registry_;
  const Router& router_;
  std::deque<TaskDef>& vanished_;
  const size_t max_message_bytes_;
};

// Whether a live job is kept for the next start at shutdown (queued,
// waiting, or
// running and at-least-once, with a journal) rather than ended.
bool KeptAtShutdown(const JobRecord& job, bool journal);
// How a job that is not kept ends at shutdown: CANCELLED (SHUTDOWN).
std::shared_ptr<JobEnd> ShutdownEnd();

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_RESTORE_H_
