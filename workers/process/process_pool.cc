#include "workers/process/process_pool.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "workers/process/worker_process.h"

namespace jobd {
namespace {

// epoll data: gen << 2 | tag; the eventfd has kWakeKey.
enum Tag : uint64_t {
  kTagSocket = 0,
  kTagPidfd = 1,
  kTagForkControl = 2,
  kTagForkPidfd = 3
};
constexpr uint64_t kWakeKey = ~0ULL;
constexpr absl::Duration kExitStatusWait = absl::Seconds(2);
// Results handed to the scheduler in one call at most (bounds how long its
// lock is held).
constexpr size_t kMaxReportBatch = 256;
// How long a spare slot whose worker took over a job slot waits before it
// forks a new spare.
constexpr absl::Duration kSpareRefillDelay = absl::Milliseconds(20);
// A chunk's jobs go to a worker in frames of about this size at most.
constexpr size_t kChunkFrameBytes = 16u << 20;

uint64_t Key(uint64_t gen, Tag tag) { return gen << 2 | tag; }

// The pool whose monitor thread this is, if any.
thread_local const ProcessPoolExecutor* tl_monitor_of = nullptr;

void EpollAdd(int epoll, int fd, uint32_t events, uint64_t key) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) {
    spdlog::error("process pool: epoll_ctl add: {}", std::strerror(errno));
  }
}

uint64_t ReadRssBytes(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/statm", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<uint64_t>(resident) * sysconf(_SC_PAGESIZE);
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  const char* text = strsignal(sig);
  return fmt::format("SIG{} ({})", abbrev ? abbrev : std::to_string(sig),
                     text ? text : "unknown signal");
}

// What a process is doing, from /proc/PID/stat ("stopped by SIGSTOP or
// another stop signal", ...); empty if it cannot be told.
std::string ProcessStateText(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return "";
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // "PID (COMM) STATE ...": COMM may hold anything, so after the last ')'.
  const char* paren = std::strrchr(buf, ')');
  if (paren == nullptr || paren[1] != ' ' || paren[2] == '\0') return "";
  switch (paren[2]) {
    case 'T':
      return "was stopped (by SIGSTOP or another stop signal)";
    case 't':
      return "was stopped by a debugger (ptrace)";
    case 'D':
      return "was stuck in an uninterruptible system call (state D)";
    case 'Z':
    case 'X':
      return "was exiting";
    default:
      return fmt::format("was running (state {})", paren[2]);
  }
}

std::string MiB(uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

// Why a job stopped by cancellation ended, from its token.
v1::ErrorReason CancelOutcomeReason(const JobRun& run) {
  return run.cancel->reason() == CancelReason::kTimeout
             ? v1::ERROR_REASON_TIMEOUT
         : run.cancel->reason() == CancelReason::kShutdown
             ? v1::ERROR_REASON_SHUTDOWN
             : v1::ERROR_REASON_CANCELLED;
}

}  // namespace

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolOptions options,
                                         ForkServerProcess fork_server,
                                         ExecutorListener& listener)
    : options_(std::move(options)),
      listener_(listener),
      epoll_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  EpollAdd(epoll_.get(), wake_fd_.get(), EPOLLIN, kWakeKey);
  {
    absl::MutexLock lock(&mu_);
    fork_server_ = std::move(fork_server);
    fcntl(fork_server_.control.get(), F_SETFL, O_NONBLOCK);
    EpollAdd(epoll_.get(), fork_server_.control.get(), EPOLLIN,
             Key(fork_server_gen_, kTagForkControl));
    EpollAdd(epoll_.get(), fork_server_.pidfd.get(), EPOLLIN,
             Key(fork_server_gen_, kTagForkPidfd));
    slots_.resize(std::max(1, options_.workers) +
                  std::max(0, options_.spare_workers));
    for (size_t i = 0; i < slots_.size(); ++i) RequestSpawn(i);
    if (options_.ping_interval > absl::ZeroDuration()) {
      next_ping_ = absl::Now() + options_.ping_interval;
    }
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
}

ProcessPoolExecutor::~ProcessPoolExecutor() { Shutdown(absl::Now()); }

void ProcessPoolExecutor::Wake() {
  const uint64_t one = 1;
  (void)!write(wake_fd_.get(), &one, sizeof(one));
}

// ---- scheduler side ------------------------------------------------------

void ProcessPoolExecutor::Start(JobRun run) {
  std::vector<JobRun> chunk;
  chunk.push_back(std::move(run));
  StartChunk(std::move(chunk));
}

void ProcessPoolExecutor::StartChunk(std::vector<JobRun> runs) {
  if (runs.empty()) return;
  absl::MutexLock lock(&mu_);
  int chosen = -1;
  for (int i = 0; i < options_.workers; ++i) {
    if (slots_[i].chunk_left != 0) continue;
    if (chosen < 0) chosen = i;
    if (slots_[i].worker != 0) {  // Prefer a slot whose worker is up.
      chosen = i;
      break;
    }
  }
  if (chosen < 0) {  // The scheduler broke the capacity contract.
    spdlog::critical("process pool: StartChunk with every slot busy");
    std::abort();
  }
  Slot& s = slots_[chosen];
  s.chunk_left = static_cast<int>(runs.size());
  ++busy_slots_;
  for (JobRun& run : runs) {
    if (quarantined_.contains(run.task->name)) {
      ReportFailure(
          chosen, run, v1::ERROR_REASON_QUARANTINED,
          absl::FailedPreconditionError(QuarantineMessage(run.task->name)));
      continue;
    }
    s.pending.push_back({.run = std::move(run)});
  }
  if (s.worker != 0) SendPending(chosen);
  // The monitor has reports to deliver or the RSS timer to arm; not needed
  // when this runs on the monitor (a listener call starting the next chunk).
  if ((!reports_.empty() || options_.max_worker_rss > 0) &&
      tl_monitor_of != this) {
    Wake();
  }
}

void ProcessPoolExecutor::Cancel(uint64_t job_id) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    Slot& s = slots_[i];
    for (auto it = s.pending.begin(); it != s.pending.end(); ++it) {
      if (it->run.job_id != job_id) continue;
      JobRun run = std::move(it->run);
      s.pending.erase(it);
      ReportFailure(i, run, CancelOutcomeReason(run),
                    absl::CancelledError("cancelled before it started"));
      Wake();
      return;
    }
    for (size_t k = 0; k < s.inflight.size(); ++k) {
      InFlight& f = s.inflight[k];
      if (f.run.job_id != job_id) continue;
      if (f.cancelled) return;
      f.cancelled = true;
      Worker& w = *workers_.at(s.worker);
      internal::ToWorker message;
      internal::CancelJob& c = *message.add_cancel();
      c.set_job_id(job_id);
      c.set_reason(static_cast<int>(f.run.cancel->reason()));
      AppendFrame(message, w.out.data());
      Flush(w);
      if (k == 0) ArmEscalation(w);
      Wake();
      return;
    }
  }
}

bool ProcessPoolExecutor::IsQuarantined(const TaskDef& task) const {
  absl::MutexLock lock(&mu_);
  return quarantined_.contains(task.name);
}

bool ProcessPoolExecutor::ClearQuarantine(std::string_view task) {
  absl::MutexLock lock(&mu_);
  crash_streak_.erase(std::string(task));
  const bool was = quarantined_.erase(std::string(task)) > 0;
  if (was)
    spdlog::info("process pool: task '{}' released from quarantine",
                 std::string(task));
  return was;
}

std::string ProcessPoolExecutor::QuarantineMessage(
    const std::string& task) const {
  return fmt::format(
      "task '{}' is quarantined: it killed its worker process {} times in a "
      "row; lift with `jobctl unquarantine {}` (or restart jobd)",
      task, options_.quarantine_after, task);
}

// ---- monitor thread ------------------------------------------------------

void ProcessPoolExecutor::DeliverFinished(std::vector<FinishedJob>& finished) {
  if (finished.empty()) return;
  listener_.OnJobsFinished(finished);
  finished.clear();
}

void ProcessPoolExecutor::MonitorLoop() {
  tl_monitor_of = this;
  pthread_setname_np(pthread_self(), "jobd-procpool");
  std::vector<Report> reports;
  std::vector<FinishedJob> finished;
  epoll_event events[64];
  for (;;) {
    int timeout_ms;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time next = NextTimer();
      if (next == absl::InfiniteFuture()) {
        timeout_ms = -1;
      } else {
        const absl::Duration d =
            std::max(absl::ZeroDuration(), next - absl::Now());
        timeout_ms = static_cast<int>(
            absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))));
      }
    }
    const int n = epoll_wait(epoll_.get(), events, 64, timeout_ms);
    bool stop;
    {
      absl::MutexLock lock(&mu_);
      for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        if (key == kWakeKey) {
          uint64_t count;
          (void)!read(wake_fd_.get(), &count, sizeof(count));
          continue;
        }
        const uint64_t gen = key >> 2;
        switch (static_cast<Tag>(key & 3)) {
          case kTagForkControl:
          case kTagForkPidfd:
            if (gen == fork_server_gen_) HandleForkServer();
            break;
          case kTagSocket:
            if (Worker* w = FindWorker(gen);
                w != nullptr && w->state == WorkerState::kLive) {
              HandleWorkerSocket(*w, events[i].events);
            }
            break;
          case kTagPidfd:
            if (Worker* w = FindWorker(gen); w != nullptr) {
              w->exited = true;
              w->pidfd.reset();
              if (w->state == WorkerState::kLive) OnWorkerDied(*w);
              if (w->orphaned) Bury(*w, -1);
            }
            break;
        }
      }
      RunTimers(absl::Now());
      for (uint64_t gen : graves_) workers_.erase(gen);
      graves_.clear();
      reports.swap(reports_);
      stop = monitor_stop_;
    }
    // In order; consecutive results go together (one scheduler lock round).
    for (Report& r : reports) {
      if (r.progress) {
        DeliverFinished(finished);
        listener_.OnJobProgress(r.job_id, r.fraction, r.message);
        continue;
      }
      finished.push_back({.job_id = r.job_id, .outcome = std::move(r.outcome)});
      if (finished.size() >= kMaxReportBatch) DeliverFinished(finished);
    }
    DeliverFinished(finished);
    reports.clear();
    if (stop) return;
  }
}

ProcessPoolExecutor::Worker* ProcessPoolExecutor::FindWorker(uint64_t gen) {
  auto it = workers_.find(gen);
  return it == workers_.end() ? nullptr : it->second.get();
}

absl::Time ProcessPoolExecutor::NextTimer() const {
  absl::Time next = std::min(fork_server_retry_at_, next_ping_);
  for (const Slot& s : slots_) {
    if (s.worker == 0 && s.spawn_request == 0 && !monitor_stop_ &&
        fork_server_.control.valid()) {
      next = std::min(next, s.respawn_at);
    }
  }
  for (const auto& [gen, w] : workers_) {
    next = std::min(next, w->escalate_at);
    if (w->state == WorkerState::kGone) {
      next = std::min(next, w->status_deadline);
      continue;
    }
    next = std::min({next, w->ping_deadline, w->death_deadline});
    if (options_.max_worker_rss > 0 && !slots_[w->slot].inflight.empty()) {
      next = std::min(next, w->last_rss_check + options_.rss_check_interval);
    }
  }
  return next;
}

void ProcessPoolExecutor::RunTimers(absl::Time now) {
  if (now >= fork_server_retry_at_) ReplaceForkServer();
  if (now >= next_ping_ && !monitor_stop_) {
    PingWorkers(now);
    next_ping_ = now + options_.ping_interval;
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.worker == 0 && s.spawn_request == 0 && now >= s.respawn_at) {
      Refill(i);
    }
  }
  for (auto& [gen, wp] : workers_) {
    Worker& w = *wp;
    const bool rss_due = options_.max_worker_rss > 0 &&
                         w.state == WorkerState::kLive && !w.unresponsive &&
                         !slots_[w.slot].inflight.empty() &&
                         now >= w.last_rss_check + options_.rss_check_interval;
    if ((now >= w.escalate_at || rss_due) && w.state == WorkerState::kLive) {
      DrainRing(w);  // Blame the job that runs now, not one that finished.
    }
    if (now >= w.escalate_at) {
      if (w.escalation == 1 && w.state == WorkerState::kLive) {
        const JobRun& run = slots_[w.slot].inflight.front().run;
        KillWorker(w, CancelOutcomeReason(run),
                   fmt::format("stopped with SIGTERM: it did not react to "
                               "cancellation within {}",
                               absl::FormatDuration(options_.cancel_grace)),
                   "killed", SIGTERM);
      } else if (w.escalation == 2) {  // Also what the task left behind.
        kill(-w.pid, SIGKILL);
        w.escalation = 3;
        w.escalate_at = absl::InfiniteFuture();
      } else {
        w.escalate_at = absl::InfiniteFuture();
      }
    }
    if (w.state == WorkerState::kGone) {
      if (now >= w.status_deadline) Bury(w, -1);
      continue;
    }
    if (now >= w.ping_deadline) OnPingOverdue(w, now);
    if (w.state == WorkerState::kLive && now >= w.death_deadline) {
      // SIGKILL did not end it yet: free its slot all the same. Its running
      // job is blamed, as whether it began cannot be known for sure.
      spdlog::error(
          "process pool: worker pid {} is still there {} after SIGKILL; "
          "giving its slot to another",
          w.pid, absl::FormatDuration(kExitStatusWait));
      w.death_deadline = absl::InfiniteFuture();
      if (DrainRing(w)) DetachWorker(w);
    }
    if (w.state == WorkerState::kGone) continue;
    if (rss_due) {
      w.last_rss_check = now;
      const uint64_t rss = ReadRssBytes(w.pid);
      if (rss > options_.max_worker_rss && slots_[w.slot].inflight.empty()) {
        w.retire = "max_worker_rss";
        MaybeRetire(w);
      } else if (rss > options_.max_worker_rss) {
        KillWorker(w, v1::ERROR_REASON_OUT_OF_MEMORY,
                   fmt::format("out of memory: the worker's resident memory "
                               "({}) exceeded max_worker_rss ({}); the worker "
                               "was killed",
                               MiB(rss), MiB(options_.max_worker_rss)),
                   "max_worker_rss", SIGKILL);
      }
    }
  }
}

// ---- fork server -------------------------------------------------------

void ProcessPoolExecutor::RequestSpawn(int slot) {
  Slot& s = slots_[slot];
  if (monitor_stop_ || s.worker != 0 || s.spawn_request != 0) return;
  if (absl::Now() < s.respawn_at) return;     // Backoff; a timer retries.
  if (!fork_server_.control.valid()) return;  // Re-requested on replacement.
  internal::ForkRequest request;
  request.set_request_id(next_request_++);
  internal::WorkerLimits& limits = *request.mutable_limits();
  limits.set_address_space_bytes(options_.max_address_space);
  limits.set_cpu_seconds(options_.max_cpu_seconds);
  limits.set_open_files(options_.max_open_files);
  if (options_.run_as.has_value()) {
    limits.set_switch_user(true);
    limits.set_uid(options_.run_as->first);
    limits.set_gid(options_.run_as->second);
  }
  s.spawn_request = request.request_id();
  if (absl::Status st = SendPacket(fork_server_.control.get(), request);
      !st.ok()) {
    spdlog::warn("process pool: fork request failed: {}", st.ToString());
    s.spawn_request = 0;  // Asked again by the respawn timer.
    s.respawn_at = absl::Now() + absl::Milliseconds(100);
  }
}

void ProcessPoolExecutor::HandleForkServer() {
  for (int i = 0; i < 256; ++i) {
    internal::ForkReply reply;
    std::vector<UniqueFd> fds;
    const ReadResult r = RecvPacket(fork_server_.control.get(), reply, fds);
    if (r == ReadResult::kWouldBlock) return;
    if (r != ReadResult::kData) {
      if (r == ReadResult::kError && errno == EBADMSG) continue;
      ReplaceForkServer();
      return;
    }
    switch (reply.kind_case()) {
      case internal::ForkReply::kSpawned:
        OnSpawned(reply.spawned(), fds);
        break;
      case internal::ForkReply::kSpawnFailed:
        for (Slot& s : slots_) {
          if (s.spawn_request != reply.spawn_failed().request_id()) continue;
          s.spawn_request = 0;
          ++s.quick_deaths;
          s.respawn_at =
              absl::Now() + std::min(absl::Seconds(5),
                                     absl::Milliseconds(10) *
                                         (1 << std::min(s.quick_deaths, 9)));
          spdlog::warn("process pool: could not fork a worker: {}; retrying",
                       reply.spawn_failed().error());
        }
        break;
      case internal::ForkReply::kExited:
        OnExited(reply.exited());
        break;
      case internal::ForkReply::KIND_NOT_SET:
        break;
    }
  }
}

void ProcessPoolExecutor::OnSpawned(const internal::ForkReply::Spawned& spawned,
                                    std::vector<UniqueFd>& fds) {
  int slot = -1;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].spawn_request == spawned.request_id()) slot = i;
  }
  absl::StatusOr<ResultRing> ring = absl::InvalidArgumentError("no ring");
  if (fds.size() >= 3) ring = ResultRing::Map(fds[1].get());
  if (slot < 0 || !ring.ok() || monitor_stop_) {
    kill(-spawned.pid(), SIGKILL);  // Not wanted (any more), or unusable.
    if (slot >= 0) {                // No pidfd: ask again a little later.
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
  w.pid = spawned.pid();
  w.sock = std::move(fds[0]);
  w.ring = *std::move(ring);
  w.ring.Prefault();
  w.pidfd = std::move(fds[2]);
  w.reader = FrameReader(kMaxWorkerFrameBytes);
  w.started = absl::Now();
  fcntl(w.sock.get(), F_SETFL, O_NONBLOCK);
  EpollAdd(epoll_.get(), w.sock.get(), EPOLLIN | EPOLLRDHUP,
           Key(w.gen, kTagSocket));
  EpollAdd(epoll_.get(), w.pidfd.get(), EPOLLIN, Key(w.gen, kTagPidfd));
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

bool ProcessPoolExecutor::TakeSpare(int slot) {
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

void ProcessPoolExecutor::Refill(int slot) {
  if (monitor_stop_ || (!IsSpare(slot) && TakeSpare(slot))) return;
  RequestSpawn(slot);
}

void ProcessPoolExecutor::OnExited(const internal::ForkReply::Exited& exited) {
  auto it = gen_by_pid_.find(exited.pid());
  if (it == gen_by_pid_.end()) return;
  Worker* w = FindWorker(it->second);
  if (w == nullptr) return;
  if (w->state == WorkerState::kLive) OnWorkerDied(*w);
  Bury(*w, exited.wait_status());
}

void ProcessPoolExecutor::ReplaceForkServer() {
  fork_server_retry_at_ = absl::InfiniteFuture();
  if (fork_server_.pid > 0) {
    // Its last reports first: exits it reaped before it died.
    for (int i = 0; i < 256 && fork_server_.control.valid(); ++i) {
      internal::ForkReply reply;
      std::vector<UniqueFd> fds;
      if (RecvPacket(fork_server_.control.get(), reply, fds) !=
          ReadResult::kData) {
        break;
      }
      if (reply.has_exited()) OnExited(reply.exited());
      if (reply.has_spawned()) kill(-reply.spawned().pid(), SIGKILL);
    }
    int status = 0;
    if (fork_server_.control.valid()) kill(fork_server_.pid, SIGKILL);
    waitpid(fork_server_.pid, &status, 0);
    spdlog::error(
        "process pool: the fork server (pid {}) died ({}); starting a new one",
        fork_server_.pid,
        WIFSIGNALED(status) ? SignalName(WTERMSIG(status))
                            : fmt::format("exit code {}", WEXITSTATUS(status)));
    fork_server_ = ForkServerProcess{};
    ++fork_server_gen_;
    ++fork_server_restarts_;
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
  absl::StatusOr<ForkServerProcess> fresh =
      SpawnForkServer(options_.self_exe, options_.fork_server_args);
  if (!fresh.ok()) {
    spdlog::error("process pool: cannot start a fork server: {}; retrying",
                  fresh.status().ToString());
    fork_server_retry_at_ = absl::Now() + absl::Seconds(1);
    return;
  }
  fork_server_ = *std::move(fresh);
  fcntl(fork_server_.control.get(), F_SETFL, O_NONBLOCK);
  EpollAdd(epoll_.get(), fork_server_.control.get(), EPOLLIN,
           Key(fork_server_gen_, kTagForkControl));
  EpollAdd(epoll_.get(), fork_server_.pidfd.get(), EPOLLIN,
           Key(fork_server_gen_, kTagForkPidfd));
  spdlog::info("process pool: fork server running (pid {})", fork_server_.pid);
  for (size_t i = 0; i < slots_.size(); ++i) RequestSpawn(i);
}

// ---- workers -------------------------------------------------------------

void ProcessPoolExecutor::HandleWorkerSocket(Worker& w, uint32_t events) {
  if (events & EPOLLOUT) Flush(w);
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) return;
  for (int i = 0; i < 16 && w.state == WorkerState::kLive; ++i) {
    const ReadResult r = w.reader.ReadFrom(w.sock.get());
    if (r == ReadResult::kData) {
      if (!ProcessFrames(w)) return;
      if (w.reader.drained()) break;  // epoll reports anything newer.
      continue;
    }
    if (r == ReadResult::kWouldBlock) break;
    OnWorkerDied(w);  // EOF or error: it is gone, or as good as.
    return;
  }
  if (w.state == WorkerState::kLive) DrainRing(w);
}

bool ProcessPoolExecutor::ProcessFrames(Worker& w) {
  internal::FromWorker message;
  for (;;) {
    absl::StatusOr<bool> got = w.reader.Next(message);
    std::string error;
    if (!got.ok()) {
      error = std::string(got.status().message());
    } else if (!*got) {
      return true;
    } else if (message.has_doorbell()) {
      continue;  // The caller drains the ring next.
    } else if (message.has_ready()) {
      w.ready = true;
      continue;
    } else if (message.has_pong()) {
      if (message.pong().ping() == w.ping) {
        w.ping_deadline = absl::InfiniteFuture();
      }
      continue;
    } else if (message.has_crashing()) {
      OnCrashNotice(w, message.crashing().signal());
      return false;
    } else if (message.has_progress()) {
      if (!DrainRing(w)) return false;  // Results of the jobs before it.
      const Slot& s = slots_[w.slot];
      if (!s.inflight.empty() &&
          s.inflight.front().run.job_id == message.progress().job_id()) {
        reports_.push_back({.job_id = message.progress().job_id(),
                            .progress = true,
                            .fraction = message.progress().fraction(),
                            .message = message.progress().message()});
      }
      continue;
    } else if (message.has_done()) {
      if (w.socket_results.size() < slots_[w.slot].inflight.size()) {
        w.socket_results.push_back(std::move(*message.mutable_done()));
        continue;
      }
      error = "more results than jobs";
    } else {
      error = "empty message";
    }
    ProtocolError(w, error);
    return false;
  }
}

bool ProcessPoolExecutor::DrainRing(Worker& w) {
  internal::JobDone done;
  while (w.state == WorkerState::kLive) {
    absl::StatusOr<std::optional<ResultRing::Entry>> entry = w.ring.Peek();
    if (!entry.ok()) {
      ProtocolError(w, std::string(entry.status().message()));
      return false;
    }
    if (!entry->has_value()) break;
    if ((*entry)->kind == ResultRing::kResultOnSocket) {
      if (w.socket_results.empty()) break;  // Its frame is on the way.
      done = std::move(w.socket_results.front());
      w.socket_results.pop_front();
    } else if (!done.ParseFromArray((*entry)->bytes.data(),
                                    static_cast<int>((*entry)->bytes.size()))) {
      ProtocolError(w, "a result in the ring does not parse");
      return false;
    }
    w.ring.Consume();
    const Slot& s = slots_[w.slot];
    if (s.inflight.empty() || s.inflight.front().run.job_id != done.job_id()) {
      ProtocolError(w,
                    fmt::format("result for job {}, which it was not running",
                                done.job_id()));
      return false;
    }
    OnDone(w, done);
  }
  w.ring.Release();
  return w.state == WorkerState::kLive;
}

void ProcessPoolExecutor::ProtocolError(Worker& w, std::string_view error) {
  KillWorker(w, v1::ERROR_REASON_WORKER_CRASHED,
             fmt::format("the worker broke the IPC protocol ({}); it was "
                         "killed and replaced",
                         std::string(error)),
             "protocol_error", SIGKILL);
}

void ProcessPoolExecutor::OnDone(Worker& w, internal::JobDone& done) {
  Slot& s = slots_[w.slot];
  InFlight f = std::move(s.inflight.front());
  s.inflight.pop_front();
  ++w.jobs_done;
  s.quick_deaths = 0;
  JobOutcome outcome;
  if (done.ok()) {
    outcome.output.value = std::move(*done.mutable_value());
    outcome.output.payload = std::move(*done.mutable_payload());
  } else {
    outcome.status = absl::Status(static_cast<absl::StatusCode>(done.code()),
                                  done.message());
    outcome.reason = done.reason();
  }
  outcome.cpu_time = absl::Nanoseconds(done.cpu_ns());
  outcome.wall_time = absl::Nanoseconds(done.wall_ns());
  crash_streak_.erase(f.run.task->name);
  if (outcome.reason == v1::ERROR_REASON_OUT_OF_MEMORY) {
    w.retire = "out_of_memory";  // Its heap may be in any state now.
  } else if (options_.max_jobs_per_worker > 0 &&
             w.jobs_done >= options_.max_jobs_per_worker) {
    w.retire = "max_jobs_per_worker";
  }
  ReportDone(w.slot, f.run, std::move(outcome));
  w.escalation = 0;
  w.escalate_at = absl::InfiniteFuture();
  if (!s.inflight.empty() && s.inflight.front().cancelled) ArmEscalation(w);
  MaybeRetire(w);
}

void ProcessPoolExecutor::SendPending(int slot) {
  Slot& s = slots_[slot];
  Worker& w = *workers_.at(s.worker);
  // A chunk may be bigger than one frame may be: it goes in frames of at
  // most kChunkFrameBytes (a single job up to kMaxWorkerFrameBytes).
  internal::ToWorker message;
  size_t message_bytes = 0;
  for (InFlight& f : s.pending) {
    if (f.cancelled) {  // Cancelled in a worker that died: ended already.
      ReportFailure(slot, f.run, CancelOutcomeReason(f.run),
                    absl::CancelledError("cancelled before it started"));
      continue;
    }
    internal::RunJob& r = *message.add_run();
    r.set_job_id(f.run.job_id);
    const v1::JobSpec& spec = *f.run.spec;
    v1::JobSpec& copy = *r.mutable_spec();
    copy.set_task(spec.task());
    *copy.mutable_args() = spec.args();
    if (!spec.kwargs().fields().empty()) *copy.mutable_kwargs() = spec.kwargs();
    copy.set_payload(spec.payload());
    if (f.run.deadline != absl::InfiniteFuture()) {
      r.set_deadline_unix_ns(absl::ToUnixNanos(f.run.deadline));
    }
    const size_t bytes = r.ByteSizeLong() + 8;  // + tag and length.
    if (bytes > kMaxWorkerFrameBytes - 64) {
      message.mutable_run()->RemoveLast();
      ReportFailure(
          slot, f.run, v1::ERROR_REASON_INVALID_INPUT,
          absl::InvalidArgumentError(fmt::format(
              "the job's input ({}) is too big for a worker process (at most "
              "{}); run it on threads or send less",
              MiB(bytes), MiB(kMaxWorkerFrameBytes))));
      continue;
    }
    if (message_bytes + bytes > kChunkFrameBytes && message.run_size() > 1) {
      internal::RunJob last = std::move(*message.mutable_run()->rbegin());
      message.mutable_run()->RemoveLast();
      AppendFrame(message, w.out.data());
      message.Clear();
      *message.add_run() = std::move(last);
      message_bytes = 0;
    }
    message_bytes += bytes;
    s.inflight.push_back(std::move(f));
  }
  s.pending.clear();
  if (message.run_size() > 0) AppendFrame(message, w.out.data());
  Flush(w);
}

void ProcessPoolExecutor::Flush(Worker& w) {
  if (!w.sock.valid()) return;
  if (!w.out.FlushTo(w.sock.get()).ok()) {
    return;  // It is gone: epoll reports the hang-up to the monitor.
  }
  const bool want_out = !w.out.empty();
  if (want_out == w.want_out) return;
  w.want_out = want_out;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (want_out ? uint32_t{EPOLLOUT} : 0u);
  ev.data.u64 = Key(w.gen, kTagSocket);
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, w.sock.get(), &ev);
}

void ProcessPoolExecutor::ArmEscalation(Worker& w) {
  if (w.escalation != 0) return;
  w.escalation = 1;
  w.escalate_at = absl::Now() + options_.cancel_grace;
}

void ProcessPoolExecutor::PingWorkers(absl::Time now) {
  for (auto& [gen, wp] : workers_) {
    Worker& w = *wp;
    if (w.state != WorkerState::kLive || w.unresponsive ||
        w.ping_deadline != absl::InfiniteFuture()) {
      continue;
    }
    internal::ToWorker message;
    message.set_ping(++w.ping);
    AppendFrame(message, w.out.data());
    Flush(w);
    w.ping_deadline = now + options_.ping_timeout;
  }
}

void ProcessPoolExecutor::OnPingOverdue(Worker& w, absl::Time now) {
  // This thread may have been late itself: the answer may be waiting.
  HandleWorkerSocket(w, EPOLLIN);
  if (w.state != WorkerState::kLive ||
      w.ping_deadline == absl::InfiniteFuture()) {
    return;  // Answered after all, or found dead.
  }
  std::string what = ProcessStateText(w.pid);
  if (what.empty()) what = "did not answer";
  // Kill first, so that it cannot take another job if it resumes; it keeps
  // its slot until it is seen dead (OnWorkerDied), when what it began is
  // known for sure.
  kill(-w.pid, SIGKILL);
  const Slot& s = slots_[w.slot];
  spdlog::error(
      "process pool: {} pid {} (slot {}, {}) {} and did not answer a liveness "
      "check within {} (worker-ping-timeout); killing it",
      IsSpare(w.slot) ? "spare worker" : "worker", w.pid, w.slot,
      s.inflight.empty()
          ? std::string("idle")
          : fmt::format("job {} of {} sent", s.inflight.front().run.job_id,
                        s.inflight.size()),
      what, absl::FormatDuration(options_.ping_timeout));
  w.unresponsive = true;
  w.ping_deadline = absl::InfiniteFuture();
  w.death_deadline = now + kExitStatusWait;
  w.escalation = 3;  // No cancel escalation on top: SIGKILL is sent.
  w.escalate_at = absl::InfiniteFuture();
  w.kill_reason = v1::ERROR_REASON_WORKER_CRASHED;
  w.kill_message = fmt::format(
      "the worker process (pid {}) {} while running the job, and did not "
      "answer a liveness check within {} (worker-ping-timeout): it was "
      "killed and replaced; the other jobs were not affected",
      w.pid, what, absl::FormatDuration(options_.ping_timeout));
  w.retired_as = "unresponsive";
}

void ProcessPoolExecutor::MaybeRetire(Worker& w) {
  if (w.state != WorkerState::kLive || w.retire.empty() ||
      !slots_[w.slot].inflight.empty()) {
    return;
  }
  w.retired_as = w.retire;
  spdlog::info("process pool: retiring worker pid {} after {} job(s): {}",
               w.pid, w.jobs_done, w.retire);
  DetachWorker(w);  // Closing its socket makes it exit.
}

void ProcessPoolExecutor::KillWorker(Worker& w, v1::ErrorReason reason,
                                     std::string message,
                                     std::string retired_as, int signal) {
  kill(-w.pid, signal);
  w.escalation = signal == SIGKILL ? 3 : 2;
  w.escalate_at = signal == SIGKILL ? absl::InfiniteFuture()
                                    : absl::Now() + options_.kill_grace;
  w.kill_reason = reason;
  w.kill_message = std::move(message);
  w.retired_as = std::move(retired_as);
  DetachWorker(w);
}

void ProcessPoolExecutor::OnWorkerDied(Worker& w) {
  // Everything it wrote before it died is in the socket: take it first.
  for (int i = 0; i < 1024 && w.state == WorkerState::kLive; ++i) {
    const ReadResult r = w.reader.ReadFrom(w.sock.get());
    if (r != ReadResult::kData) break;
    if (!ProcessFrames(w)) return;
  }
  if (w.state != WorkerState::kLive || !DrainRing(w)) return;
  kill(-w.pid, SIGKILL);  // In case only the socket broke.
  Slot& s = slots_[w.slot];
  if (w.unresponsive && !s.inflight.empty() &&
      w.ring.jobs_taken() == w.jobs_done) {
    // Killed for not answering, before it took its next job: none of the
    // jobs it was sent began, and it cannot run them any more. They all go
    // to its replacement, even at-most-once ones.
    spdlog::warn(
        "process pool: {} job(s) sent to unresponsive worker pid {} never "
        "began; they go to another worker",
        s.inflight.size(), w.pid);
    while (!s.inflight.empty()) {
      s.pending.push_front(std::move(s.inflight.back()));
      s.inflight.pop_back();
    }
  }
  if (w.retired_as.empty()) w.retired_as = "crashed";
  DetachWorker(w);
}

void ProcessPoolExecutor::OnCrashNotice(Worker& w, int sig) {
  if (!DrainRing(w)) return;  // What it finished before is not its fault.
  KillWorker(w, v1::ERROR_REASON_UNSPECIFIED, "", "crashed", SIGKILL);
  Bury(w, sig);  // The status it is about to have: killed by `sig`.
}

void ProcessPoolExecutor::DetachWorker(Worker& w) {
  Slot& s = slots_[w.slot];
  w.state = WorkerState::kGone;
  w.sock.reset();
  if (!s.inflight.empty()) {
    w.blamed = std::move(s.inflight.front());
    s.inflight.pop_front();
  }
  while (!s.inflight.empty()) {  // Not started: they go to the replacement.
    s.pending.push_front(std::move(s.inflight.back()));
    s.inflight.pop_back();
  }
  s.worker = 0;
  w.status_deadline = absl::Now() + kExitStatusWait;
  const bool crashed = w.retired_as != "max_jobs_per_worker" &&
                       w.retired_as != "out_of_memory" &&
                       w.retired_as != "fork_server_restart" &&
                       w.retired_as != "unresponsive";
  if (crashed && w.jobs_done == 0 && !w.blamed.has_value()) {
    // Died before doing anything: back off so a broken setup (say, an
    // address-space limit too small to start) does not fork in a loop.
    ++s.quick_deaths;
    s.respawn_at =
        absl::Now() +
        std::min(absl::Seconds(5),
                 absl::Milliseconds(10) * (1 << std::min(s.quick_deaths, 9)));
  }
  Refill(w.slot);
  if (w.orphaned && w.exited) Bury(w, -1);
}

void ProcessPoolExecutor::Bury(Worker& w, int status) {
  if (w.state != WorkerState::kGone ||
      w.status_deadline == absl::InfinitePast()) {
    return;
  }
  w.status_deadline = absl::InfinitePast();  // Buried: once only.
  if (w.escalation == 2)
    kill(-w.pid, SIGKILL);  // Its group, before forgetting it.
  w.escalate_at = absl::InfiniteFuture();
  std::string how;
  v1::ErrorReason reason = v1::ERROR_REASON_WORKER_CRASHED;
  if (status < 0) {
    how = "ended (its exit status is unknown: its fork server was replaced)";
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    how = "was killed by signal " + SignalName(sig);
    if (sig == SIGKILL && w.kill_reason == v1::ERROR_REASON_UNSPECIFIED) {
      reason = v1::ERROR_REASON_OUT_OF_MEMORY;
      how += ", which jobd did not send: most likely the kernel's OOM killer";
    } else if (sig == SIGXCPU) {
      how += ": it used up its CPU time limit (max_worker_cpu_seconds)";
    }
  } else if (WIFEXITED(status)) {
    how = fmt::format("exited with code {}", WEXITSTATUS(status));
  }
  if (w.blamed.has_value()) {
    const JobRun& run = w.blamed->run;
    if (w.blamed->cancelled) {
      ReportFailure(w.slot, run, CancelOutcomeReason(run),
                    absl::CancelledError(w.kill_message.empty()
                                             ? "stopped after cancellation"
                                             : w.kill_message));
    } else {
      if (w.kill_reason != v1::ERROR_REASON_UNSPECIFIED) {
        reason = w.kill_reason;
      }
      std::string message =
          !w.kill_message.empty()
              ? w.kill_message
              : fmt::format(
                    "the worker process (pid {}) {} while running "
                    "the job; the other jobs were not affected",
                    w.pid, how);
      spdlog::warn("process pool: job {} ({}): {}", run.job_id, run.task->name,
                   message);
      CountCrash(*run.task);
      ReportFailure(w.slot, run, reason,
                    reason == v1::ERROR_REASON_OUT_OF_MEMORY
                        ? absl::ResourceExhaustedError(message)
                        : absl::InternalError(message));
    }
  } else if (w.retired_as == "crashed") {
    spdlog::warn("process pool: idle worker pid {} {}", w.pid, how);
  }
  ++retired_[w.retired_as.empty() ? "crashed" : w.retired_as];
  gen_by_pid_.erase(w.pid);
  graves_.push_back(w.gen);
}

void ProcessPoolExecutor::CountCrash(const TaskDef& task) {
  if (options_.quarantine_after <= 0) return;
  if (++crash_streak_[task.name] < options_.quarantine_after) return;
  if (quarantined_.insert(task.name).second) {
    spdlog::error("process pool: {}", QuarantineMessage(task.name));
  }
}

void ProcessPoolExecutor::ReportDone(int slot, const JobRun& run,
                                     JobOutcome outcome) {
  Slot& s = slots_[slot];
  outcome.frees_slot = --s.chunk_left == 0;
  if (outcome.frees_slot) --busy_slots_;
  reports_.push_back({.job_id = run.job_id, .outcome = std::move(outcome)});
}

void ProcessPoolExecutor::ReportFailure(int slot, const JobRun& run,
                                        v1::ErrorReason reason,
                                        absl::Status status) {
  JobOutcome outcome;
  outcome.status = std::move(status);
  outcome.reason = reason;
  ReportDone(slot, run, std::move(outcome));
}

// ---- shutdown and stats ----------------------------------------------------

bool ProcessPoolExecutor::Shutdown(absl::Time deadline) {
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return true;
    shut_down_ = true;
    auto no_chunks = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return busy_slots_ == 0;
    };
    idle = mu_.AwaitWithDeadline(absl::Condition(&no_chunks), deadline);
    monitor_stop_ = true;
    // Whatever is left ends now, reported once like every other job.
    for (auto& [gen, w] : workers_) {
      if (w->state == WorkerState::kLive) DrainRing(*w);  // Finished ones.
      if (!w->exited) kill(-w->pid, SIGKILL);
      if (w->state == WorkerState::kLive) DetachWorker(*w);
    }
    for (auto& [gen, w] : workers_) Bury(*w, -1);
    for (size_t i = 0; i < slots_.size(); ++i) {
      while (!slots_[i].pending.empty()) {
        JobRun run = std::move(slots_[i].pending.front().run);
        slots_[i].pending.pop_front();
        ReportFailure(i, run, v1::ERROR_REASON_SHUTDOWN,
                      absl::UnavailableError("jobd shut down"));
      }
    }
  }
  Wake();
  if (monitor_.joinable()) monitor_.join();
  absl::MutexLock lock(&mu_);
  workers_.clear();
  if (fork_server_.pid > 0) {
    fork_server_.control.reset();  // It kills its workers and exits.
    pollfd p{.fd = fork_server_.pidfd.get(), .events = POLLIN};
    if (poll(&p, 1, 2000) <= 0) kill(fork_server_.pid, SIGKILL);
    waitpid(fork_server_.pid, nullptr, 0);
    fork_server_ = ForkServerProcess{};
  }
  return idle;
}

pid_t ProcessPoolExecutor::fork_server_pid() const {
  absl::MutexLock lock(&mu_);
  return fork_server_.pid;
}

std::vector<pid_t> ProcessPoolExecutor::worker_pids() const {
  absl::MutexLock lock(&mu_);
  std::vector<pid_t> pids;
  for (int i = 0; i < options_.workers; ++i) {
    if (slots_[i].worker != 0)
      pids.push_back(workers_.at(slots_[i].worker)->pid);
  }
  return pids;
}

void ProcessPoolExecutor::AddStats(v1::GetStatsResponse& stats) const {
  v1::ProcessPoolStats& p = *stats.mutable_process_pool();
  {
    absl::MutexLock lock(&mu_);
    p.set_fork_server_pid(fork_server_.pid);
    p.set_fork_server_restarts(fork_server_restarts_);
    p.set_workers_spawned(spawned_);
    for (const auto& [reason, count] : retired_) {
      (*p.mutable_retired())[reason] = count;
    }
    std::vector<std::string> quarantined(quarantined_.begin(),
                                         quarantined_.end());
    std::sort(quarantined.begin(), quarantined.end());
    for (std::string& t : quarantined) p.add_quarantined_tasks(std::move(t));
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      v1::WorkerStats& ws = IsSpare(i) ? *p.add_spares() : *p.add_workers();
      ws.set_slot(i);
      if (s.worker == 0) {
        ws.set_state("spawning");
        continue;
      }
      const Worker& w = *workers_.at(s.worker);
      ws.set_pid(w.pid);
      ws.set_state(!s.inflight.empty() ? "busy"
                   : !w.retire.empty() ? "retiring"
                   : !IsSpare(i)       ? "idle"
                   : w.ready           ? "spare"
                                       : "warming");
      ws.set_jobs_done(w.jobs_done);
      if (!s.inflight.empty()) {
        ws.set_current_job_id(s.inflight.front().run.job_id);
      }
      ws.mutable_started()->set_seconds(absl::ToUnixSeconds(w.started));
    }
  }
  for (auto* list : {p.mutable_workers(), p.mutable_spares()}) {
    for (v1::WorkerStats& ws : *list) {  // /proc, unlocked.
      if (ws.pid() > 0) ws.set_rss_bytes(ReadRssBytes(ws.pid()));
    }
  }
}

}  // namespace jobd
