// Internal to the process pool (not part of its public API): the pool's end
// of the fork server (workers/process/fork_server.h). Sends fork requests
// with the workers' limits, reads the fork server's replies (a worker
// spawned, with its descriptors; a fork that failed; a worker reaped, with
// its wait status) and hands them on as plain values, and replaces a fork
// server that died with a fresh one (jobd's binary in fork-server mode).
// This and job_frames.h are where the pool speaks the private protocol.
//
// Its descriptors are registered in the monitor's EpollLoop under the
// relay's generation (EventTag kForkControl, kForkPidfd); each fork server
// has a new generation, so a late event of a dead one is told apart.
//
// Thread-safety: none; the pool's mutex guards it (the EpollLoop it
// registers in is thread-safe). Ownership: owns the fork server process it
// holds (kills and reaps it in Reap/Stop, and on destruction); the loop
// must outlive it.
#ifndef JOBD_WORKERS_PROCESS_INTERNAL_FORK_RELAY_H_
#define JOBD_WORKERS_PROCESS_INTERNAL_FORK_RELAY_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workers/os/unique_fd.h"
#include "workers/process/fork_server.h"
#include "workers/process/internal/epoll_loop.h"
#include "workers/process/process_pool_options.h"

namespace jobd {

class ForkServerRelay {
 public:
  // What the fork server reports.
  class Events {
   public:
    virtual ~Events() = default;
    // Worker `pid` was forked for `request_id`. `fds` should hold the
    // daemon's end of its socket, its result ring's memfd and its pidfd,
    // in that order (fewer if the fork server misbehaved).
    virtual void OnSpawned(uint64_t request_id, pid_t pid,
                           std::vector<UniqueFd>& fds) = 0;
    virtual void OnSpawnFailed(uint64_t request_id, std::string_view error) = 0;
    // A worker it forked was reaped; `wait_status` as waitpid() gives it.
    virtual void OnExited(pid_t pid, int wait_status) = 0;
  };

  // Holds `initial` (started by main() before any thread). `options` gives
  // the workers' limits and how to start a replacement.
  ForkServerRelay(EpollLoop& loop, const ProcessPoolOptions& options,
                  ForkServerProcess initial);
  ~ForkServerRelay();
  ForkServerRelay(const ForkServerRelay&) = delete;
  ForkServerRelay& operator=(const ForkServerRelay&) = delete;

  pid_t pid() const { return process_.pid; }  // 0: none.
  // Whether requests can be sent (a fork server runs, as far as known).
  bool running() const { return process_.control.valid(); }
  // Of the current fork server, in its EventKeys.
  uint64_t gen() const { return gen_; }
  // Fork servers replaced so far.
  uint64_t restarts() const { return restarts_; }

  // Asks for one worker; the id its reply will carry, or why the request
  // could not be sent.
  absl::StatusOr<uint64_t> RequestSpawn();

  // Reads the replies waiting (up to 256) and hands them to `events`.
  // False if the fork server is gone (its socket closed or failed): Reap()
  // it and Start() another.
  bool ReadReplies(Events& events);

  // The fork server died or is to be dropped: hands the exits it reaped
  // before (if any) to events.OnExited, kills the workers it forked that
  // were not handed over yet, kills and reaps it and logs how it ended.
  // Counts a restart; the next fork server gets a new generation. Nothing
  // if none is held.
  void Reap(Events& events);

  // Starts a fresh fork server (options.self_exe in fork-server mode) and
  // registers it in the loop. Needs Reap() of the previous one first.
  absl::Status Start();

  // Closes its socket, so that the fork server kills its workers' process
  // groups and exits; waits up to 2 s for that (then SIGKILL) and reaps it.
  void Stop();

 private:
  void Register();

  EpollLoop& loop_;
  const ProcessPoolOptions& options_;
  ForkServerProcess process_;
  uint64_t gen_ = 1;
  uint64_t restarts_ = 0;
  uint64_t next_request_ = 1;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_INTERNAL_FORK_RELAY_H_
