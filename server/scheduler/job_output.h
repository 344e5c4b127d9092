// JobOutputs: what running jobs write (their programs' stdout and stderr,
// their tasks' log lines), kept per job in memory for `jobctl logs` and the
// StreamJobOutput RPC (README: Job output). Not journaled: a restart
// forgets it.
//
// Each job's output is one byte sequence, all streams together, in the
// order written, every byte at a fixed offset from the job's first start.
// What is kept is bounded per job (per_job_bytes) and for all jobs
// (total_bytes): on overflow the oldest bytes go first (the tail is kept),
// and a reader asking for them is told how many it missed (dropped). Over
// the total, the output of ended jobs goes first, oldest ended first, then
// the head of the job that writes. Writers never wait: a reader that falls
// behind loses its place, never slows a task down.
//
// A job's output opens when it starts (Open; the scheduler opens it at the
// job's first write), takes appends until it ends (End; later appends are
// dropped) and is forgotten with the job (Forget).
// A job that wrote nothing holds no entry once it ended: what is held per
// job beyond its bytes is bounded by the running and retained jobs.
// Readers wait for more with AddWaiter: a one-shot callback, run once the
// output grows past an offset (by Append, unlocked) or ends (returned by
// End to its caller).
//
// Thread-safety: every method is thread-safe (one internal mutex, a leaf:
// nothing is called with it held). Callbacks are returned, never run,
// by the methods that release them, so their callers run them unlocked.
#ifndef JOBD_SERVER_SCHEDULER_JOB_OUTPUT_H_
#define JOBD_SERVER_SCHEDULER_JOB_OUTPUT_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd {

struct OutputLimits {
  size_t per_job_bytes = 1 << 20;  // Kept per job; 0: output not kept.
  size_t total_bytes = 64 << 20;   // Kept for all jobs together.
};

struct OutputPiece {
  uint64_t offset = 0;
  v1::OutputStream stream = v1::OUTPUT_STREAM_UNSPECIFIED;
  std::string data;
};

// What Read found.
struct OutputRead {
  std::vector<OutputPiece> pieces;  // In order, from `offset` on.
  uint64_t dropped = 0;             // Bytes from the offset asked for not kept.
  uint64_t next_offset = 0;  // After the last piece (or where it ends now).
  bool ended = false;        // The job ended and nothing follows next_offset.
  // Cluster mode: the job was shared, so it runs (or ran) on the node that
  // took it, whose output that is (Scheduler::ReadOutput); its create
  // time (unix ns) names it there.
  bool shared = false;
  int64_t create_ns = 0;

  // Nothing new: no piece, nothing dropped, not ended.
  bool nothing() const { return pieces.empty() && dropped == 0 && !ended; }
  // As a StreamJobOutput message (the pieces moved into it).
  v1::StreamJobOutputResponse TakeResponse();
};

// A StreamJobOutput message with nothing new (OutputRead::nothing, as sent
// by another node).
bool NothingNew(const v1::StreamJobOutputResponse& r);

class JobOutputs {
 public:
  using Callback = std::function<void()>;
  // Bytes a piece costs besides its data (its header, its queue slot).
  static constexpr size_t kPieceOverhead = 64;

  explicit JobOutputs(OutputLimits limits) : limits_(limits) {}

  // Live reload: lower limits apply from the next append.
  void SetLimits(OutputLimits limits);
  // A run of job `id` starts: its output is taken from now on (again, for
  // a run after a retry; nothing kept before is dropped). The scheduler
  // opens a job's output at its first write, not at every start.
  void Open(uint64_t id);
  // Adds output of job `id`; dropped if it is not open. False (nothing
  // done) if the job has no entry: never opened, or ended without output.
  bool Append(uint64_t id, v1::OutputStream stream, std::string_view bytes);
  // Job `id` ended (whether or not it ever started): no more output. Its
  // waiters are returned.
  std::vector<Callback> End(uint64_t id);
  // Job `id` (ended) is forgotten: its output is freed.
  void Forget(uint64_t id);
  // Up to about `max_bytes` of job `id`'s output from `offset` on.
  // `job_ended`: what the caller knows of the job (it may have ended
  // without output).
  OutputRead Read(uint64_t id, uint64_t offset, size_t max_bytes,
                  bool job_ended) const;
  // Keeps `fn` (under `key`) to be returned once job `id`'s output goes
  // past `offset`, or it ends. False (`fn` not kept) if one of those holds
  // already. Call it only for a job that has not ended.
  bool AddWaiter(uint64_t id, uint64_t offset, const void* key, Callback fn);
  // Drops the waiters of job `id` kept under `key` (a reader gone).
  void RemoveWaiter(uint64_t id, const void* key);

  struct Stats {
    uint64_t bytes = 0;    // Held now (data and overhead).
    uint64_t jobs = 0;     // Jobs with output kept.
    uint64_t dropped = 0;  // Bytes dropped over the limits since start.
  };
  Stats stats() const;

 private:
  // A job's pieces, oldest first: a vector whose front is taken off by
  // moving an index (the slots left behind go once they are half of it),
  // so that a job that writes nothing allocates nothing here (a std::deque
  // allocates when it is made: once per job started, on the hot path).
  class PieceQueue {
   public:
    bool empty() const { return head_ == pieces_.size(); }
    OutputPiece& front() { return pieces_[head_]; }
    OutputPiece& back() { return pieces_.back(); }
    void push_back(OutputPiece piece) { pieces_.push_back(std::move(piece)); }
    void pop_front();
    std::vector<OutputPiece>::const_iterator begin() const {
      return pieces_.begin() + static_cast<std::ptrdiff_t>(head_);
    }
    std::vector<OutputPiece>::const_iterator end() const {
      return pieces_.end();
    }

   private:
    std::vector<OutputPiece> pieces_;
    size_t head_ = 0;  // The oldest piece kept.
  };

  struct Output {
    PieceQueue pieces;
    uint64_t start = 0;  // Offset of the first byte kept.
    uint64_t end = 0;    // Offset after the last byte written.
    size_t bytes = 0;    // Held: data and overhead.
    bool open = false;
    bool ended = false;
    std::vector<std::pair<const void*, Callback>> waiters;
  };

  static std::vector<Callback> TakeWaiters(Output& o);
  // Sets what job `o` holds (Output::bytes), keeping bytes_ and holding_.
  void SetHeldLocked(Output& o, size_t held) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops job `o`'s oldest bytes until it holds at most `keep` bytes.
  void TrimLocked(Output& o, size_t keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees room for `need` more bytes under the total: ended jobs' output
  // first (oldest ended first), then `writer`'s head.
  void MakeRoomLocked(Output& writer, size_t need)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  OutputLimits limits_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Output> outputs_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> ended_ ABSL_GUARDED_BY(mu_);  // In end order.
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t holding_ ABSL_GUARDED_BY(mu_) = 0;  // Jobs with bytes > 0.
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_SCHEDULER_JOB_OUTPUT_H_
