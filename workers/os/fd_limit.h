// The daemon's file descriptors: its RLIMIT_NOFILE and how many are open,
// so that what opens descriptors on a client's behalf (accepted connections,
// exec's pipes) backs off before the process runs out. A process at its
// limit fails every open, accept, pipe and socket call; gRPC 1.51 never
// accepts again on a listener whose accept failed with EMFILE.
//
//   RaiseFdLimit();                       // once, at start
//   if (!TakeFds(6, kKeepFree)) wait;     // before opening 6 descriptors
//
// Thread-safety: all functions are thread-safe. The open count is read from
// /proc/self/fd (at most every 10 ms near the limit, every second far from
// it) and shared by all callers; TakeFds counts what callers announced
// since, so a burst of callers cannot all pass on one reading.
#ifndef JOBD_WORKERS_OS_FD_LIMIT_H_
#define JOBD_WORKERS_OS_FD_LIMIT_H_

#include <cstddef>

#include "absl/status/statusor.h"

namespace jobd {

// Descriptors kept free of each use, so that a shortage stops the least
// vital user first: exec starts no program below kExecKeepFree free, the
// listeners take no connection below kAcceptKeepFree; what is left is for
// the journal, gRPC's own needs and the process pool.
inline constexpr size_t kExecKeepFree = 64;
inline constexpr size_t kAcceptKeepFree = 16;

struct FdLimits {
  size_t soft = 0;  // The limit in force after RaiseFdLimit.
  size_t hard = 0;
  size_t previous_soft = 0;  // What the process started with.
};

// Raises the soft RLIMIT_NOFILE to the hard one (the hard one is the
// administrator's: systemd's LimitNOFILE=, `ulimit -Hn`).
absl::StatusOr<FdLimits> RaiseFdLimit();

// True if `n` more descriptors leave at least `keep_free` of the soft limit
// unused; they are then counted as open until the next reading.
bool TakeFds(size_t n, size_t keep_free);

// The open descriptors (with those taken since the reading) and the soft
// limit. `open` is `limit` when even /proc/self/fd cannot be opened.
struct FdUsage {
  size_t open = 0;
  size_t limit = 0;
  size_t free() const { return open < limit ? limit - open : 0; }
};
FdUsage CurrentFdUsage();

}  // namespace jobd

#endif  // JOBD_WORKERS_OS_FD_LIMIT_H_
