// Internal to the process pool (not part of its public API): the pool's
// bookkeeping of slots and worker processes, as plain data, and the small
// rules that act on it alone.
//
// A Slot is a place for up to pipeline_depth chunks of jobs, run in order
// by its worker, which holds them queued; the pool has `workers` job slots
// and `spare_workers` spare slots after them, whose workers wait idle until
// a job slot loses its own (PoolCore::TakeSpare). A Worker is one worker
// process, known by its generation number `gen` (unique per process; its
// EventKeys carry it); it belongs to one slot while it is live (kLive),
// and stays in the pool's table after it left (kGone) until its exit is
// known and its blamed job reported (PoolCore::Bury).
//
// Thread-safety: none; every Slot and Worker is guarded by the pool's mutex
// (PoolCore::mu_). Ownership: the pool owns the slots (by value) and the
// workers (by unique_ptr, keyed by gen); a slot refers to its worker by gen;
// InFlight entries own their JobRun.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_POOL_SLOTS_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_POOL_SLOTS_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "jobd/internal/worker.pb.h"
#include "workers/executor/executor.h"
#include "workers/os/unique_fd.h"
#include "workers/process/ipc.h"
#include "workers/process/result_ring.h"

namespace jobd {

// A job of one of a slot's chunks.
struct InFlight {
  JobRun run;
  uint64_t chunk = 0;      // The chunk it came in (PoolCore::chunk_left_).
  bool cancelled = false;  // The scheduler asked to stop it.
};

enum class WorkerState { kLive, kGone };

struct Worker {
  uint64_t gen = 0;  // Unique per process; epoll and timer key.
  int slot = 0;
  pid_t pid = 0;
  UniqueFd sock;
  UniqueFd pidfd;
  WorkerState state = WorkerState::kLive;
  FrameReader reader{0};
  ResultRing ring;  // Its results (workers/process/result_ring.h).
  // Results too big for the ring, read from the socket before the ring
  // entry announcing them was taken.
  std::deque<internal::JobDone> socket_results;
  OutBuffer out;
  bool want_out = false;  // EPOLLOUT registered.
  bool ready = false;     // Warmed up (its Ready frame came).
  uint64_t jobs_done = 0;
  absl::Time started;
  bool orphaned = false;  // Its fork server died: exit status unknowable.
  std::string retire;     // Why it is to be retired after its chunk.
  // Hard stop of a cancelled running job: 0 none, 1 waiting cooperative,
  // 2 SIGTERM sent, 3 SIGKILL sent.
  int escalation = 0;
  absl::Time escalate_at = absl::InfiniteFuture();
  absl::Time last_rss_check = absl::InfinitePast();
  // Set when it left its slot (kGone): the job it was running, and what
  // the pool already knows about why it died.
  std::optional<InFlight> blamed;
  v1::ErrorReason kill_reason = v1::ERROR_REASON_UNSPECIFIED;
  std::string kill_message;  // Overrides the exit status in the error.
  std::string retired_as;    // Counter key of ProcessPoolStats.retired.
  bool exited = false;       // pidfd said so.
  absl::Time status_deadline = absl::InfiniteFuture();
  // Liveness: the last ping sent, and when it is overdue (infinite while
  // none is outstanding).
  uint64_t ping = 0;
  absl::Time ping_deadline = absl::InfiniteFuture();
  // It did not answer a ping and was sent SIGKILL; it keeps its slot until
  // it is seen dead, or until death_deadline.
  bool unresponsive = false;
  absl::Time death_deadline = absl::InfiniteFuture();
};

struct Slot {
  uint64_t worker = 0;         // gen of its live worker; 0 if none.
  uint64_t spawn_request = 0;  // Outstanding fork request; 0 if none.
  absl::Time respawn_at = absl::InfinitePast();  // Backoff.
  int quick_deaths = 0;           // Deaths before any finished job, in a row.
  std::deque<InFlight> inflight;  // Sent to the worker, not reported.
  std::deque<InFlight> pending;   // Waiting for a worker.
  int chunks = 0;                 // Chunks it holds not fully reported.
};

// The job slot (among the first `workers`) a new chunk goes to: the least
// loaded one holding fewer than `depth` chunks, among equals one whose
// worker is up, then the first; -1 if every one holds `depth` chunks. So a
// worker is given a second chunk only when every worker holds one.
int ChooseFreeSlot(const std::vector<Slot>& slots, int workers, int depth);

// The jobs sent to a slot's worker and not begun go back to the front of
// its pending queue, in order, for the next worker.
void RequeueInFlight(Slot& slot);

// How long a slot waits before forking again after `quick_deaths` workers
// in a row died before finishing a job (or could not be forked):
// 10 ms << quick_deaths (20 ms after the first), at most 5 s. So a broken setup
// (say, an address-space limit too small to start) does not fork in a loop.
absl::Duration QuickDeathBackoff(int quick_deaths);

// Why a job stopped by cancellation ended, from its token: TIMEOUT,
// SHUTDOWN or CANCELLED.
v1::ErrorReason CancelOutcomeReason(const JobRun& run);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_POOL_SLOTS_H_
