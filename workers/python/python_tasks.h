// Python tasks: module-level functions decorated with @jobd.task (the jobd
// Python package, client/python/jobd/_task.py) become jobd tasks that the
// process pool's workers run in an embedded CPython.
//
// Where Python runs (never in the daemon, which only links libpython):
//  * At start the daemon learns the tasks by running jobd itself as a
//    short-lived child (`jobd --internal-python-describe`, posix_spawn:
//    safe from a multi-threaded process). The child drops to the worker
//    user, starts an interpreter, imports the modules and answers with each
//    task's name, parameters (from the signature and type hints), kind and
//    docstring. An import that fails ends the child with the traceback,
//    which stops jobd's start.
//  * Each process-pool worker starts its own interpreter after the fork,
//    after switching to the worker user and applying its limits
//    (StartPythonInWorker), imports the modules once and keeps them for
//    every job it runs. The fork server never runs Python: users' code
//    never runs as jobd's user, and a module that crashes or starts
//    threads at import cannot take the fork server down or make its forks
//    unsafe.
//
// A task's arguments and result are JSON values (google.protobuf.Value)
// plus the job's bytes payload (see interpreter.h for the conversions).
// `async def` tasks are refused at start (RegisterPythonTasks).
//
// Thread-safety: DescribePythonTasks may be called from any thread;
// RegisterPythonTasks during start-up only, like TaskRegistry::Add;
// StartPythonInWorker once, in a worker process, before its threads.
#ifndef JOBD_WORKERS_PYTHON_PYTHON_TASKS_H_
#define JOBD_WORKERS_PYTHON_PYTHON_TASKS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"
#include "workers/sdk/task.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// What --python-tasks and --python-path say.
struct PythonTasksOptions {
  std::vector<std::string> modules;  // Dotted module names, imported in order.
  std::vector<std::string> paths;    // Put first on sys.path, in order.
  // The worker user: the describing child runs as it too.
  std::optional<std::pair<uid_t, gid_t>> run_as;
  // Longest the describing child may take (imports included).
  absl::Duration describe_timeout = absl::Seconds(60);

  bool empty() const { return modules.empty(); }
  // As arguments of jobd (--python-tasks M --python-path P
  // --python-run-as UID:GID), for the describing child and a replacement
  // fork server.
  std::vector<std::string> ToArgs() const;
};

// One task a module declares.
struct PythonTaskSpec {
  std::string name;
  std::string module;    // As given to --python-tasks.
  std::string function;  // Its attribute name in the module.
  std::string description;
  v1::JobKind kind = v1::JOB_KIND_CPU_BOUND;
  std::vector<TaskParam> params;
  bool variadic = false;       // *args or **kwargs.
  bool takes_payload = false;  // A parameter named `payload`.
  bool is_async = false;       // An `async def`.
};

// The tasks `options.modules` declare, by running `exe
// --internal-python-describe ...` (see the preamble). FailedPrecondition
// with the child's message (a failed import's traceback) if it fails,
// times out or answers nothing.
absl::StatusOr<std::vector<PythonTaskSpec>> DescribePythonTasks(
    const std::string& exe, const PythonTasksOptions& options);

// The specs in a description the interpreter made (interpreter.h,
// Describe). FailedPrecondition naming the task for a kind other than "cpu"
// or "io".
absl::StatusOr<std::vector<PythonTaskSpec>> PythonTaskSpecsFromDescription(
    const google::protobuf::ListValue& description);

// Adds one TaskDef per spec to `registry`: isolated (process pool only),
// run by this process's interpreter (StartPythonInWorker must have run in
// the process that runs them). FailedPrecondition naming the task for an
// `async def`, InvalidArgument for what TaskRegistry::Add refuses.
absl::Status RegisterPythonTasks(const std::vector<PythonTaskSpec>& specs,
                                 TaskRegistry& registry);

// In a process-pool worker, before its threads: starts the interpreter,
// puts `options.paths` on sys.path, imports the modules and finds each
// spec's function. Call at most once per process.
absl::Status StartPythonInWorker(const PythonTasksOptions& options,
                                 const std::vector<PythonTaskSpec>& specs);

// argv[1] of jobd as the describing child.
inline constexpr char kPythonDescribeFlag[] = "--internal-python-describe";

// If this process is `jobd kPythonDescribeFlag FD ...`, describes the tasks,
// writes the answer to FD and exits (0, or 1 with the error); otherwise
// returns at once. Call first thing in main().
void RunPythonDescribeIfInvoked(int argc, char** argv);

// Parses the arguments ToArgs() wrote (from argv[first] on, ignoring
// others).
PythonTasksOptions PythonTasksOptionsFromArgs(int argc, char** argv, int first);

}  // namespace jobd

#endif  // JOBD_WORKERS_PYTHON_PYTHON_TASKS_H_
