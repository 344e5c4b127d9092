// Async task SDK: what the author of a task for the coroutine reactor
// (workers/reactor.h) writes against.
//
// An async implementation is a C++20 coroutine on Asio 1.22 (standalone),
// or, for a task that only waits and then answers, a TimerTask (below):
//
//   registry.Add({.name = "wait.tick", .default_kind = v1::JOB_KIND_IO_BOUND,
//                 .params = {...},
//                 .async = MakeAsyncTask(
//                     [](AsyncTaskContext& ctx)
//                         -> asio::awaitable<absl::StatusOr<TaskOutput>> {
//                       if (!co_await ctx.SleepFor(absl::Seconds(1))) {
//                         co_return absl::CancelledError("cancelled");
//                       }
//                       co_return TaskOutput{};
//                     })});
//
// Rules:
//  * It runs on one of the reactor's event-loop threads, which many
//    thousands of other jobs share: it must never block. Anything blocking
//    goes through ctx.RunBlocking(fn), which runs fn on the reactor's
//    blocking-work threads and resumes the coroutine with its result.
//  * Cancellation (a cancel request, the job's timeout, shutdown): the
//    operation the coroutine awaits is aborted, and from then on every
//    co_await throws asio::system_error(asio::error::operation_aborted), so
//    a task that just awaits ends by itself at its next await; the reactor
//    reports it CANCELLED / TIMEOUT / SHUTDOWN from ctx.cancel_reason(). A
//    task that must clean up first (kill a child process, say) catches it,
//    or does `co_await asio::this_coro::throw_if_cancelled(false)` and looks
//    at ctx.cancelled(); cleanup awaits then work normally. Its result after
//    cancellation is dropped (the job ended when it was cancelled).
//  * Exceptions that escape the coroutine fail the job (TASK_ERROR).
//
// Thread-safety: an AsyncTaskContext belongs to its job's coroutine and is
// used on its loop's thread only; it outlives the coroutine (the reactor
// owns it).
#ifndef JOBD_WORKERS_SDK_ASYNC_TASK_H_
#define JOBD_WORKERS_SDK_ASYNC_TASK_H_

#include <functional>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "asio/thread_pool.hpp"
#include "asio/use_awaitable.hpp"
#include "workers/sdk/task.h"

namespace jobd {

class HttpClient;  // workers/http_client.h

// What one event loop of the reactor offers its jobs.
class LoopServices {
 public:
  virtual ~LoopServices() = default;
  virtual asio::io_context& io() = 0;
  // Threads for blocking work (shared by every loop).
  virtual asio::thread_pool& blocking() = 0;
  // This loop's HTTP client (libcurl multi), made on first use.
  virtual HttpClient& http() = 0;
  // Reports progress of job `job_id`.
  virtual void ReportProgress(uint64_t job_id, double fraction,
                              std::string_view message) = 0;
  // Adds to job `job_id`'s output (its program's stdout/stderr, its log
  // lines; README: Job output). Never blocks for long.
  virtual void WriteOutput(uint64_t job_id, v1::OutputStream stream,
                           std::string_view bytes) {}
};

class AsyncTaskContext {
 public:
  // The reactor makes one per job; it lives as long as the job's coroutine.
  AsyncTaskContext(uint64_t job_id, const TaskArgs& args, CancelToken& cancel,
                   absl::Time deadline, LoopServices& loop)
      : job_id_(job_id),
        args_(args),
        cancel_(cancel),
        deadline_(deadline),
        loop_(loop) {}

  const TaskArgs& args() const { return args_; }
  // True once the job was cancelled, timed out or the daemon is stopping.
  bool cancelled() const { return cancel_.cancelled(); }
  CancelReason cancel_reason() const { return cancel_.reason(); }
  // When the job times out (absl::InfiniteFuture() if never).
  absl::Time deadline() const { return deadline_; }
  // Reports progress: fraction in 0..1 (negative if unknown) and a message.
  void ReportProgress(double fraction, std::string_view message) const {
    loop_.ReportProgress(job_id_, fraction, message);
  }
  // Writes a line to the job's output (TaskContext::Log).
  void Log(std::string_view line) const {
    loop_.WriteOutput(job_id_, v1::OUTPUT_STREAM_LOG, line);
  }
  // Adds bytes to the job's output as one of its streams (what a program
  // it runs writes).
  void WriteOutput(v1::OutputStream stream, std::string_view bytes) const {
    loop_.WriteOutput(job_id_, stream, bytes);
  }
  // WriteOutput as a function that may outlive this context (it stays on
  // this loop's thread): for reads that may complete after the task.
  OutputFn OutputWriter() const {
    return [&loop = loop_, id = job_id_](v1::OutputStream stream,
                                         std::string_view bytes) {
      loop.WriteOutput(id, stream, bytes);
    };
  }

  asio::io_context& io() { return loop_.io(); }
  HttpClient& http() { return loop_.http(); }

  // Waits `d`; false if the job was cancelled before or meanwhile (then the
  // next co_await throws, see above).
  asio::awaitable<bool> SleepFor(absl::Duration d);

  // Runs `fn()` on a blocking-work thread and resumes on this job's loop
  // with its result (which must be default-constructible). The call itself
  // cannot be interrupted: a cancelled job waits for it to return.
  template <typename Fn>
  asio::awaitable<std::invoke_result_t<Fn&>> RunBlocking(Fn fn) {
    using Result = std::invoke_result_t<Fn&>;
    co_return co_await asio::co_spawn(
        loop_.blocking(),
        [fn = std::move(fn)]() mutable -> asio::awaitable<Result> {
          co_return fn();
        },
        asio::use_awaitable);
  }

 private:
  // Kept small: one per waiting job.
  const uint64_t job_id_;
  const TaskArgs& args_;
  CancelToken& cancel_;
  const absl::Time deadline_;
  LoopServices& loop_;
};

using AsyncTaskFn = std::function<asio::awaitable<absl::StatusOr<TaskOutput>>(
    AsyncTaskContext&)>;

// The other form of async task, for tasks whose whole job is one wait and
// then a result (Python's threading.Timer, loop.call_later): no coroutine.
// The reactor keeps a waiting timer task as an entry in its loop's deadline
// heap, about 1 KB less than a coroutine frame, a timer operation and their
// cancellation state (bench/README.md "reactor"). A cancel, timeout or
// shutdown ends it at once with the token's reason, and `then` never runs.
// Both functions run on the loop thread and must not block; the context
// `then` gets lives for that call only (no awaits, nothing kept).
struct TimerTask {
  // How long the job waits (zero or negative: not at all), or an error that
  // fails the job at once.
  std::function<absl::StatusOr<absl::Duration>(const TaskArgs&)> delay;
  // The job's result once the wait is over.
  std::function<absl::StatusOr<TaskOutput>(AsyncTaskContext&)> then;
};

struct AsyncTask {
  AsyncTaskFn run;  // A coroutine, or, when empty:
  TimerTask timer;

  bool valid() const { return run || (timer.delay && timer.then); }
};

inline std::shared_ptr<const AsyncTask> MakeAsyncTask(AsyncTaskFn fn) {
  return std::make_shared<const AsyncTask>(AsyncTask{.run = std::move(fn)});
}

inline std::shared_ptr<const AsyncTask> MakeTimerTask(TimerTask timer) {
  return std::make_shared<const AsyncTask>(
      AsyncTask{.timer = std::move(timer)});
}

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_ASYNC_TASK_H_
