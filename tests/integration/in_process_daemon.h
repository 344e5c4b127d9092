// Test harness: a whole jobd (server/daemon/daemon.h) inside the test's own
// process, configured from the same flags as the binary and with the same
// defaults as daemon_harness.h's Daemon: a temp Unix socket, 127.0.0.1
// port 0, --testing-tasks, --log-level debug, --http-allow 127.0.0.1 and a
// --state-dir of its own (each unless given). Clients reach it through its
// sockets, as they reach the binary. Its log is captured for Log() (and
// printed if the test failed).
//
// The fork server: jobd's main() forks it before any thread exists,
// because forking a multi-threaded gRPC process is unsafe. A test process
// has threads by then (gtest, earlier tests' gRPC), so this harness never
// forks it: the daemon's process pool starts its fork server by executing
// the jobd binary in fork-server mode (config.process_pool.self_exe =
// JobdPath(); SpawnForkServer, the path the pool takes to replace a dead
// fork server), a fresh single-threaded process that forks the workers.
// Workers and their tasks are thus the binary's, as in production; the
// fork server exits, killing its workers, when the daemon (or this
// process) goes. For the same reason there is no guardian (it must be
// forked while single-threaded too): exec's programs run without its
// namespaces. What needs a process of its own stays on daemon_harness.h:
// kill -9 and restarts, signals, rlimits and the environment of the
// daemon, its RSS, systemd, the guardian and the previous run's leftovers,
// the binary's exit codes and messages.
//
// Thread-safety: one harness per test, driven by the test's thread (the
// daemon itself serves from its own threads). Daemons may overlap.
// Ownership: owns the daemon and its temp directory; the destructor stops
// the first and removes the second.
#ifndef JOBD_TESTS_INTEGRATION_IN_PROCESS_DAEMON_H_
#define JOBD_TESTS_INTEGRATION_IN_PROCESS_DAEMON_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "server/daemon/daemon.h"

namespace jobd::testing {

class InProcessDaemon {
 public:
  // Starts a daemon with `extra_args` (jobd's flags) after the defaults
  // above. Fails with the configuration's or the start's error.
  static absl::StatusOr<std::unique_ptr<InProcessDaemon>> Start(
      std::vector<std::string> extra_args = {});
  ~InProcessDaemon();

  const std::string& unix_address() const { return unix_address_; }  // unix:
  const std::string& tcp_address() const { return tcp_address_; }    // h:p
  std::unique_ptr<v1::JobService::Stub> NewStub() const;
  jobd::Daemon& daemon() { return *daemon_; }

  // Waits up to `timeout` for the daemon to ask to be stopped (the Drain
  // RPC, a dead listener); true if it did.
  bool WaitStopRequested(absl::Duration timeout = absl::Seconds(15));
  // Stops it as SIGTERM stops jobd (drain, grace, cancel, flush).
  DaemonStopped Stop();
  // What it logged since it started (at most 64 MiB of it).
  std::string Log() const;

 private:
  InProcessDaemon() = default;
  std::string dir_;
  std::string unix_address_;
  std::string tcp_address_;
  size_t log_mark_ = 0;  // Where its log starts in the captured one.
  bool log_attached_ = false;
  std::unique_ptr<jobd::Daemon> daemon_;
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_IN_PROCESS_DAEMON_H_
