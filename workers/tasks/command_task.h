// Command tasks: tasks an operator declares in the config file ([[task]]
// tables, server/config/task_config.h) that run a program, not C++.
//
// A CommandSpec says which program runs with which argument template:
// `command` is the argv, each element a template where `{name}` stands for
// the value of parameter `name` (`{{` and `}}` for literal braces). A
// placeholder only ever becomes (part of) the one argv element it is
// written in: a value is never split, never goes through a shell, and may
// hold any byte but NUL. The program gets its stdin from a string parameter
// or the job's payload; its stdout becomes the result as text, JSON or raw
// bytes (the payload); a non-zero exit or a signal fails the job with the
// exit code or signal and the tail of stderr. It runs in exec's sandbox
// (RunProgram, program_run.h) on the reactor; a CPU-bound one holds a
// process-pool slot while it runs (TaskDef::holds_pool_slot).
//
// Thread-safety: a CommandSpec and a CommandTemplate are immutable values;
// the TaskDef CommandTask returns is shareable like any other.
#ifndef JOBD_WORKERS_TASKS_COMMAND_TASK_H_
#define JOBD_WORKERS_TASKS_COMMAND_TASK_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "workers/sdk/task.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {

struct CommandSpec {
  enum class Result { kText, kJson, kBytes };

  std::string name;
  std::string description;
  // Where it was declared ("line 12"), for messages.
  std::string origin;
  // command[0]: the program's absolute path (no placeholder); the rest:
  // argument templates.
  std::vector<std::string> command;
  // Declared in order (positional arguments bind in this order). Types:
  // string, int, number or bool.
  std::vector<TaskParam> params;
  v1::JobKind kind = v1::JOB_KIND_IO_BOUND;
  absl::Duration timeout = absl::ZeroDuration();  // Zero: none.
  Result result = Result::kText;
  std::string stdin_param;  // A string parameter; empty: the payload.
  std::string cwd = "/";
  int64_t max_output_bytes = 1 << 20;  // stdout and stderr kept, each.
  // How many times its jobs are retried after their first run, by default
  // (a spec's retry.max_attempts left unset); none: the daemon's
  // (--retry-attempts). Applied by the spec validator, not by the task.
  std::optional<uint32_t> retries;

  // The declaration in one string, its origin aside: equal for the same
  // declaration (a reload keeps such a task as it is).
  std::string Fingerprint() const;
};

const char* ResultName(CommandSpec::Result result);

// A parsed `command`: each element a list of literal text and parameter
// references.
class CommandTemplate {
 public:
  // InvalidArgument naming the element ("command[2]: unknown placeholder
  // {sz} (parameters: src, size)") for a malformed template, and for a
  // spec whose other fields do not hold together (a relative program, an
  // unsupported parameter type, a stdin parameter that is not a string, a
  // placeholder whose parameter may have no value, a parameter used
  // nowhere).
  static absl::StatusOr<CommandTemplate> Parse(const CommandSpec& spec);

  // The argv for a job's bound arguments: every element is one argument,
  // whatever its value holds. InvalidArgument naming the parameter if a
  // value holds a NUL byte (argv cannot carry one).
  absl::StatusOr<std::vector<std::string>> Build(const TaskArgs& args) const;

 private:
  struct Piece {
    std::string text;  // Literal text, when param < 0.
    int param = -1;    // Index into the spec's params.
  };
  std::vector<TaskParam> params_;
  std::vector<std::vector<Piece>> elements_;
};

// The task for `spec` (checked with CommandTemplate::Parse): async, on the
// reactor; `policy` supplies the kill grace (exec's), `sandbox` where and
// as whom it runs.
absl::StatusOr<TaskDef> CommandTask(std::shared_ptr<const CommandSpec> spec,
                                    std::shared_ptr<const ExecPolicy> policy,
                                    std::shared_ptr<const ExecSandbox> sandbox);

}  // namespace jobd

#endif  // JOBD_WORKERS_TASKS_COMMAND_TASK_H_
