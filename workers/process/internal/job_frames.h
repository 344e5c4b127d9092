// Internal to the process pool (not part of its public API): the daemon's
// side of the worker protocol's job messages (proto/jobd/internal/
// worker.proto): a chunk's jobs as RunJob frames, cancel and ping frames,
// and a worker's JobDone as the JobOutcome the scheduler gets.
//
// A chunk may be bigger than a frame may be: its jobs go in frames of at
// most kChunkFrameBytes, a single job up to the worker's frame limit
// (kMaxWorkerFrameBytes; a bigger one is refused with an error naming both
// sizes).
//
// Thread-safety: none; a RunFrameWriter belongs to the thread that fills
// it (the pool's, under its mutex). Ownership: the writer appends to a
// buffer it does not own (the worker's OutBuffer), which must outlive it.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_JOB_FRAMES_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_JOB_FRAMES_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "jobd/internal/worker.pb.h"
#include "workers/executor/executor.h"

namespace jobd {

// A chunk's jobs go to a worker in frames of about this size at most.
inline constexpr size_t kChunkFrameBytes = 16u << 20;

// Appends the RunJob frames of a chunk's jobs to `out`.
class RunFrameWriter {
 public:
  struct Limits {
    size_t frame_bytes = kChunkFrameBytes;  // Jobs share frames up to this.
    size_t max_frame_bytes;                 // The worker's frame limit.
  };
  explicit RunFrameWriter(std::string& out);
  // With other limits (tests).
  RunFrameWriter(std::string& out, Limits limits)
      : out_(out), limits_(limits) {}
  RunFrameWriter(const RunFrameWriter&) = delete;
  RunFrameWriter& operator=(const RunFrameWriter&) = delete;

  // Adds `run` (its task name, arguments, payload and deadline). An
  // InvalidArgument error, the job's failure, if its input is too big for
  // a worker process; nothing is added then.
  absl::Status Add(const JobRun& run);
  // Appends the frame still being filled, if any. Call once, at the end.
  void Finish();

 private:
  std::string& out_;
  const Limits limits_;
  // The frame being filled: a ToWorker's bytes, its RunJob fields written
  // by hand from the runs' specs (copying each job's arguments into a
  // generated RunJob, to serialize and free again, took ~10% of the pool
  // thread's time on tiny jobs), and its count of runs.
  std::string frame_;
  size_t frame_runs_ = 0;
  size_t frame_bytes_ = 0;  // Of its runs, counted as the limits count.
};

// Appends a frame asking the worker to cancel `job_id` for `reason`.
void AppendCancelFrame(uint64_t job_id, CancelReason reason, std::string& out);
// Appends a liveness ping numbered `ping`.
void AppendPingFrame(uint64_t ping, std::string& out);

// The outcome a worker reported for a job; takes the value and payload out
// of `done`.
JobOutcome OutcomeFromDone(internal::JobDone& done);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_JOB_FRAMES_H_
