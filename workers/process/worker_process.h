// The main loop of a process-pool worker: a process forked by the fork
// server (workers/fork_server.h) that runs jobs sent by the daemon over its
// socket (fd kWorkerSocketFd). Each job's JobDone is committed to the result
// ring (workers/result_ring.h) before the next job starts, so a crash loses
// at most the job that caused it; a result too big for the ring goes as a
// socket frame, announced by a ring entry. The worker rings the daemon's
// doorbell (a Doorbell frame) when its queue runs dry, when the ring fills
// and within kDoorbellDelay of a result; progress reports (throttled) go by
// socket.
//
// Two threads take turns reading the socket and running jobs (one job at a
// time; see Worker in the .cc). A cancel of the running job sets its
// CancelToken; a cancelled job that has not started is skipped. A ping
// (the daemon's liveness check) is answered at once by the reading thread,
// also while a job runs. Each job is counted in the ring's header as it is
// taken to run (ResultRing::JobTaken). When the daemon closes the socket the
// process exits 0 at once.
#ifndef JOBD_WORKERS_PROCESS_WORKER_PROCESS_H_
#define JOBD_WORKERS_PROCESS_WORKER_PROCESS_H_

#include <cstddef>

#include "absl/time/time.h"
#include "workers/process/result_ring.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// The worker's socket to the daemon, dup'ed here by the fork server.
inline constexpr int kWorkerSocketFd = 3;
// Largest frame either side accepts on a worker socket.
inline constexpr size_t kMaxWorkerFrameBytes = 256u << 20;
// Longest a committed result waits for the doorbell while the next job runs.
inline constexpr absl::Duration kDoorbellDelay = absl::Milliseconds(1);

// Never returns; the process exits when the daemon closes the socket.
[[noreturn]] void RunWorkerProcess(const TaskRegistry& registry,
                                   ResultRing ring);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_WORKER_PROCESS_H_
