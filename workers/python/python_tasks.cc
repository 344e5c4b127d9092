#include "workers/python/python_tasks.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "workers/python/interpreter.h"
#include "workers/sdk/utf8.h"

extern char** environ;

namespace jobd {
namespace {

constexpr size_t kMaxDescriptionBytes = 16u << 20;
constexpr int kAnswerFd = 3;

using google::protobuf::Value;

const Value* Field(const google::protobuf::Struct& s, const char* key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() ? nullptr : &it->second;
}
std::string StringField(const google::protobuf::Struct& s, const char* key) {
  const Value* v = Field(s, key);
  return v != nullptr && v->has_string_value() ? v->string_value() : "";
}
bool BoolField(const google::protobuf::Struct& s, const char* key) {
  const Value* v = Field(s, key);
  return v != nullptr && v->kind_case() == Value::kBoolValue && v->bool_value();
}

absl::StatusOr<ParamType> ParamTypeOf(const std::string& name) {
  for (ParamType t :
       {ParamType::kAny, ParamType::kBool, ParamType::kInt, ParamType::kNumber,
        ParamType::kString, ParamType::kList, ParamType::kObject}) {
    if (name == ParamTypeName(t)) return t;
  }
  return absl::InvalidArgumentError("unknown parameter type '" + name + "'");
}

}  // namespace

absl::StatusOr<std::vector<PythonTaskSpec>> PythonTaskSpecsFromDescription(
    const google::protobuf::ListValue& list) {
  std::vector<PythonTaskSpec> specs;
  for (const Value& v : list.values()) {
    if (!v.has_struct_value()) {
      return absl::InternalError("python describe: not a struct");
    }
    const google::protobuf::Struct& s = v.struct_value();
    PythonTaskSpec spec;
    spec.name = StringField(s, "name");
    spec.module = StringField(s, "module");
    spec.function = StringField(s, "function");
    spec.description = StringField(s, "description");
    const std::string kind = StringField(s, "kind");
    if (kind == "cpu") {
      spec.kind = v1::JOB_KIND_CPU_BOUND;
    } else if (kind == "io") {
      spec.kind = v1::JOB_KIND_IO_BOUND;
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat("Python task '", spec.name, "' (", spec.module, ".",
                       spec.function, "): @jobd.task(kind=", ClipUtf8(kind, 64),
                       "): kind must be \"cpu\" or \"io\""));
    }
    spec.variadic = BoolField(s, "variadic");
    spec.takes_payload = BoolField(s, "payload");
    spec.is_async = BoolField(s, "async");
    if (const Value* params = Field(s, "params");
        params != nullptr && params->has_list_value()) {
      for (const Value& p : params->list_value().values()) {
        if (!p.has_struct_value()) continue;
        const google::protobuf::Struct& ps = p.struct_value();
        TaskParam param;
        param.name = StringField(ps, "name");
        absl::StatusOr<ParamType> type = ParamTypeOf(StringField(ps, "type"));
        if (!type.ok()) return type.status();
        param.type = *type;
        param.required = BoolField(ps, "required");
        if (const Value* d = Field(ps, "default")) {
          param.default_value = *d;
        } else {
          param.default_value.set_null_value(google::protobuf::NULL_VALUE);
        }
        spec.params.push_back(std::move(param));
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

namespace {

absl::Status Errno(std::string_view what) {
  return absl::InternalError(absl::StrCat(
      "python describe: ", std::string(what), ": ", std::strerror(errno)));
}

}  // namespace

std::vector<std::string> PythonTasksOptions::ToArgs() const {
  std::vector<std::string> args;
  for (const std::string& p : paths) {
    args.push_back("--python-path");
    args.push_back(p);
  }
  for (const std::string& m : modules) {
    args.push_back("--python-tasks");
    args.push_back(m);
  }
  if (run_as.has_value()) {
    args.push_back("--python-run-as");
    args.push_back(absl::StrCat(run_as->first, ":", run_as->second));
  }
  return args;
}

PythonTasksOptions PythonTasksOptionsFromArgs(int argc, char** argv,
                                              int first) {
  PythonTasksOptions o;
  for (int i = first; i + 1 < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--python-path") {
      o.paths.push_back(argv[++i]);
    } else if (a == "--python-tasks") {
      o.modules.push_back(argv[++i]);
    } else if (a == "--python-run-as") {
      std::pair<std::string, std::string> ids =
          absl::StrSplit(argv[++i], absl::MaxSplits(':', 1));
      uint32_t uid = 0, gid = 0;
      if (absl::SimpleAtoi(ids.first, &uid) &&
          absl::SimpleAtoi(ids.second, &gid)) {
        o.run_as =
            std::make_pair(static_cast<uid_t>(uid), static_cast<gid_t>(gid));
      }
    }
  }
  return o;
}

absl::StatusOr<std::vector<PythonTaskSpec>> DescribePythonTasks(
    const std::string& exe, const PythonTasksOptions& options) {
  if (options.empty()) return std::vector<PythonTaskSpec>{};
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Errno("pipe");
  const int read_end = p[0];
  // Not fd 3 itself: dup2 onto the same fd would keep FD_CLOEXEC.
  const int write_end = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
  close(p[1]);
  if (write_end < 0) {
    close(read_end);
    return Errno("fcntl");
  }
  std::vector<std::string> args = {exe, kPythonDescribeFlag,
                                   std::to_string(kAnswerFd)};
  for (std::string& a : options.ToArgs()) args.push_back(std::move(a));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, write_end, kAnswerFd);
  // What a module prints goes to jobd's log, never to its stdout.
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(write_end);
  if (rc != 0) {
    close(read_end);
    return absl::InternalError(absl::StrCat("python describe: posix_spawn ",
                                            exe, ": ", std::strerror(rc)));
  }
  std::string answer;
  bool timed_out = false;
  const absl::Time deadline = absl::Now() + options.describe_timeout;
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{.fd = read_end, .events = POLLIN};
    const int ready = poll(&pfd, 1, static_cast<int>(left_ms));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    char buf[65536];
    const ssize_t n = read(read_end, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (answer.size() + static_cast<size_t>(n) > kMaxDescriptionBytes) {
      timed_out = true;  // Treated alike: the child is killed.
      answer = "its answer is larger than 16 MiB";
      break;
    }
    answer.append(buf, static_cast<size_t>(n));
  }
  close(read_end);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::FailedPreconditionError(
        absl::StrCat("--python-tasks: importing the modules took longer than ",
                     absl::FormatDuration(options.describe_timeout),
                     answer.empty() ? "" : absl::StrCat(" (", answer, ")")));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string why = MakeValidUtf8(answer);
    if (why.empty()) {
      why = WIFSIGNALED(status)
                ? absl::StrCat(
                      "the process describing them was killed by "
                      "signal ",
                      WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")")
                : absl::StrCat("the process describing them exited ",
                               WEXITSTATUS(status));
    }
    return absl::FailedPreconditionError("--python-tasks: " + why);
  }
  google::protobuf::ListValue list;
  if (!list.ParseFromString(answer)) {
    return absl::InternalError("--python-tasks: an unreadable description");
  }
  return PythonTaskSpecsFromDescription(list);
}

absl::Status RegisterPythonTasks(const std::vector<PythonTaskSpec>& specs,
                                 TaskRegistry& registry) {
  for (const PythonTaskSpec& spec : specs) {
    if (spec.is_async) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Python task '", spec.name, "' (", spec.module, ".", spec.function,
          ") is an async def: jobd runs each Python task alone in a "
          "process-pool worker, so that a crash, a timeout or a cancel ends "
          "exactly that job; make it a plain def (it may call asyncio.run) "
          "or run it in your own asyncio program"));
    }
    TaskDef def;
    def.name = spec.name;
    def.description =
        spec.description.empty()
            ? absl::StrCat("Python: ", spec.module, ".", spec.function)
            : spec.description;
    def.default_kind = spec.kind;
    def.params = spec.params;
    def.variadic = spec.variadic;
    def.needs_isolation = true;   // Only the process pool hosts Python.
    def.takes_calls = true;       // A batch: python::CallBatch.
    def.takes_flat_calls = true;  // Flat ones too.
    auto shared = std::make_shared<const PythonTaskSpec>(spec);
    def.run = [shared](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
      if (!ctx.args().spec().calls().empty()) {
        return python::CallBatch(shared->name, shared->params,
                                 shared->takes_payload, ctx);
      }
      return python::Call(shared->name, shared->params, shared->takes_payload,
                          ctx);
    };
    if (absl::Status s = registry.Add(std::move(def)); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Python task '", spec.name, "' (", spec.module, ".",
                       spec.function, "): ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status StartPythonInWorker(const PythonTasksOptions& options,
                                 const std::vector<PythonTaskSpec>& specs) {
  if (absl::Status s = python::Start(options.paths); !s.ok()) return s;
  for (const PythonTaskSpec& spec : specs) {
    if (absl::Status s = python::Bind(spec.name, spec.module, spec.function);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void RunPythonDescribeIfInvoked(int argc, char** argv) {
  if (argc < 3 || std::string_view(argv[1]) != kPythonDescribeFlag) return;
  const int fd = std::atoi(argv[2]);
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // Dies with jobd.
  const PythonTasksOptions options = PythonTasksOptionsFromArgs(argc, argv, 3);
  auto fail = [fd](const std::string& message) {
    std::string m = message;
    size_t off = 0;
    while (off < m.size()) {
      const ssize_t n = write(fd, m.data() + off, m.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    _exit(1);
  };
  // As the workers will run them: a clean environment, the worker user.
  clearenv();
  setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
  if (options.run_as.has_value() && geteuid() == 0 &&
      (setgroups(0, nullptr) != 0 || setgid(options.run_as->second) != 0 ||
       setuid(options.run_as->first) != 0)) {
    fail(absl::StrCat("cannot switch to the worker user: ",
                      std::strerror(errno)));
  }
  if (absl::Status s = python::Start(options.paths); !s.ok()) {
    fail(std::string(s.message()));
  }
  absl::StatusOr<google::protobuf::ListValue> tasks =
      python::Describe(options.modules);
  if (!tasks.ok()) fail(std::string(tasks.status().message()));
  const std::string out = tasks->SerializeAsString();
  size_t off = 0;
  while (off < out.size()) {
    const ssize_t n = write(fd, out.data() + off, out.size() - off);
    if (n <= 0) _exit(1);
    off += static_cast<size_t>(n);
  }
  _exit(0);
}

}  // namespace jobd
