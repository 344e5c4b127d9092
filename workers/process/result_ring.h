// ResultRing: how a worker process hands job results to the daemon without
// a system call per result. A single-producer, single-consumer ring of
// byte entries in shared memory (a memfd the fork server creates per worker
// and maps into it; the daemon maps the same fd).
//
// Why shared memory rather than batched socket writes: a result the worker
// committed to the ring survives the worker's death, so when a job crashes
// its worker, the daemon first collects every result committed before it and
// blames exactly the job that was running. The worker tells the daemon to
// look (a doorbell frame on its socket) when it ran a frame's jobs, when the
// ring fills up, and at most a millisecond after a result was committed;
// tiny jobs thus share one wake-up of the daemon.
//
// The header page also holds how many jobs the worker has taken from its
// queue to run (JobTaken / jobs_taken): when a worker that stopped answering
// is killed, this tells the daemon whether its oldest unreported job ever
// began (if not, the job may safely run elsewhere).
//
// Layout: a header page (write position, read position, a futex word, the
// jobs-taken count), then
// `capacity` bytes of entries. An entry is a 4-byte length, a 4-byte kind
// and the bytes, padded to 8; an entry that would straddle the end is
// preceded by a padding entry up to the end. Positions count bytes forever
// (64-bit) and are taken modulo capacity, a power of two.
//
// The consumer trusts nothing in the shared memory: the worker's task code
// can scribble on it, so every position and length is checked and a bad one
// is a protocol error (the worker is killed), never a daemon crash.
//
// Thread-safety: one producer thread (in the worker) and one consumer
// thread (the daemon's pool monitor) at a time. The object owns its mapping.
#ifndef JOBD_WORKERS_PROCESS_RESULT_RING_H_
#define JOBD_WORKERS_PROCESS_RESULT_RING_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "workers/process/ipc.h"

namespace jobd {

class ResultRing {
 public:
  // What an entry holds.
  enum Kind : uint32_t {
    kPadding = 0,         // Skip to the end of the ring (internal).
    kResult = 1,          // A serialized internal::JobDone.
    kResultOnSocket = 2,  // The next JobDone frame on the socket (too big).
  };
  struct Entry {
    Kind kind;
    std::string_view bytes;  // Valid until Consume().
  };

  static constexpr size_t kDefaultCapacity = size_t{1} << 20;

  // A fresh zeroed ring of `capacity` bytes (a power of two >= 4096).
  static absl::StatusOr<UniqueFd> Create(size_t capacity = kDefaultCapacity);
  // Maps the ring in `fd` (the fd may be closed afterwards).
  static absl::StatusOr<ResultRing> Map(int fd);

  ResultRing() = default;
  ResultRing(ResultRing&& other) noexcept;
  ResultRing& operator=(ResultRing&& other) noexcept;
  ResultRing(const ResultRing&) = delete;
  ResultRing& operator=(const ResultRing&) = delete;
  ~ResultRing();

  bool mapped() const { return base_ != nullptr; }
  // The largest entry the ring takes; larger results go by socket.
  size_t max_entry() const { return capacity_ / 4; }

  // Maps every page of the ring now, in one system call, instead of one
  // page fault per page later.
  void Prefault();

  // ---- producer ----
  // Commits one entry (bytes.size() <= max_entry()). While the ring lacks
  // room it calls `wake_consumer` and waits for the consumer to free some.
  void Append(Kind kind, std::string_view bytes,
              absl::FunctionRef<void()> wake_consumer);
  // Bytes committed since the consumer last released room (an estimate of
  // how full the ring is).
  size_t used() const;
  // Counts one more job taken to run (before it begins; no system call).
  void JobTaken();

  // ---- consumer ----
  // The oldest committed entry, nullopt if none; DataLoss if the shared
  // memory holds nonsense.
  absl::StatusOr<std::optional<Entry>> Peek();
  // Drops the entry Peek() returned.
  void Consume();
  // Gives the consumed room back to the producer and wakes it if it waits.
  void Release();
  // Jobs the producer counted with JobTaken (untrusted: task code may have
  // written anything there).
  uint64_t jobs_taken() const;

 private:
  struct Header;
  Header* header() const;
  char* data() const;

  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t map_bytes_ = 0;
  uint64_t head_ = 0;  // Producer: next write position (mirrors the header).
  uint64_t tail_ = 0;  // Consumer: next read position (released lazily).
  uint64_t peeked_end_ = 0;  // Consumer: tail after the peeked entry.
  uint64_t taken_ = 0;       // Producer: jobs taken (mirrors the header).
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_RESULT_RING_H_
