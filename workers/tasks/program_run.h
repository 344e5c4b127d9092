// RunProgram: the one way jobd starts a program for a task (exec and the
// command tasks declared in the config file): a child of the daemon in its
// own process group, with a clean environment (a fixed PATH, JOBD_INSTANCE
// and what the caller adds), the guardian's namespaces, the sandbox's user
// and rlimits (ExecSandbox, io_tasks.h), its stdin fed from a string and
// its stdout/stderr captured up to a limit each, and passed on as they
// come to the job's output (AsyncTaskContext::WriteOutput: jobctl logs). Waits
// on a pidfd on the reactor (no thread per child). A cancel or timeout of the
// job SIGTERMs the group and every descendant, then SIGKILLs them after
// `kill_grace`; whatever the program leaves in its group is killed when it
// ends.
//
// Thread-safety: RunProgram runs on the job's reactor loop; the helpers
// are pure functions.
#ifndef JOBD_WORKERS_TASKS_PROGRAM_RUN_H_
#define JOBD_WORKERS_TASKS_PROGRAM_RUN_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "workers/sdk/async_task.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {

// The PATH every program gets (jobd's own environment is never passed on).
inline constexpr char kProgramPath[] = "PATH=/usr/local/bin:/usr/bin:/bin";

struct ProgramRun {
  std::string path;               // Absolute.
  std::vector<std::string> argv;  // argv[0] included; no NUL bytes.
  std::vector<std::string> env;   // NAME=value, after PATH and JOBD_INSTANCE.
  std::string cwd = "/";          // Absolute.
  std::string input;              // Written to its stdin, then EOF.
  size_t limit = 1 << 20;         // stdout and stderr kept, each.
  absl::Duration kill_grace = absl::Seconds(1);
};

// How a program ended.
struct ProgramEnd {
  bool exited = false;  // Else killed by `signal`.
  int exit_code = 0;
  int signal = 0;
  std::string stdout_bytes, stderr_bytes;  // At most `limit` each.
  bool stdout_truncated = false, stderr_truncated = false;
  absl::Duration elapsed;
};

// Runs `run` to its end. Cancelled (the job was cancelled or timed out: the
// program and its descendants were killed), ResourceExhausted (no
// descriptors, no process), FailedPrecondition (it could not be executed:
// the message says which step failed and why) or Internal.
asio::awaitable<absl::StatusOr<ProgramEnd>> RunProgram(
    AsyncTaskContext& ctx, const ExecSandbox& sandbox, ProgramRun run);

// Output as result text: invalid UTF-8 bytes replaced by U+FFFD, then cut
// to `limit` bytes on a character boundary (*cut set if it was).
std::string OutputText(std::string_view bytes, size_t limit, bool* cut);
// The last `max_bytes` or fewer bytes of `s` as text, starting on a
// character boundary.
std::string TailText(std::string_view s, size_t max_bytes);
// "SIGKILL", or the number.
std::string ExitSignalName(int sig);

}  // namespace jobd

#endif  // JOBD_WORKERS_TASKS_PROGRAM_RUN_H_
