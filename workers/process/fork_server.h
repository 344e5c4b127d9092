// The fork server: a small single-threaded process that forks the process
// pool's workers on request (DESIGN.md "Executors").
//
// jobd's main() forks the first one before any thread or gRPC object exists
// (ForkForkServer), because forking a multi-threaded gRPC process is unsafe.
// If it dies, the pool starts a fresh one safely from the running daemon by
// executing jobd's own binary in fork-server mode (SpawnForkServer; main()
// calls RunForkServerIfInvoked first). Either way the fork server holds the
// same task registry as the daemon, and so do the workers it forks.
//
// Protocol (proto/jobd/internal/worker.proto) on a SOCK_SEQPACKET socket:
// ForkRequest -> Spawned (+ the daemon's end of the worker's socket, its
// result ring's memfd (workers/result_ring.h) and a pidfd) or SpawnFailed;
// Exited whenever a worker it forked is reaped. When the daemon closes the
// socket the fork server kills its workers' process groups and exits.
//
// Each worker runs in its own process group (so a hard kill reaches anything
// the task started), with its rlimits applied, its result ring mapped,
// every inherited fd closed except its socket (fd kWorkerSocketFd), and
// default signal dispositions.
#ifndef JOBD_WORKERS_PROCESS_FORK_SERVER_H_
#define JOBD_WORKERS_PROCESS_FORK_SERVER_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/os/unique_fd.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// A running fork server, as its parent (the daemon) holds it.
struct ForkServerProcess {
  pid_t pid = 0;
  UniqueFd control;  // SOCK_SEQPACKET, the daemon's end.
  UniqueFd pidfd;    // Readable when the fork server exits.
};

// argv[1] of jobd in fork-server mode: `jobd --internal-fork-server FD
// [--testing-tasks] [--plugin PATH]... [--python-tasks MODULE]...
// [--python-path DIR]...`, FD being its end of the control socket.
inline constexpr char kForkServerFlag[] = "--internal-fork-server";

// Runs in each new worker once it has its user, limits and clean
// environment, before its first job (Python tasks start their interpreter
// here: workers/python/python_tasks.h). A failure is written to stderr and
// ends the worker (exit 125).
using WorkerSetup = std::function<absl::Status()>;

// Forks a fork server from this process. Only while single-threaded.
absl::StatusOr<ForkServerProcess> ForkForkServer(const TaskRegistry& registry,
                                                 WorkerSetup setup = {});

// Starts a fork server by executing `exe kForkServerFlag FD extra_args...`.
// Safe in a multi-threaded process.
absl::StatusOr<ForkServerProcess> SpawnForkServer(
    const std::string& exe, const std::vector<std::string>& extra_args);

// Serves `control_fd` until the daemon closes it, then exits the process.
[[noreturn]] void RunForkServer(int control_fd, const TaskRegistry& registry,
                                WorkerSetup setup = {});

// If this process was started as `PROG kForkServerFlag FD [--testing-tasks]
// [--plugin PATH]... [--python-...]` (SpawnForkServer), becomes that fork
// server with the built-in tasks, those plugins' and those Python modules'
// (exits 1 if one is refused) and never returns; otherwise returns at once.
// Call first thing in main().
void RunForkServerIfInvoked(int argc, char** argv);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_FORK_SERVER_H_
