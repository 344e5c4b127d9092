// The `exec` task (workers/io_tasks.h): runs an allowlisted program as a
// child of the daemon and waits for it on the reactor, without a thread.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/os/fd_limit.h"
#include "workers/os/guardian.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/utf8.h"
#include "workers/tasks/io_tasks.h"
#include "workers/tasks/program_run.h"

namespace jobd {
namespace {

using google::protobuf::Value;

// Why the job may not set variable `name` under `options`, or "".
absl::Status EnvNameStatus(const ExecOptions& options,
                           const std::string& name) {
  const std::string problem = ExecEnvNameProblem(name);
  if (!problem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("env.", ClipUtf8(name, 128), ": ", problem));
  }
  if (std::find(options.env_allow.begin(), options.env_allow.end(), name) ==
      options.env_allow.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "env.", name,
        ": not on this daemon's exec environment allowlist "
        "(--exec-env-allow: ",
        options.env_allow.empty() ? "empty"
                                  : absl::StrJoin(options.env_allow, ", "),
        ")"));
  }
  return absl::OkStatus();
}

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The allowlisted path `program` names: the path itself, or a bare name
// that is the basename of exactly one allowlisted path.
absl::StatusOr<std::string> Resolve(const ExecOptions& options,
                                    const std::string& program) {
  if (options.allow.empty()) {
    return absl::FailedPreconditionError(
        "exec is disabled: this daemon's exec allowlist (--exec-allow) is "
        "empty");
  }
  std::vector<std::string> matches;
  for (const std::string& allowed : options.allow) {
    if (program.find('/') != std::string::npos ? program == allowed
                                               : Basename(allowed) == program) {
      matches.push_back(allowed);
    }
  }
  if (matches.size() == 1) return matches.front();
  if (matches.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("argv[0]: '", program, "' is ambiguous (",
                     absl::StrJoin(matches, ", "), "): give the full path"));
  }
  return absl::PermissionDeniedError(
      absl::StrCat("argv[0]: '", ClipUtf8(program, 256),
                   "' is not on this daemon's exec allowlist (--exec-allow: ",
                   absl::StrJoin(options.allow, ", "), ")"));
}

absl::Status Validate(const ExecOptions& options, size_t max_message_bytes,
                      const TaskArgs& args) {
  const auto& argv = args.Find("argv")->list_value().values();
  if (argv.empty()) {
    return absl::InvalidArgumentError("argv: must name a program");
  }
  for (int i = 0; i < argv.size(); ++i) {
    if (argv[i].kind_case() != Value::kStringValue ||
        argv[i].string_value().find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("argv[", i, "]: must be a string without NUL bytes"));
    }
  }
  if (const Value* env = args.Find("env")) {
    for (const auto& [name, value] : env->struct_value().fields()) {
      if (absl::Status s = EnvNameStatus(options, name); !s.ok()) return s;
      if (value.kind_case() != Value::kStringValue ||
          value.string_value().find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("env.", name, ": must be a string without NUL bytes"));
      }
    }
  }
  const std::string& cwd = args.String("cwd");
  if (cwd.empty() || cwd[0] != '/') {
    return absl::InvalidArgumentError("cwd: must be an absolute path");
  }
  const int64_t limit = args.Int("max_output_bytes");
  if (limit < 0 || limit > kMaxIoTaskBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_output_bytes: must be between 0 and ", kMaxIoTaskBytes));
  }
  // The result holds stdout twice (text and payload) and stderr once, at
  // most `limit` bytes each, in one message with the spec.
  const size_t room = ResultRoom(max_message_bytes, args);
  const int64_t fits =
      static_cast<int64_t>(room > 1024 ? (room - 1024) / 3 : 0);
  if (limit > fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_output_bytes: ", limit,
        " does not fit: stdout comes back twice "
        "(text and payload) and stderr once, in one message with the spec; "
        "at most ",
        fits, " with this daemon's --max-message-bytes (", max_message_bytes,
        ")"));
  }
  return Resolve(options, argv[0].string_value()).status();
}

asio::awaitable<absl::StatusOr<TaskOutput>> Exec(
    AsyncTaskContext& ctx, std::shared_ptr<const ExecOptions> current,
    std::shared_ptr<const ExecSandbox> sandbox) {
  const ExecOptions& options = *current;  // Kept for the whole run.
  const TaskArgs& a = ctx.args();
  ProgramRun run;
  for (const Value& v : a.Find("argv")->list_value().values()) {
    run.argv.push_back(v.string_value());
  }
  absl::StatusOr<std::string> path = Resolve(options, run.argv[0]);
  if (!path.ok()) co_return path.status();
  run.path = *path;
  // What the job set of the allowlisted names (checked again: a reload may
  // have narrowed the allowlist since the job was accepted).
  std::map<std::string, std::string> env_map;
  if (const Value* env = a.Find("env")) {
    for (const auto& [name, value] : env->struct_value().fields()) {
      if (absl::Status s = EnvNameStatus(options, name); !s.ok()) co_return s;
      env_map[name] = value.string_value();
    }
  }
  for (const auto& [name, value] : env_map) {
    run.env.push_back(name + "=" + value);
  }
  const Value* stdin_arg = a.Find("stdin");
  run.input = stdin_arg != nullptr ? stdin_arg->string_value() : a.payload();
  run.cwd = a.String("cwd");
  run.limit = static_cast<size_t>(a.Int("max_output_bytes"));
  run.kill_grace = options.kill_grace;
  absl::StatusOr<ProgramEnd> ended =
      co_await RunProgram(ctx, *sandbox, std::move(run));
  if (!ended.ok()) co_return ended.status();
  ProgramEnd& end = *ended;
  const size_t limit = static_cast<size_t>(a.Int("max_output_bytes"));
  TaskOutput result;
  auto& f = *result.value.mutable_struct_value()->mutable_fields();
  if (end.exited) {
    f["exit_code"].set_number_value(end.exit_code);
    f["signal"].set_null_value(google::protobuf::NULL_VALUE);
  } else {
    f["exit_code"].set_null_value(google::protobuf::NULL_VALUE);
    f["signal"].set_string_value(ExitSignalName(end.signal));
  }
  f["stdout"].set_string_value(
      OutputText(end.stdout_bytes, limit, &end.stdout_truncated));
  f["stderr"].set_string_value(
      OutputText(end.stderr_bytes, limit, &end.stderr_truncated));
  f["stdout_truncated"].set_bool_value(end.stdout_truncated);
  f["stderr_truncated"].set_bool_value(end.stderr_truncated);
  f["duration_ms"].set_number_value(absl::ToDoubleMilliseconds(end.elapsed));
  if (a.Bool("check") && (!end.exited || end.exit_code != 0)) {
    const std::string tail = TailText(end.stderr_bytes, 512);
    co_return absl::UnknownError(absl::StrCat(
        "exec ", *path, ": ",
        end.exited
            ? absl::StrCat("exited with code ", end.exit_code)
            : absl::StrCat("killed by signal ", ExitSignalName(end.signal)),
        tail.empty() ? "" : "; stderr: ", tail));
  }
  result.payload = std::move(end.stdout_bytes);
  co_return result;
}

}  // namespace

std::string ExecEnvNameProblem(std::string_view name) {
  constexpr std::string_view kSyntax =
      "must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)";
  if (name.empty() || name.size() > 128 || absl::ascii_isdigit(name[0])) {
    return std::string(kSyntax);
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_') return std::string(kSyntax);
  }
  if (name == "PATH" || name == kInstanceEnv) {
    return "is set by jobd itself";
  }
  return "";
}

TaskDef ExecTask(std::shared_ptr<const ExecPolicy> policy,
                 std::shared_ptr<const ExecSandbox> sandbox,
                 size_t max_message_bytes) {
  if (sandbox == nullptr) sandbox = std::make_shared<const ExecSandbox>();
  return {
      .name = "exec",
      .description =
          "Runs an allowlisted program (argv[0]: a path on the daemon's "
          "--exec-allow list, or its basename) in its own process group with "
          "a clean environment (a fixed PATH and JOBD_INSTANCE, plus `env` "
          "of the names on --exec-env-allow), `stdin` (else the payload) as "
          "its input, in `cwd`, as --worker-user if set. Returns "
          "{exit_code, signal, stdout, stderr, stdout_truncated, "
          "stderr_truncated, duration_ms}; the raw stdout is the result "
          "payload. A non-zero exit fails the job unless check=false. "
          "Cancel and timeout kill the program and all it started (SIGTERM, "
          "SIGKILL after a grace); what it leaves running is killed when it "
          "ends. Runs on the reactor only.",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .params = {Param("argv", ParamType::kList,
                       "program and arguments, all strings"),
                 OptionalParam(
                     "env", ParamType::kObject, Value(),
                     "environment variables: {NAME: value}, of the names "
                     "on the daemon's --exec-env-allow list only"),
                 OptionalParam("stdin", ParamType::kString, Value(),
                               "input (default: the job's payload)"),
                 OptionalParam("cwd", ParamType::kString, StringValue("/"),
                               "working directory (absolute)"),
                 OptionalParam("max_output_bytes", ParamType::kInt,
                               NumberValue(1 << 20),
                               "stdout and stderr kept, each; the rest is "
                               "read and dropped (…_truncated); <= 8 MiB, "
                               "and 3x it must fit a message"),
                 OptionalParam("check", ParamType::kBool, BoolValue(true),
                               "fail the job on a non-zero exit or a signal")},
      .async = MakeAsyncTask([policy, sandbox](AsyncTaskContext& ctx) {
        return Exec(ctx, policy->Get(), sandbox);
      }),
      .validate =
          [policy, max_message_bytes](const TaskArgs& args) {
            return Validate(*policy->Get(), max_message_bytes, args);
          },
  };
}

}  // namespace jobd
