#include "workers/process/internal/job_frames.h"

#include <utility>

#include "fmt/format.h"
#include "workers/process/internal/process_info.h"
#include "workers/process/ipc.h"
#include "workers/process/worker_process.h"

namespace jobd {

RunFrameWriter::RunFrameWriter(std::string& out)
    : RunFrameWriter(out, {.frame_bytes = kChunkFrameBytes,
                           .max_frame_bytes = kMaxWorkerFrameBytes}) {}

absl::Status RunFrameWriter::Add(const JobRun& run) {
  internal::RunJob& r = *message_.add_run();
  r.set_job_id(run.job_id);
  const v1::JobSpec& spec = *run.spec;
  v1::JobSpec& copy = *r.mutable_spec();
  copy.set_task(run.task->name);
  *copy.mutable_args() = spec.args();
  if (!spec.kwargs().fields().empty()) *copy.mutable_kwargs() = spec.kwargs();
  copy.set_payload(spec.payload());
  if (!spec.calls().empty()) {  // A batch.
    copy.set_calls(spec.calls());
    copy.set_flat_calls(spec.flat_calls());
  }
  if (run.deadline != absl::InfiniteFuture()) {
    r.set_deadline_unix_ns(absl::ToUnixNanos(run.deadline));
  }
  const size_t bytes = r.ByteSizeLong() + 8;  // + tag and length.
  if (bytes > limits_.max_frame_bytes - 64) {
    message_.mutable_run()->RemoveLast();
    return absl::InvalidArgumentError(fmt::format(
        "the job's input ({}) is too big for a worker process (at most {}); "
        "run it on threads or send less",
        MiB(bytes), MiB(limits_.max_frame_bytes)));
  }
  if (message_bytes_ + bytes > limits_.frame_bytes && message_.run_size() > 1) {
    internal::RunJob last = std::move(*message_.mutable_run()->rbegin());
    message_.mutable_run()->RemoveLast();
    AppendFrame(message_, out_);
    message_.Clear();
    *message_.add_run() = std::move(last);
    message_bytes_ = 0;
  }
  message_bytes_ += bytes;
  return absl::OkStatus();
}

void RunFrameWriter::Finish() {
  if (message_.run_size() > 0) AppendFrame(message_, out_);
  message_.Clear();
  message_bytes_ = 0;
}

void AppendCancelFrame(uint64_t job_id, CancelReason reason, std::string& out) {
  internal::ToWorker message;
  internal::CancelJob& c = *message.add_cancel();
  c.set_job_id(job_id);
  c.set_reason(static_cast<int>(reason));
  AppendFrame(message, out);
}

void AppendPingFrame(uint64_t ping, std::string& out) {
  internal::ToWorker message;
  message.set_ping(ping);
  AppendFrame(message, out);
}

JobOutcome OutcomeFromDone(internal::JobDone& done) {
  JobOutcome outcome;
  if (done.ok()) {
    outcome.output.value = std::move(*done.mutable_value());
    outcome.output.payload = std::move(*done.mutable_payload());
    if (!done.results().empty()) {  // A batch's.
      outcome.output.results = std::move(*done.mutable_results());
      outcome.output.call_errors.reserve(done.call_errors_size());
      for (v1::CallError& e : *done.mutable_call_errors()) {
        outcome.output.call_errors.push_back(std::move(e));
      }
    }
  } else {
    outcome.status = absl::Status(static_cast<absl::StatusCode>(done.code()),
                                  done.message());
    outcome.reason = done.reason();
  }
  outcome.cpu_time = absl::Nanoseconds(done.cpu_ns());
  outcome.wall_time = absl::Nanoseconds(done.wall_ns());
  return outcome;
}

}  // namespace jobd
