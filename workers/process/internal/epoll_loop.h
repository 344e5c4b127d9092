// Internal to the process pool (not part of its public API): the readiness
// wait of the pool's monitor thread. An epoll set of the sockets and pidfds
// of the workers and the fork server, each registered with a 64-bit key,
// plus an eventfd that Wake() rings so that another thread can make the
// monitor look at the pool's state again (a new chunk, a cancel, shutdown).
//
// The pool's keys (EventKey) pack a generation number (a worker's, unique
// per process, or the fork server's) with what the descriptor is, so that
// an event of a worker or fork server that is gone by the time it is read
// finds no owner and is dropped.
//
// Thread-safety: Wake() from any thread, at any time. Add() and Modify()
// from any thread (epoll_ctl is thread-safe); Wait() from one thread at a
// time (the monitor), as it fills a buffer of the object's.
// Ownership: owns the epoll and eventfd descriptors; not the descriptors
// registered in it (their owners close them, which also unregisters them).
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_EPOLL_LOOP_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_EPOLL_LOOP_H_

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "absl/time/time.h"
#include "workers/os/unique_fd.h"

namespace jobd {

// What a registered descriptor is.
enum class EventTag : uint64_t {
  kWorkerSocket = 0,
  kWorkerPidfd = 1,
  kForkControl = 2,
  kForkPidfd = 3,
};

// A key: gen << 2 | tag.
inline uint64_t EventKey(uint64_t gen, EventTag tag) {
  return gen << 2 | static_cast<uint64_t>(tag);
}
inline uint64_t EventGen(uint64_t key) { return key >> 2; }
inline EventTag EventTagOf(uint64_t key) {
  return static_cast<EventTag>(key & 3);
}

class EpollLoop {
 public:
  // Most events one Wait() returns.
  static constexpr int kMaxEvents = 64;

  EpollLoop();
  EpollLoop(const EpollLoop&) = delete;
  EpollLoop& operator=(const EpollLoop&) = delete;

  // Registers `fd` for `events` (EPOLLIN, ...) under `key`; a failure is
  // logged (the descriptor then never reports).
  void Add(int fd, uint32_t events, uint64_t key);
  // Changes what `fd` is registered for.
  void Modify(int fd, uint32_t events, uint64_t key);

  // Waits until a registered descriptor is ready, Wake() was called, or
  // `deadline` (InfiniteFuture: no deadline) has come, rounded up to a
  // millisecond. Returns the ready descriptors' events (valid until the
  // next Wait); a wake-up is consumed and not among them.
  std::span<const epoll_event> Wait(absl::Time deadline);

  // Makes the current or next Wait() return.
  void Wake();

 private:
  UniqueFd epoll_;
  UniqueFd wake_fd_;  // eventfd, registered under kWakeKey.
  epoll_event events_[kMaxEvents];
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_EPOLL_LOOP_H_
