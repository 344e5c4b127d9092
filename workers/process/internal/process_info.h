// Internal to the process pool (not part of its public API): what the pool
// reads about a worker process from /proc (resident memory, run state) and
// how it words a worker's end in a job's error (signal names, exit status,
// sizes).
//
// Thread-safety: free functions without shared state, callable from any
// thread. Ownership: nothing is held; /proc files are opened and closed
// within each call.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_PROCESS_INFO_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_PROCESS_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "jobd/v1/jobd.pb.h"

namespace jobd {

// Resident memory of `pid` in bytes (/proc/PID/statm); 0 if unknown.
uint64_t ReadRssBytes(pid_t pid);

// What `pid` is doing, from /proc/PID/stat, as the end of a sentence about
// it ("was stopped (by SIGSTOP or another stop signal)", "was running
// (state R)", ...); empty if it cannot be told (no such process).
std::string ProcessStateText(pid_t pid);

// "SIGSEGV (Segmentation fault)".
std::string SignalName(int sig);

// "12.5 MiB".
std::string MiB(uint64_t bytes);

// How a worker ended, from its wait status (negative: unknown, as its fork
// server was replaced): `how` completes "the worker process (pid N) ..."
// ("was killed by signal SIGSEGV (Segmentation fault)"); `reason` is the
// failure reason of the job it was running.
struct WorkerExit {
  std::string how;
  v1::ErrorReason reason = v1::ERROR_REASON_WORKER_CRASHED;
};
// `jobd_killed`: jobd itself sent the signal that ended it (a SIGKILL it did
// not send is taken for the kernel's OOM killer).
WorkerExit DescribeWorkerExit(int wait_status, bool jobd_killed);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_PROCESS_INFO_H_
