// The guardian: a small process that makes what jobd starts for `exec` jobs
// die with jobd, whatever kills jobd (README: Security, "Processes jobd
// starts").
//
// main() forks it while jobd still has one thread (StartGuardian). Where
// jobd may create namespaces (it runs as root), the guardian is the init of
// a PID namespace of its own, with a /proc of that namespace mounted in a
// mount namespace of its own; exec starts every program in both. Then:
//   * jobd's death by any signal kills the guardian (PR_SET_PDEATHSIG from
//     jobd's main thread, which lives as long as jobd), and the kernel kills
//     every process of the namespace with it: programs, and whatever they
//     started, even in a session of its own (setsid);
//   * a process a program left behind is reparented to the guardian (the
//     programs are child subreapers while they run, so this happens when
//     the program ends): a byte on `notify`, which exec writes after each
//     program, makes it kill all its children (and it looks every second).
// Elsewhere (no CAP_SYS_ADMIN: jobd not root) it is a plain child of jobd:
// when jobd's end of `notify` closes (jobd died) it kills every process
// whose environment still holds this run's kInstanceEnv entry.
// Either way, the next jobd on the same state directory kills what is left
// of this run (server/leftovers.h) by the same entry.
//
// Thread-safety: the functions are reentrant; StartGuardian only while the
// process has one thread. Ownership: the caller owns the Guardian's fds.
#ifndef JOBD_WORKERS_OS_GUARDIAN_H_
#define JOBD_WORKERS_OS_GUARDIAN_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "workers/os/unique_fd.h"

namespace jobd {

// The variable, in the environment of every program exec starts, whose value
// names the jobd run that started it.
inline constexpr char kInstanceEnv[] = "JOBD_INSTANCE";

// A fresh run id: 32 random hex digits.
std::string NewInstanceId();

struct Guardian {
  pid_t pid = 0;
  UniqueFd pidfd;   // Readable when the guardian exits.
  UniqueFd notify;  // jobd's end: a byte asks for a sweep now.
  // Its namespaces, for exec's programs (invalid: none, see above).
  UniqueFd pid_ns;
  UniqueFd mount_ns;
};

// Forks the guardian of the run `instance_id`. Only while single-threaded.
absl::StatusOr<Guardian> StartGuardian(const std::string& instance_id);

// When `pid` started (field 22 of /proc/PID/stat, clock ticks after boot),
// or 0 if there is no such process.
uint64_t ProcessStartTime(pid_t pid);

// SIGKILLs `pid` if it is still the process that started at `start_time`,
// and waits up to `limit` for it to die. True if it was that process.
bool KillIfStartedAt(pid_t pid, uint64_t start_time, absl::Duration limit);

// Sends `sig` to every descendant of `root` (children, theirs, ...: a
// process in a session of its own counts while its ancestors live up to
// `root`); returns how many.
int SignalDescendants(pid_t root, int sig);

// SIGKILLs every process whose environment holds `entry` ("NAME=value")
// until none is left (or `limit` passed); returns how many it killed.
int KillProcessesWithEnv(const std::string& entry, absl::Duration limit);

}  // namespace jobd

#endif  // JOBD_WORKERS_OS_GUARDIAN_H_
