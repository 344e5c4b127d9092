#include "workers/process/worker_process.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "jobd/internal/worker.pb.h"
#include "workers/executor/run_sync_task.h"
#include "workers/process/ipc.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

constexpr absl::Duration kProgressInterval = absl::Milliseconds(100);

// The worker's two threads take turns (leader/follower): one reads the
// socket while the other runs jobs. The reader that finds a job while no job
// runs hands the socket to the other thread and runs the job itself, so a
// job never waits for a wake-up between threads; while a job runs, the other
// thread reads on, applies cancels at once, answers the daemon's liveness
// pings, and rings the doorbell for results the runner left unannounced for
// kDoorbellDelay.
class Worker {
 public:
  Worker(const TaskRegistry& registry, ResultRing ring)
      : registry_(registry), ring_(std::move(ring)) {
    internal::FromWorker doorbell;
    doorbell.mutable_doorbell();
    AppendFrame(doorbell, doorbell_frame_);
  }

  // Runs one no-op job through the whole path (bind, run, serialize) without
  // committing it, and touches the ring, so that a fresh process (often a
  // spare that waits for a slot) takes its first page faults now rather than
  // on its first real job: a fault costs ~10 µs on some VMs and a fresh
  // worker takes a few hundred. Then tells the daemon it is ready.
  void WarmUp() {
    ring_.Prefault();
    internal::RunJob job;
    job.mutable_spec()->set_task("echo");
    job.mutable_spec()->add_args()->set_number_value(1);
    internal::JobDone done =
        Run(job, std::nullopt, std::make_shared<CancelToken>());
    scratch_.clear();
    done.AppendToString(&scratch_);
    internal::FromWorker ready;
    ready.mutable_ready();
    Send(ready);
  }

  [[noreturn]] void ThreadMain() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !reading_;
        };
        mu_.Await(absl::Condition(&free));
        reading_ = true;
      }
      ReadUntilThereIsWork();
      RunQueue();
    }
  }

 private:
  // As the reader: returns once this thread took the job of running the
  // queue (and gave up reading).
  void ReadUntilThereIsWork() {
    internal::ToWorker message;
    for (;;) {
      absl::StatusOr<bool> got = reader_.Next(message);
      if (!got.ok()) _exit(2);  // Only a broken daemon sends that.
      if (!*got) {
        WaitReadable();
        // Daemon gone (or closed us to retire): nothing left to do.
        if (reader_.ReadFrom(kWorkerSocketFd) != ReadResult::kData) _exit(0);
        continue;
      }
      if (message.ping() != 0) {  // Liveness check: answered at once.
        internal::FromWorker pong;
        pong.mutable_pong()->set_ping(message.ping());
        std::string frame;
        AppendFrame(pong, frame);
        Write(frame);
      }
      absl::MutexLock lock(&mu_);
      for (internal::CancelJob& c : *message.mutable_cancel()) {
        if (current_ != nullptr && current_id_ == c.job_id()) {
          current_->Cancel(static_cast<CancelReason>(c.reason()));
        } else {
          cancelled_[c.job_id()] = static_cast<CancelReason>(c.reason());
        }
      }
      for (internal::RunJob& run : *message.mutable_run()) {
        queue_.push_back({.job = std::move(run)});
      }
      if (message.run_size() > 0) queue_.back().ends_frame = true;
      if (!running_ && !queue_.empty()) {
        running_ = true;
        reading_ = false;  // The other thread reads from now on.
        return;
      }
    }
  }

  // Returns when the socket is readable (or broken), or at once when
  // read() may block: no result can wait unannounced then. Otherwise rings
  // the doorbell every kDoorbellDelay for results the runner committed
  // without ringing (it does not ring between jobs of a chunk).
  void WaitReadable() {
    const int delay_ms =
        static_cast<int>(absl::ToInt64Milliseconds(kDoorbellDelay));
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        // Only this thread fills the queue: while it is empty, the runner
        // rings after its job, so results cannot be left waiting.
        if (!unannounced_ && (!running_ || queue_.empty())) return;
      }
      pollfd p{.fd = kWorkerSocketFd, .events = POLLIN};
      if (poll(&p, 1, delay_ms) != 0) return;  // read() tells what it is.
      bool ring;
      {
        absl::MutexLock lock(&mu_);
        ring = std::exchange(unannounced_, false);
      }
      if (ring) Write(doorbell_frame_);
    }
  }

  void RunQueue() {
    bool committed = false;  // A result went into the ring unannounced.
    JobClock clock;          // The jobs run back to back.
    for (;;) {
      internal::RunJob job;
      auto token = std::make_shared<CancelToken>();
      // Cancelled before it began, and why (a timeout, a shutdown).
      std::optional<CancelReason> cancelled;
      bool ring = false;
      bool ends_frame = false;
      {
        absl::MutexLock lock(&mu_);
        if (committed) unannounced_ = true;
        committed = false;
        if (queue_.empty()) {
          if (!unannounced_) {
            running_ = false;
            current_ = nullptr;
            cancelled_.clear();  // Nothing left they could name.
            return;
          }
          unannounced_ = false;
          ring = true;  // Still the runner: nothing else writes the ring.
        } else {
          job = std::move(queue_.front().job);
          ends_frame = queue_.front().ends_frame;
          queue_.pop_front();
          ring_.JobTaken();  // From here on it may have begun.
          if (auto c = cancelled_.find(job.job_id()); c != cancelled_.end()) {
            cancelled = c->second;
            cancelled_.erase(c);
          }
          current_ = token;
          current_id_ = job.job_id();
        }
      }
      if (ring) {
        Write(doorbell_frame_);
        continue;
      }
      committed = Commit(Run(job, cancelled, token, &clock));
      if (committed && ends_frame) {
        // The end of a frame: the daemon takes these results and sends
        // more while this thread runs what is queued (pipelining).
        Write(doorbell_frame_);
        committed = false;
      }
    }
  }

  // Hands `done` to the daemon; true if it waits for a doorbell.
  bool Commit(internal::JobDone done) {
    scratch_.clear();
    done.AppendToString(&scratch_);
    auto wake = [this] { Write(doorbell_frame_); };
    if (scratch_.size() <= ring_.max_entry()) {
      ring_.Append(ResultRing::kResult, scratch_, wake);
      if (ring_.used() < ring_.max_entry()) return true;
      wake();  // A quarter full: let the daemon catch up.
      return false;
    }
    // Announced in the ring first, so it keeps its place among the results.
    ring_.Append(ResultRing::kResultOnSocket, {}, wake);
    internal::FromWorker message;
    *message.mutable_done() = std::move(done);
    Send(message);  // Also the doorbell.
    return false;
  }

  internal::JobDone Run(internal::RunJob& job,
                        std::optional<CancelReason> cancelled,
                        const std::shared_ptr<CancelToken>& token,
                        JobClock* clock = nullptr) {
    const TaskDef* task = registry_.Find(job.spec().task());
    if (cancelled.has_value()) {
      // Its reason as for a run it stopped: a timeout that came while the
      // job was queued here is a timeout.
      return Done(
          job.job_id(), absl::CancelledError("cancelled before start"),
          *cancelled == CancelReason::kTimeout    ? v1::ERROR_REASON_TIMEOUT
          : *cancelled == CancelReason::kShutdown ? v1::ERROR_REASON_SHUTDOWN
                                                  : v1::ERROR_REASON_CANCELLED);
    }
    if (task == nullptr) {
      return Done(job.job_id(),
                  absl::InternalError("task '" + job.spec().task() +
                                      "' is not registered in the worker"),
                  v1::ERROR_REASON_TASK_ERROR);
    }
    auto spec = std::make_shared<v1::JobSpec>(std::move(*job.mutable_spec()));
    absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(*task, spec);
    if (!args.ok()) {
      return Done(job.job_id(), args.status(), v1::ERROR_REASON_INVALID_INPUT);
    }
    JobRun run;
    run.job_id = job.job_id();
    run.task = task;
    run.args = std::make_shared<const TaskArgs>(*std::move(args));
    run.cancel = token;
    if (job.deadline_unix_ns() != 0) {
      run.deadline = absl::FromUnixNanos(job.deadline_unix_ns());
    }
    absl::Time last_progress = absl::InfinitePast();
    internal::FromWorker progress;
    JobOutcome outcome = RunSyncTask(
        run,
        [&](double fraction, std::string_view message) {
          const absl::Time now = absl::Now();
          if (now - last_progress < kProgressInterval) return;
          last_progress = now;
          internal::JobProgress& p = *progress.mutable_progress();
          p.set_job_id(run.job_id);
          p.set_fraction(fraction);
          p.set_message(ClipUtf8(message, kMaxProgressMessageBytes));
          Send(progress);
        },
        clock,
        [&](v1::OutputStream stream, std::string_view bytes) {
          internal::FromWorker out;
          internal::JobOutput& o = *out.mutable_output();
          o.set_job_id(run.job_id);
          o.set_stream(stream);
          o.set_data(ClipUtf8(bytes, kMaxLogLineBytes));
          Send(out);
        });
    internal::JobDone done;
    if (outcome.status.ok()) {
      done.set_job_id(job.job_id());
      done.set_ok(true);
      // Strings the daemon can parse (it would fail the frame otherwise).
      MakeValidUtf8(&outcome.output.value);
      *done.mutable_value() = std::move(outcome.output.value);
      *done.mutable_payload() = std::move(outcome.output.payload);
      if (!outcome.output.results.empty()) {  // A batch's.
        MakeValidUtf8(&outcome.output.results);
        done.set_results(std::move(outcome.output.results));
        for (v1::CallError& e : outcome.output.call_errors) {
          MakeValidUtf8(e.mutable_type());
          MakeValidUtf8(e.mutable_message());
          MakeValidUtf8(e.mutable_traceback());
          *done.add_call_errors() = std::move(e);
        }
      }
    } else {
      done = Done(job.job_id(), outcome.status, outcome.reason);
    }
    done.set_cpu_ns(absl::ToInt64Nanoseconds(outcome.cpu_time));
    done.set_wall_ns(absl::ToInt64Nanoseconds(outcome.wall_time));
    return done;
  }

  // The running thread's frames.
  void Send(const internal::FromWorker& message) {
    scratch_.clear();
    AppendFrame(message, scratch_);
    Write(scratch_);
  }

  void Write(std::string_view frame) {
    absl::MutexLock lock(&write_mu_);
    if (!WriteAll(kWorkerSocketFd, frame).ok()) _exit(0);  // Daemon gone.
  }

  static internal::JobDone Done(uint64_t job_id, const absl::Status& status,
                                v1::ErrorReason reason) {
    internal::JobDone done;
    done.set_job_id(job_id);
    done.set_code(static_cast<int>(status.code()));
    const absl::string_view message = status.message();
    done.set_message(ClipUtf8(std::string_view(message.data(), message.size()),
                              kMaxErrorMessageBytes));
    done.set_reason(reason);
    return done;
  }

  const TaskRegistry& registry_;
  FrameReader reader_{kMaxWorkerFrameBytes};  // The reading thread's.
  ResultRing ring_;                           // The running thread's.
  std::string scratch_;                       // The running thread's.
  std::string doorbell_frame_;                // Immutable.
  absl::Mutex write_mu_;                      // One frame at a time.

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // A thread owns the socket.
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // A thread runs the queue.
  // Results are in the ring that no doorbell announced yet.
  bool unannounced_ ABSL_GUARDED_BY(mu_) = false;
  struct Queued {
    internal::RunJob job;
    bool ends_frame = false;  // The last job of the frame it came in.
  };
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, CancelReason> cancelled_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<CancelToken> current_ ABSL_GUARDED_BY(mu_);
  uint64_t current_id_ ABSL_GUARDED_BY(mu_) = 0;
};

// ---- crash notice ----------------------------------------------------------
// A fatal signal (a segfault in a task, abort(), ...) is announced to the
// daemon with a Crashing frame before it kills the process: tearing down a
// process takes milliseconds on some machines, and the daemon can blame the
// job and hand its slot to a spare worker meanwhile. The handler only
// write()s a frame prepared in advance, then lets the signal kill the
// process with its default action (SA_RESETHAND), so the exit status stays
// the true one. It runs on an alternate stack, so a stack overflow is
// announced too.

constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS,  SIGILL,
                                 SIGFPE,  SIGABRT, SIGSYS};
struct CrashFrame {
  char bytes[32];
  size_t size = 0;
};
CrashFrame crash_frames[NSIG];  // Written before the handlers are installed.

void OnFatalSignal(int sig) {
  if (sig > 0 && sig < NSIG && crash_frames[sig].size > 0) {
    (void)!write(kWorkerSocketFd, crash_frames[sig].bytes,
                 crash_frames[sig].size);
  }
  raise(sig);  // Default action now; delivered when the handler returns.
}

// Gives the calling thread an alternate signal stack (leaked: the process
// ends with the thread).
void UseAltStack() {
  stack_t ss{};
  ss.ss_size = 64 * 1024;
  ss.ss_sp = new char[ss.ss_size];
  sigaltstack(&ss, nullptr);
}

void InstallCrashNotice() {
  for (int sig : kFatalSignals) {
    internal::FromWorker message;
    message.mutable_crashing()->set_signal(sig);
    std::string frame;
    AppendFrame(message, frame);
    if (frame.size() > sizeof(crash_frames[sig].bytes)) continue;
    std::memcpy(crash_frames[sig].bytes, frame.data(), frame.size());
    crash_frames[sig].size = frame.size();
    struct sigaction sa {};
    sa.sa_handler = OnFatalSignal;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
  }
  UseAltStack();
}

}  // namespace

void RunWorkerProcess(const TaskRegistry& registry, ResultRing ring) {
  InstallCrashNotice();
  static Worker* worker =
      new Worker(registry, std::move(ring));  // Lives until _exit.
  worker->WarmUp();
  std::thread([] {
    UseAltStack();
    worker->ThreadMain();
  }).detach();
  worker->ThreadMain();
}

}  // namespace jobd
