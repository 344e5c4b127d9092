// ScheduleRunner: the periodic schedules jobd holds, and what fires them.
// Each slot of a schedule (schedule.h) submits one run, a normal job made
// from the schedule's template, through Scheduler::Submit, owned by the
// schedule's owner, labelled `jobd.schedule` = id and `jobd.slot` = the
// slot (RFC 3339, UTC), with the idempotency key
// `schedule:<id>:<slot unix seconds>`.
//
// At most once per slot, across restarts and kill -9: each schedule's row
// (its definition and the latest slot done) is kept in the journal's
// schedules table, put in the same journal batch as the run it fired, or a
// later one, and written after the batch's jobs: a row that says a slot was
// done is never durable without that slot's run. The other way round (the
// run durable, the row not: a crash in between) the slot comes again at the
// next start, and its idempotency key finds the run already there. Slots
// that passed while jobd was down (or could not fire: the clock jumped, the
// machine slept) are missed: CATCH_UP_POLICY_SKIP_MISSED runs none of them,
// RUN_ONCE one, for the latest.
//
// Overlap: a slot whose previous run is still live is skipped (SKIP,
// counted), submitted anyway (QUEUE) or submitted after cancelling the
// previous one (CANCEL_PREVIOUS). A run that is not admitted (queue full,
// quota, its template no longer valid after a reload) counts the slot as
// done with last_error set; while jobd drains or cannot write its journal,
// the slot waits and is tried again.
//
// Timers: its own TimerQueue on the injected Clock (a ManualClock fires
// them in tests); the slots are computed without the scheduler's lock, and
// RPC handlers only read or change the table (never waiting).
//
// Thread-safety: every public method is thread-safe. Lock order: the
// runner's mu_ -> the scheduler's -> journal (leaves). The scheduler never
// calls into the runner.
// Ownership: borrows the scheduler, journal (optional) and clock, which
// outlive it; the destructor stops its timer (no fire after it returns).
#ifndef JOBD_SERVER_SCHEDULES_RUNNER_H_
#define JOBD_SERVER_SCHEDULES_RUNNER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"
#include "server/journal/journal.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/scheduler.h"
#include "server/scheduler/timer_queue.h"
#include "server/schedules/schedule.h"

namespace jobd::schedules {

// Turns a run's spec into a job the scheduler admits (the frontend's spec
// validation and argument binding), or an error naming the field.
using MakeJob = std::function<absl::StatusOr<NewJob>(v1::JobSpec spec)>;

struct RunnerOptions {
  size_t max_schedules = 1000;  // Held at once (paused ones count).
};

// What a change did, and the journal ticket it waits for (0: none).
template <typename T>
struct Changed {
  T value;
  uint64_t ticket = 0;
};

class ScheduleRunner {
 public:
  ScheduleRunner(Scheduler& scheduler, Journal* journal, const Clock& clock,
                 MakeJob make_job, RunnerOptions options = {});
  ~ScheduleRunner();
  ScheduleRunner(const ScheduleRunner&) = delete;
  ScheduleRunner& operator=(const ScheduleRunner&) = delete;

  // Takes back the journal's schedules (after Scheduler::Restore, before
  // Start). A row that does not parse is logged and left alone.
  void Restore(const std::vector<std::pair<std::string, std::string>>& rows);
  // Arms the timers: slots missed while jobd was down are settled by each
  // schedule's catch-up policy at once.
  void Start();
  // Stops firing (shutdown; also the destructor).
  void Stop();

  // `owner` below: the caller; when not empty, another owner's schedules
  // are NotFound to it (empty: admin, every schedule).
  // Creates a schedule (InvalidArgument naming the field, AlreadyExists for
  // an id with another spec or owner, ResourceExhausted past
  // max_schedules). An id that exists with this spec and owner is returned
  // as it is (existed = true).
  absl::StatusOr<Changed<std::pair<v1::Schedule, bool>>> Create(
      const std::string& id, const v1::ScheduleSpec& spec, bool paused,
      const std::string& owner);
  absl::StatusOr<v1::Schedule> Get(const std::string& id,
                                   std::string_view owner) const;
  std::vector<v1::Schedule> List(std::string_view owner) const;
  absl::StatusOr<Changed<v1::Schedule>> SetPaused(const std::string& id,
                                                  std::string_view owner,
                                                  bool paused);
  // Whether it existed. FailedPrecondition for a config file's schedule
  // unless `config` (the config's own reconciliation).
  absl::StatusOr<Changed<bool>> Delete(const std::string& id,
                                       std::string_view owner,
                                       bool config = false);

  // The config file's schedules (owner "config"), at start: creates or
  // updates each (a changed spec replaces the old one, keeping its latest
  // slot and counters), deletes the config schedules no longer listed.
  // Errors are per schedule ("schedule 'id': schedule[i].job.task: ...");
  // the others apply.
  struct ConfigSchedule {
    std::string id;
    v1::ScheduleSpec spec;
    bool paused = false;
  };
  std::vector<absl::Status> ApplyConfig(
      const std::vector<ConfigSchedule>& schedules);

  // Counters for GetStats.
  void AddStats(v1::GetStatsResponse& stats) const;

 private:
  struct Entry {
    v1::Schedule state;  // next_fire_time filled in on the way out.
    std::optional<Timing> timing;
    TimerQueue::TimerId timer = 0;
    bool catching_up = false;  // Restored: due slots were missed.
  };

  // Slots at or before it are done: the latest slot, else creation (or
  // the time it was resumed).
  static absl::Time Baseline(const v1::Schedule& s);
  // The id and spec checked (errors named under `prefix`); its timing.
  absl::StatusOr<Timing> Check(const std::string& id,
                               const v1::ScheduleSpec& spec,
                               const std::string& prefix) const;
  Entry& Insert(const std::string& id, const v1::ScheduleSpec& spec,
                Timing timing, bool paused, const std::string& owner,
                bool from_config) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Schedule Render(const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Arm(const std::string& id, Entry& e, absl::Time when)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Disarm(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t Persist(const Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The timer of `id`: settles its due slots, fires at most one run.
  void Fire(const std::string& id);
  // Submits the run of `slot`; false if it should be tried again later.
  bool Submit(Entry& e, absl::Time slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Scheduler& scheduler_;
  Journal* const journal_;
  const Clock& clock_;
  const MakeJob make_job_;
  const RunnerOptions options_;
  const std::shared_ptr<EventSink> sink_;  // Runs' events go nowhere.

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t skipped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t missed_ ABSL_GUARDED_BY(mu_) = 0;

  TimerQueue timers_;  // Last: its thread calls Fire.
};

}  // namespace jobd::schedules

#endif  // JOBD_SERVER_SCHEDULES_RUNNER_H_
