// Task SDK: everything a task author writes against.
//
// A task is a named function that receives its validated arguments and a
// TaskContext (cancel token, deadline, progress reporter, log lines) and
// returns a
// TaskOutput or an error status. Tasks are registered in a TaskRegistry
// (task_registry.h); executors run them.
//
// Thread-safety: CancelToken is fully thread-safe. TaskArgs and TaskDef are
// immutable after construction and may be shared between threads. A
// TaskContext belongs to the one thread (or coroutine) running the task.
#ifndef JOBD_WORKERS_SDK_TASK_H_
#define JOBD_WORKERS_SDK_TASK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd {

// Why a running job was asked to stop.
enum class CancelReason : int { kNone = 0, kCancelled, kTimeout, kShutdown };

// Set once by the scheduler, polled (or waited on) by the task.
class CancelToken {
 public:
  // Requests cancellation; the first reason wins. Returns true if this call
  // set it.
  bool Cancel(CancelReason reason);
  bool cancelled() const {
    return reason_.load(std::memory_order_acquire) != 0;
  }
  CancelReason reason() const {
    return static_cast<CancelReason>(reason_.load(std::memory_order_acquire));
  }
  // Blocks up to `timeout`; returns true as soon as the token is cancelled.
  bool WaitFor(absl::Duration timeout);

 private:
  std::atomic<int> reason_{0};
  absl::Mutex mu_;
};

// Argument types a task parameter can declare.
enum class ParamType { kAny, kBool, kInt, kNumber, kString, kList, kObject };
const char* ParamTypeName(ParamType type);

struct TaskParam {
  std::string name;
  ParamType type = ParamType::kAny;
  bool required = true;
  google::protobuf::Value default_value;  // Used when !required and absent.
  std::string help;
};

struct TaskDef;

// Shorthands for declaring parameters and their defaults.
TaskParam Param(std::string name, ParamType type, std::string help);
TaskParam OptionalParam(std::string name, ParamType type,
                        google::protobuf::Value default_value,
                        std::string help);
google::protobuf::Value StringValue(std::string s);
google::protobuf::Value NumberValue(double d);
google::protobuf::Value BoolValue(bool b);
google::protobuf::Value NullValue();

// A task's validated input: the job's spec (shared, immutable: nothing is
// copied) and its parameters bound in declaration order (positional args,
// then keyword args, then defaults) as pointers into the spec or into the
// task's defaults. Variadic tasks read the raw args()/kwargs().
class TaskArgs {
 public:
  using Values = google::protobuf::RepeatedPtrField<google::protobuf::Value>;
  // The bound parameters: inline for one (no allocation per waiting job).
  using Bound = absl::InlinedVector<const google::protobuf::Value*, 1>;

  // No task, no spec: every accessor sees empty input.
  TaskArgs();
  // `bound[i]` is the value of task->params[i] or nullptr; the pointers point
  // into *spec or into *task, which must outlive this object (the registry
  // does; `spec` is shared).
  TaskArgs(const TaskDef* task, std::shared_ptr<const v1::JobSpec> spec,
           Bound bound);

  // Bound parameter, or nullptr if it has no value (optional, no default).
  const google::protobuf::Value* Find(std::string_view name) const;
  // Typed accessors for declared parameters; the binder has checked types,
  // so a mismatch here is a programming error in the task (crashes).
  int64_t Int(std::string_view name) const;
  double Number(std::string_view name) const;
  const std::string& String(std::string_view name) const;
  bool Bool(std::string_view name) const;

  const Values& args() const { return spec_->args(); }
  const google::protobuf::Struct& kwargs() const { return spec_->kwargs(); }
  const std::string& payload() const { return spec_->payload(); }
  // The whole spec, as the client sent it (its task name included).
  const v1::JobSpec& spec() const { return *spec_; }

 private:
  const google::protobuf::Value& Get(std::string_view name) const;

  const TaskDef* task_ = nullptr;
  std::shared_ptr<const v1::JobSpec> spec_;
  Bound bound_;
};

struct TaskOutput {
  google::protobuf::Value value;
  std::string payload;
  // A batch's (the spec's `calls`; TaskDef::takes_calls): a JSON array of
  // one result per call, in order (null for a failed call), and the calls
  // that failed. `value` and `payload` stay empty then.
  std::string results;
  std::vector<v1::CallError> call_errors;
};

// Receives progress reports of one job; implemented by executors.
using ProgressFn = std::function<void(double fraction, std::string_view msg)>;
// Receives output of one job (log lines); implemented by executors.
using OutputFn =
    std::function<void(v1::OutputStream stream, std::string_view bytes)>;

// What a running task sees of its job.
class TaskContext {
 public:
  TaskContext(const TaskArgs& args, CancelToken& cancel, absl::Time deadline,
              ProgressFn progress, OutputFn output = {})
      : args_(args),
        cancel_(cancel),
        deadline_(deadline),
        progress_(std::move(progress)),
        output_(std::move(output)) {}

  const TaskArgs& args() const { return args_; }
  // True once the job was cancelled, timed out or the daemon is stopping.
  // Long-running tasks poll this and return CancelledError() promptly.
  bool cancelled() const { return cancel_.cancelled(); }
  CancelReason cancel_reason() const { return cancel_.reason(); }
  // When the job times out (absl::InfiniteFuture() if never).
  absl::Time deadline() const { return deadline_; }
  // Sleeps up to `d`; returns false (early) if the job was cancelled.
  bool SleepFor(absl::Duration d) { return !cancel_.WaitFor(d); }
  // Reports progress: fraction in 0..1 (negative if unknown) and a message.
  void ReportProgress(double fraction, std::string_view message) const {
    if (progress_) progress_(fraction, message);
  }
  // Writes a line to the job's output, next to what its programs write
  // (`jobctl logs`, README: Job output): made valid UTF-8, cut to 4 KiB,
  // one line per call. Never blocks for long; what jobd cannot keep is
  // dropped (the oldest first).
  void Log(std::string_view line) const {
    if (output_) output_(v1::OUTPUT_STREAM_LOG, line);
  }

 private:
  const TaskArgs& args_;
  CancelToken& cancel_;
  const absl::Time deadline_;
  const ProgressFn progress_;
  const OutputFn output_;
};

// A synchronous implementation: runs on a thread-pool thread or in a worker
// process. Returns the output, or an error (the job FAILS with TASK_ERROR and
// the status message). Must not throw; a thrown exception is caught by the
// executor and fails the job.
using SyncTaskFn = std::function<absl::StatusOr<TaskOutput>(TaskContext&)>;

// An asynchronous implementation (workers/async_task.h): a C++20 coroutine
// run by the reactor. Declared here, defined there, so that this header
// stays free of Asio.
struct AsyncTask;

// Checks a job's bound arguments beyond their types, at admission (the job
// is REJECTED with this status, whose message names the field). For rules
// that depend on the daemon's configuration, such as exec's allowlist.
using ArgsValidator = std::function<absl::Status(const TaskArgs&)>;

// A task definition, immutable once registered. A task has a sync `run`, an
// async implementation, or both (the reactor runs the async one, the thread
// and process pools the sync one).
struct TaskDef {
  std::string name;
  std::string description;
  // Kind assumed when a spec does not say (JOB_KIND_UNSPECIFIED there).
  v1::JobKind default_kind = v1::JOB_KIND_IO_BOUND;
  std::vector<TaskParam> params;
  // Accepts any positional and keyword arguments (params then only document).
  bool variadic = false;
  // Unsafe inside the daemon (may crash or corrupt it): runs only in the
  // process pool, never on the thread pool, whatever the spec asks.
  bool needs_isolation = false;
  // `run` also runs batches: a spec whose `calls` holds many calls' arguments
  // (args and kwargs empty), answered with TaskOutput::results. The daemon
  // checks every call against `params` first. Only these tasks' jobs may be
  // batches.
  bool takes_calls = false;
  // With takes_calls: `run` also runs flat batches (the spec's flat_calls:
  // `calls` holds each call's only argument instead of its argument list).
  bool takes_flat_calls = false;
  // Returns at once: about a microsecond, no I/O, no waiting, no progress
  // or output, its cost growing at most with its spec's size (`echo`). On
  // the thread pool, a job of it whose spec is up to 64 KiB takes no slot
  // and is not handed to a pool thread on its own: the jobs of it started
  // together run one after another on the daemon thread that started them
  // (a few of a request's, or any on a pool thread) or on one pool thread
  // as one batch. Once it runs it cannot be stopped (a cancel or a timeout
  // drops its result).
  bool trivial = false;
  // Longest a job of this task may run: a job that asks for no timeout or
  // a longer one gets this one. Zero: none.
  absl::Duration max_timeout = absl::ZeroDuration();
  // An async task that only waits for a program of its own (a command
  // task): its CPU-bound jobs are queued and counted on the process pool's
  // lane, one slot each while the program runs, but run on the reactor.
  bool holds_pool_slot = false;
  SyncTaskFn run;
  std::shared_ptr<const AsyncTask> async;
  ArgsValidator validate;  // Optional.

  bool has_sync() const { return static_cast<bool>(run); }
  bool has_async() const { return async != nullptr; }
};

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_TASK_H_
