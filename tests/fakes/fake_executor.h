// FakeExecutor: a JobExecutor for scheduler tests that runs nothing. It
// records what the scheduler hands it (Start, StartChunk, Cancel, Resize)
// and the test ends each started job, with the outcome it chooses, on the
// test's own thread (End, Succeed, Fail): starts and ends are
// deterministic, with no threads, no polling and no sleeps. The real
// executors keep their own tests; the scheduler's contract is with the
// JobExecutor interface (workers/executor/executor.h), which this checks
// as the scheduler uses it: a start only while a slot is free, a chunk
// only when max_chunk() > 1 and no larger, each job started once and
// ended once. A violation fails the running test (ADD_FAILURE).
//
// Thread-safety: thread-safe. The scheduler calls it with its lock held,
// from any thread (a journal's thread starts claimed jobs); the listener is
// called only from End() and Progress(), on the caller's thread, never
// with the fake's lock held.
// Ownership: the listener (the scheduler's) must outlive the fake's last
// End(); the scheduler owns the fake once added (keep a raw pointer).
//
//   auto fake = std::make_unique<FakeExecutor>(
//       v1::EXECUTOR_THREAD, 1, scheduler.listener_for(v1::EXECUTOR_THREAD));
//   FakeExecutor& executor = *fake;
//   scheduler.AddExecutor(std::move(fake));
//   ... Submit ...
//   ASSERT_EQ(executor.running(), std::vector<uint64_t>{id});
//   executor.Succeed(id);
#ifndef JOBD_TESTS_FAKES_FAKE_EXECUTOR_H_
#define JOBD_TESTS_FAKES_FAKE_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "workers/executor/executor.h"

namespace jobd {

class FakeExecutor : public JobExecutor {
 public:
  FakeExecutor(v1::Executor kind, int capacity, ExecutorListener& listener,
               int max_chunk = 1);

  // ---- JobExecutor ----
  v1::Executor kind() const override { return kind_; }
  int capacity() const override;
  int max_chunk() const override { return max_chunk_; }
  void Start(JobRun run) override;
  void StartChunk(std::vector<JobRun> runs) override;
  void Cancel(uint64_t job_id) override;
  bool Resize(int slots) override;
  // Takes nothing more; true if no started job is still running (ending
  // them stays the test's to do).
  bool Shutdown(absl::Time deadline) override;

  // ---- trivial tasks' jobs (off unless set_runs_trivial) ----
  bool runs_trivial() const override;
  // Records the batch; FinishTrivial runs it.
  void StartTrivial(std::vector<JobRun> runs) override;

  // ---- the test's side ----
  // Whether it says it runs trivial tasks' jobs outside its slots.
  void set_runs_trivial(bool yes);
  // The batches StartTrivial got, as job ids, in order.
  std::vector<std::vector<uint64_t>> trivial_batches() const;
  // Waits until `count` batches came (from another thread: a journal's).
  bool AwaitTrivialBatches(size_t count, absl::Duration timeout) const;
  // Runs the batches not run yet (their tasks' own code), each reported in
  // one OnJobsFinished, on this thread.
  void FinishTrivial();
  // Called inside Start/StartChunk for each job, with the scheduler's lock
  // held (e.g. to look at the journal file at the moment a job starts),
  // before the job counts as started (running(), AwaitStart): what it
  // records is there once AwaitStart returns.
  void set_on_start(std::function<void(const JobRun&)> fn);
  // Started jobs that have not ended, in start order.
  std::vector<uint64_t> running() const;
  // Every hand-over in order: one job per Start, several per StartChunk.
  std::vector<std::vector<uint64_t>> starts() const;
  // Jobs Cancel() was called for, in order.
  std::vector<uint64_t> cancelled() const;
  // The run of a started job (spec, deadline, cancel token), ended or not.
  std::optional<JobRun> run(uint64_t job_id) const;
  int busy() const;  // Slots in use (a chunk holds one until its last end).

  // Ends started job `job_id` with `outcome` (reported to the listener on
  // this thread). The last job of a chunk to end frees the slot
  // (JobOutcome::frees_slot is set here).
  void End(uint64_t job_id, JobOutcome outcome);
  // End with a result, or with `status` (not OK) for `reason` (unset:
  // the scheduler's default, TASK_ERROR). `wall` is the run's wall time.
  void Succeed(uint64_t job_id, TaskOutput output = {},
               absl::Duration wall = absl::ZeroDuration());
  void Fail(uint64_t job_id, absl::Status status,
            v1::ErrorReason reason = v1::ERROR_REASON_UNSPECIFIED);
  // Reports progress of a running job to the listener.
  void Progress(uint64_t job_id, double fraction, std::string message);
  // Waits (on a condition, no polling) until job `job_id` has been
  // started, or `timeout`: for starts that come from another thread (a
  // journal's commit). True if it has.
  bool AwaitStart(uint64_t job_id, absl::Duration timeout) const;

 private:
  struct Started {
    JobRun run;
    uint64_t chunk = 0;  // Index of its hand-over in starts_.
    bool ended = false;
  };
  void Take(std::vector<JobRun> runs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls the on_start callback (without mu_) for each of `runs`.
  void OnStart(const std::vector<JobRun>& runs) ABSL_LOCKS_EXCLUDED(mu_);

  const v1::Executor kind_;
  const int max_chunk_;
  ExecutorListener& listener_;
  mutable absl::Mutex mu_;
  int capacity_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(const JobRun&)> on_start_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<uint64_t, Started> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> order_ ABSL_GUARDED_BY(mu_);  // Start order.
  std::vector<std::vector<uint64_t>> starts_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> chunk_left_ ABSL_GUARDED_BY(mu_);  // Per hand-over.
  std::vector<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  bool runs_trivial_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::vector<JobRun>> trivial_ ABSL_GUARDED_BY(mu_);
  size_t trivial_finished_ ABSL_GUARDED_BY(mu_) = 0;  // Of trivial_.
};

}  // namespace jobd

#endif  // JOBD_TESTS_FAKES_FAKE_EXECUTOR_H_
