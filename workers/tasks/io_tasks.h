// Built-in tasks with async implementations, for the coroutine reactor
// (registered by RegisterBuiltinTasks, workers/builtin_tasks.h):
//   sleep      the async twin of the sync sleep: a timer task (no thread,
//              no coroutine)
//   http.get   an HTTP(S) GET through the loop's libcurl multi handle, to
//              public addresses only unless allowed (HttpPolicy)
//   exec       runs a program from the daemon's allowlist as a child
//              process (own process group, an environment of a fixed base
//              and the variables the operator allows, jobd's guardian
//              namespaces and --worker-user when set: ExecSandbox), feeding
//              its stdin and capturing stdout/stderr up to a limit; waits
//              on a pidfd, so no thread per child; cancel/timeout kill the
//              group and every descendant (SIGTERM, then SIGKILL after a
//              grace), and what it leaves behind is killed when it ends
//
// Thread-safety: the tasks are stateless; ExecPolicy and HttpPolicy are
// thread-safe.
#ifndef JOBD_WORKERS_TASKS_IO_TASKS_H_
#define JOBD_WORKERS_TASKS_IO_TASKS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "workers/reactor/address_policy.h"
#include "workers/sdk/task.h"

namespace jobd {

// The largest body http.get returns and the largest output exec captures
// per stream: results travel in one gRPC message.
inline constexpr int64_t kMaxIoTaskBytes = 8 << 20;

// Bytes a result may take so that its job, with the spec `args` came from,
// fits one message of `max_message_bytes` (kMessageEnvelopeBytes); 0 if
// none.
size_t ResultRoom(size_t max_message_bytes, const TaskArgs& args);

struct ExecOptions {
  // Absolute paths of the programs exec may run; empty: exec is disabled.
  std::vector<std::string> allow;
  // Names of the environment variables a job may set (`env`); any other
  // name is refused. Empty: none.
  std::vector<std::string> env_allow;
  // After SIGTERM to a cancelled or timed-out program's process group, how
  // long until SIGKILL.
  absl::Duration kill_grace = absl::Seconds(1);
};

// Where and as whom exec starts programs: fixed for the daemon's life
// (main() sets it up before any thread; the fds stay open as long).
struct ExecSandbox {
  // In every program's environment ("JOBD_INSTANCE=<run id>",
  // workers/guardian.h), after PATH; empty: none.
  std::string instance_env;
  // The guardian's PID and mount namespaces; -1: none.
  int pid_ns_fd = -1;
  int mount_ns_fd = -1;
  // The guardian's sweep request pipe (a byte after each program); -1: none.
  int notify_fd = -1;
  // The user and group programs run as (--worker-user); none: jobd's.
  std::optional<std::pair<uid_t, gid_t>> run_as;
  // rlimits of every program started with this sandbox (command tasks get
  // the workers' --worker-rlimit-as, -cpu, -nofile; exec's programs none);
  // 0: jobd's own.
  uint64_t max_address_space = 0;
  uint64_t max_cpu_seconds = 0;
  uint64_t max_open_files = 0;
};

// exec's options, replaceable while jobs run (jobd reloads them on SIGHUP):
// a job uses the options current when it was validated and started.
class ExecPolicy {
 public:
  explicit ExecPolicy(ExecOptions options = {})
      : current_(std::make_shared<const ExecOptions>(std::move(options))) {}
  std::shared_ptr<const ExecOptions> Get() const {
    absl::MutexLock lock(&mu_);
    return current_;
  }
  void Set(ExecOptions options) {
    auto next = std::make_shared<const ExecOptions>(std::move(options));
    absl::MutexLock lock(&mu_);
    current_ = std::move(next);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const ExecOptions> current_ ABSL_GUARDED_BY(mu_);
};

// Why `name` cannot be a variable exec passes on, or "" if it can: names
// are [A-Za-z_][A-Za-z0-9_]*, at most 128 characters, and not the ones
// jobd sets itself (PATH, JOBD_INSTANCE).
std::string ExecEnvNameProblem(std::string_view name);

std::shared_ptr<const AsyncTask> AsyncSleep();
// `max_message_bytes`: the daemon's message limit, which bounds what a job's
// result may be (a request that could exceed it is rejected).
// `http` (null: public addresses only) says where http.get may connect.
TaskDef HttpGetTask(size_t max_message_bytes,
                    std::shared_ptr<const HttpPolicy> http = nullptr);
// `sandbox` is read when a program starts (null: none of it).
TaskDef ExecTask(std::shared_ptr<const ExecPolicy> policy,
                 std::shared_ptr<const ExecSandbox> sandbox,
                 size_t max_message_bytes);

}  // namespace jobd

#endif  // JOBD_WORKERS_TASKS_IO_TASKS_H_
