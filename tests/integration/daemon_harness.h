// Test harness: starts the real jobd binary on a temp Unix socket and
// 127.0.0.1 port 0, waits for its ready banner (never a bare sleep), and stops
// it by pid. Also runs jobctl as a subprocess with a time limit.
//
// Thread-safety: one harness per test; not shared between threads.
// Ownership: the harness owns the daemon process and its temp directory and
// kills/removes both in its destructor.
#ifndef JOBD_TESTS_INTEGRATION_DAEMON_HARNESS_H_
#define JOBD_TESTS_INTEGRATION_DAEMON_HARNESS_H_

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jobd/v1/jobd.grpc.pb.h"

namespace jobd::testing {

class Daemon {
 public:
  // Starts jobd with `extra_args` (besides the socket/port flags,
  // --testing-tasks and, unless given, --log-level debug, --http-allow
  // 127.0.0.1 and a --state-dir of its own) and `env` ("K=V") added to its
  // environment. Fails if it does not print its banner in 20 s. `program`:
  // another jobd binary (a benchmark's baseline), else the one built here.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      std::vector<std::string> extra_args = {},
      std::vector<std::string> env = {}, const std::string& program = "");
  ~Daemon();

  const std::string& unix_address() const { return unix_address_; }  // unix:
  const std::string& tcp_address() const { return tcp_address_; }    // h:p
  pid_t pid() const { return pid_; }
  std::unique_ptr<v1::JobService::Stub> NewStub() const;

  // Sends `sig` and waits up to `timeout` for the exit; returns the raw wait
  // status, or an error if it did not exit (then it is SIGKILLed).
  absl::StatusOr<int> Stop(int sig, absl::Duration timeout);
  // What jobd wrote to stderr (its log) so far.
  std::string Log() const;
  // The first sanitizer report in the log, or "". The destructor stops jobd
  // with SIGTERM and fails the current test if there is one.
  std::string SanitizerReport() const;

 private:
  Daemon() = default;
  pid_t pid_ = -1;
  std::string dir_;
  std::string unix_address_;
  std::string tcp_address_;
};

// A child process started by SpawnReady.
struct ReadyProcess {
  pid_t pid = -1;
  std::string banner;  // Its stdout up to and including the ready marker.
};

// Starts `argv` with stdout on a pipe and stderr to `stderr_path`, and reads
// stdout until it contains `marker` or `timeout` passes (then the child is
// killed and an error returned).
absl::StatusOr<ReadyProcess> SpawnReady(
    std::vector<std::string> argv, const std::string& marker,
    const std::string& stderr_path, absl::Duration timeout,
    const std::vector<std::string>& env = {});

// Sends `sig` to `pid` and reaps it within `timeout` (SIGKILL after).
// Returns the wait status, or DeadlineExceeded if it had to be killed.
absl::StatusOr<int> StopProcess(pid_t pid, int sig, absl::Duration timeout);

// --- Raw jobd.v1 API helpers ------------------------------------------------

// A spec of `task` with numeric positional args.
v1::JobSpec Spec(const std::string& task, std::vector<double> nums = {},
                 v1::JobKind kind = v1::JOB_KIND_IO_BOUND);

// Polls `done` every 10 ms for at most `limit`; true once it holds.
bool WaitFor(const std::function<bool()>& done,
             absl::Duration limit = absl::Seconds(10));

// Live processes (zombies do not count: they run nothing) one of whose
// arguments contains `token`, as this test sees them in /proc.
std::vector<pid_t> PidsWithArg(const std::string& token);

// A /proc file of a process (cmdline, stat, environ, ...), or "" once it is
// gone: read with read(2), since a process that ends mid-read makes the
// read fail with ESRCH (and std::ifstream then throws).
std::string ReadProcFile(const std::filesystem::path& path);

// A fresh directory under /tmp (empty path() if it could not be made),
// removed with everything in it when this goes.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "jobd-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Sets a deadline `d` from now on `ctx`.
void Deadline(grpc::ClientContext& ctx, absl::Duration d = absl::Seconds(30));
// Cancels job `id` at `stub` (a 10 s deadline): the call's status.
grpc::Status CancelJob(v1::JobService::Stub& stub, const std::string& id);

struct StreamResult {
  std::vector<v1::JobEvent> events;
  grpc::Status status;
  std::vector<v1::JobEvent> Terminal() const;  // REJECTED and job ends.
};

// One Submit message carrying `specs` with client tags 1..n.
v1::SubmitRequest SubmitRequestOf(const std::vector<v1::JobSpec>& specs,
                                  v1::SubmitOptions options = {});

// Submits `specs` (client tags 1..n) in one message, half-closes, and returns
// every event until the server ends the stream. `ctx` is the caller's (its
// metadata, e.g. a token); the first form gives it a 60 s deadline.
StreamResult SubmitAll(v1::JobService::Stub& stub,
                       const std::vector<v1::JobSpec>& specs,
                       v1::SubmitOptions options = {});
StreamResult SubmitAll(grpc::ClientContext& ctx, v1::JobService::Stub& stub,
                       const std::vector<v1::JobSpec>& specs,
                       v1::SubmitOptions options = {});

// Runs one job to its end and returns its terminal event (a default one,
// and a test failure, if the stream did not give exactly one).
v1::JobEvent RunOne(v1::JobService::Stub& stub, const v1::JobSpec& spec);

// GetStats, as `token`'s caller if not empty (a test failure if it fails).
v1::GetStatsResponse GetStats(v1::JobService::Stub& stub,
                              const std::string& token = "");

struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal or timed out.
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] a path) with `stdin_data`, `env` additions
// ("K=V"), up to `timeout`. Output is captured in full.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::string& stdin_data = "",
                         absl::Duration timeout = absl::Seconds(30),
                         const std::vector<std::string>& env = {});

// jobd's command line in a test: `program`, 127.0.0.1 port 0,
// --testing-tasks, a Unix socket in `dir`, --log-level debug, --http-allow
// 127.0.0.1 and --state-dir `dir`/state (each of the last four unless
// `extra` gives it), then `extra`. Both harnesses (this one,
// in_process_daemon.h) use it.
std::vector<std::string> DaemonArgs(const std::string& program,
                                    const std::string& dir,
                                    const std::vector<std::string>& extra);

// A free TCP port on 127.0.0.1 (bound, read and released: for programs
// that cannot listen on port 0 and say which port they got), or -1.
int FreeLoopbackPort();

// Paths of the built binaries (set by CMake).
std::string JobdPath();
std::string JobctlPath();

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_DAEMON_HARNESS_H_
