// PoolCore and the fork server: asking for workers, taking in the ones
// forked (or the news that a fork failed, or that a worker was reaped),
// spare workers taking over job slots, and replacing a fork server that
// died (workers/process/internal/pool_core.h).
#include <fcntl.h>
#include <signal.h>

#include <utility>

#include "spdlog/spdlog.h"
#include "workers/process/internal/pool_core.h"
#include "workers/process/worker_process.h"

namespace jobd {
namespace {

// How long a spare slot whose worker took over a job slot waits before it
// forks a new spare.
constexpr absl::Duration kSpareRefillDelay = absl::Milliseconds(20);

}  // namespace

void PoolCore::RequestSpawn(int slot) {
  Slot& s = slots_[slot];
  if (monitor_stop_ || s.worker != 0 || s.spawn_request != 0) return;
  if (absl::Now() < s.respawn_at) return;  // Backoff; a timer retries.
  if (!relay_.running()) return;           // Re-requested on replacement.
  absl::StatusOr<uint64_t> request = relay_.RequestSpawn();
  if (!request.ok()) {
    spdlog::warn("process pool: fork request failed: {}",
                 request.status().ToString());
    s.respawn_at = absl::Now() + absl::Milliseconds(100);  // Timer asks.
    return;
  }
  s.spawn_request = *request;
}

void PoolCore::HandleForkServer() {
  if (!relay_.ReadReplies(*this)) ReplaceForkServer();
}

void PoolCore::OnSpawnFailed(uint64_t request_id, std::string_view error) {
  for (Slot& s : slots_) {
    if (s.spawn_request != request_id) continue;
    s.spawn_request = 0;
    ++s.quick_deaths;
    s.respawn_at = absl::Now() + QuickDeathBackoff(s.quick_deaths);
    spdlog::warn("process pool: could not fork a worker: {}; retrying",
                 std::string(error));
  }
}

void PoolCore::OnSpawned(uint64_t request_id, pid_t pid,
                         std::vector<UniqueFd>& fds) {
  int slot = -1;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].spawn_request == request_id) slot = i;
  }
  absl::StatusOr<ResultRing> ring = absl::InvalidArgumentError("no ring");
  if (fds.size() >= 3) ring = ResultRing::Map(fds[1].get());
  if (slot < 0 || !ring.ok() || monitor_stop_) {
    kill(-pid, SIGKILL);  // Not wanted (any more), or unusable.
    if (slot >= 0) {      // No pidfd: ask again a little later.
      slots_[slot].spawn_request = 0;
      slots_[slot].respawn_at = absl::Now() + absl::Milliseconds(100);
    }
    return;
  }
  Slot& s = slots_[slot];
  auto owned = std::make_unique<Worker>();
  Worker& w = *owned;
  w.gen = next_gen_++;
  w.slot = slot;
  w.pid = pid;
  w.sock = std::move(fds[0]);
  w.ring = *std::move(ring);
  w.ring.Prefault();
  w.pidfd = std::move(fds[2]);
  w.reader = FrameReader(kMaxWorkerFrameBytes);
  w.started = absl::Now();
  fcntl(w.sock.get(), F_SETFL, O_NONBLOCK);
  loop_.Add(w.sock.get(), EPOLLIN | EPOLLRDHUP,
            EventKey(w.gen, EventTag::kWorkerSocket));
  loop_.Add(w.pidfd.get(), EPOLLIN, EventKey(w.gen, EventTag::kWorkerPidfd));
  s.worker = w.gen;
  s.spawn_request = 0;
  ++spawned_;
  gen_by_pid_[w.pid] = w.gen;
  workers_.emplace(w.gen, std::move(owned));
  spdlog::debug("process pool: worker {} (pid {}) up in slot {}", w.gen, w.pid,
                slot);
  if (!s.pending.empty()) SendPending(slot);
  if (IsSpare(slot)) {  // A job slot may be waiting for it.
    for (int i = 0; i < options_.workers; ++i) {
      if (slots_[i].worker == 0 && TakeSpare(i)) break;
    }
  }
}

bool PoolCore::TakeSpare(int slot) {
  // A warm spare if there is one; a cold one is still quicker than a fork.
  int best = -1;
  for (size_t j = options_.workers; j < slots_.size(); ++j) {
    if (slots_[j].worker == 0) continue;
    const Worker& w = *workers_.at(slots_[j].worker);
    if (w.state != WorkerState::kLive || !w.retire.empty() || w.unresponsive) {
      continue;
    }
    if (best < 0 || w.ready) best = static_cast<int>(j);
    if (w.ready) break;
  }
  if (best < 0) return false;
  Slot& spare = slots_[best];
  Slot& s = slots_[slot];
  Worker& w = *workers_.at(spare.worker);
  w.slot = slot;
  s.worker = std::exchange(spare.worker, 0);
  spare.quick_deaths = 0;  // It lived to serve: forking works.
  // The spare slot waits for the fork `slot` asked for, if any.
  spare.spawn_request = std::exchange(s.spawn_request, 0);
  spdlog::debug("process pool: spare worker pid {} takes slot {}", w.pid, slot);
  if (!s.pending.empty()) SendPending(slot);
  // Its replacement is forked a little later, so that the fork and the new
  // process's warm-up do not take CPU from the jobs the crash held up.
  spare.respawn_at =
      std::max(spare.respawn_at, absl::Now() + kSpareRefillDelay);
  return true;
}

void PoolCore::Refill(int slot) {
  if (monitor_stop_ || (!IsSpare(slot) && TakeSpare(slot))) return;
  RequestSpawn(slot);
}

void PoolCore::OnExited(pid_t pid, int wait_status) {
  auto it = gen_by_pid_.find(pid);
  if (it == gen_by_pid_.end()) return;
  Worker* w = FindWorker(it->second);
  if (w == nullptr) return;
  if (w->state == WorkerState::kLive) OnWorkerDied(*w);
  Bury(*w, wait_status);
}

void PoolCore::ReplaceForkServer() {
  fork_server_retry_at_ = absl::InfiniteFuture();
  if (relay_.pid() > 0) {
    relay_.Reap(*this);  // Its last reports first: exits it reaped.
    // Its workers serve on, but their exits cannot be reported any more:
    // they retire after their chunk; the ones already gone are settled now.
    for (auto& [gen, w] : workers_) {
      w->orphaned = true;
      if (w->state == WorkerState::kLive) {
        w->retire = "fork_server_restart";
        MaybeRetire(*w);
      }
    }
    for (auto& [gen, w] : workers_) {
      if (w->state == WorkerState::kGone && w->exited) Bury(*w, -1);
    }
    for (Slot& s : slots_) s.spawn_request = 0;
  }
  if (monitor_stop_) return;
  if (absl::Status started = relay_.Start(); !started.ok()) {
    spdlog::error("process pool: cannot start a fork server: {}; retrying",
                  started.ToString());
    fork_server_retry_at_ = absl::Now() + absl::Seconds(1);
    return;
  }
  for (size_t i = 0; i < slots_.size(); ++i) RequestSpawn(i);
}

}  // namespace jobd
