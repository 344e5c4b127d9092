#include "workers/tasks/command_task.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/utf8.h"
#include "workers/tasks/program_run.h"

namespace jobd {
namespace {

using google::protobuf::Value;

// The stderr a failed run's error keeps (its end).
constexpr size_t kStderrTail = 2048;

bool IsParamName(std::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

std::string ParamNames(const std::vector<TaskParam>& params) {
  std::vector<std::string> names;
  for (const TaskParam& p : params) names.push_back(p.name);
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

// A bound value as argument text.
std::string ArgText(const Value& v) {
  switch (v.kind_case()) {
    case Value::kStringValue:
      return v.string_value();
    case Value::kBoolValue:
      return v.bool_value() ? "true" : "false";
    case Value::kNumberValue: {
      const double d = v.number_value();
      // Whole numbers within int64's range print as integers (a cast of
      // one outside it is undefined).
      if (std::fabs(d) < 0x1p63 &&
          d == static_cast<double>(static_cast<int64_t>(d))) {
        return absl::StrCat(static_cast<int64_t>(d));
      }
      return fmt::format("{}", d);
    }
    default:
      return "";
  }
}

// `arg` as it would be typed to a shell, for descriptions: quoted when it
// holds anything but plain characters, control characters escaped.
std::string Shown(const std::string& arg) {
  const bool plain =
      !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
        return absl::ascii_isalnum(c) ||
               std::string_view("/-_.,:=+%@{}").find(c) !=
                   std::string_view::npos ||
               static_cast<unsigned char>(c) >= 0x80;
      });
  if (plain) return arg;
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') {
      out += "'\\''";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "'";
}

absl::StatusOr<TaskOutput> Outcome(const CommandSpec& spec, ProgramEnd& end) {
  const std::string& path = spec.command[0];
  if (!end.exited || end.exit_code != 0) {
    const std::string tail = TailText(end.stderr_bytes, kStderrTail);
    return absl::UnknownError(absl::StrCat(
        spec.name, ": ", path, " ",
        end.exited
            ? absl::StrCat("exited with code ", end.exit_code)
            : absl::StrCat("was killed by signal ", ExitSignalName(end.signal)),
        tail.empty() ? "; stderr: (empty)" : "; stderr: ", tail));
  }
  if (end.stdout_truncated) {
    return absl::ResourceExhaustedError(absl::StrCat(
        spec.name, ": ", path, " wrote more than ", spec.max_output_bytes,
        " bytes to stdout (max_output_bytes)"));
  }
  TaskOutput out;
  switch (spec.result) {
    case CommandSpec::Result::kText: {
      bool cut = false;
      out.value.set_string_value(
          OutputText(end.stdout_bytes, end.stdout_bytes.size(), &cut));
      break;
    }
    case CommandSpec::Result::kJson: {
      const auto parsed = google::protobuf::util::JsonStringToMessage(
          end.stdout_bytes, &out.value);
      if (!parsed.ok() || out.value.kind_case() == Value::KIND_NOT_SET) {
        return absl::InvalidArgumentError(absl::StrCat(
            spec.name, ": ", path,
            " did not write one JSON value to stdout (result = \"json\"): ",
            parsed.ok() ? "empty" : std::string(parsed.message()),
            "; stdout begins: ",
            std::string(Utf8Prefix(MakeValidUtf8(end.stdout_bytes), 200))));
      }
      break;
    }
    case CommandSpec::Result::kBytes:
      out.value.set_null_value(google::protobuf::NULL_VALUE);
      out.payload = std::move(end.stdout_bytes);
      break;
  }
  return out;
}

asio::awaitable<absl::StatusOr<TaskOutput>> RunCommand(
    AsyncTaskContext& ctx, std::shared_ptr<const CommandSpec> spec,
    std::shared_ptr<const CommandTemplate> argv_template,
    std::shared_ptr<const ExecOptions> options,
    std::shared_ptr<const ExecSandbox> sandbox) {
  const TaskArgs& a = ctx.args();
  absl::StatusOr<std::vector<std::string>> argv = argv_template->Build(a);
  if (!argv.ok()) co_return argv.status();
  ProgramRun run;
  run.path = spec->command[0];
  run.argv = *std::move(argv);
  run.cwd = spec->cwd;
  run.limit = static_cast<size_t>(spec->max_output_bytes);
  run.kill_grace = options->kill_grace;
  if (!spec->stdin_param.empty()) {
    const Value* in = a.Find(spec->stdin_param);
    if (in != nullptr) run.input = in->string_value();
  } else {
    run.input = a.payload();
  }
  absl::StatusOr<ProgramEnd> end =
      co_await RunProgram(ctx, *sandbox, std::move(run));
  if (!end.ok()) {
    co_return absl::Status(
        end.status().code(),
        absl::StrCat(spec->name, ": ", end.status().message()));
  }
  co_return Outcome(*spec, *end);
}

}  // namespace

const char* ResultName(CommandSpec::Result result) {
  switch (result) {
    case CommandSpec::Result::kText:
      return "text";
    case CommandSpec::Result::kJson:
      return "json";
    case CommandSpec::Result::kBytes:
      return "bytes";
  }
  return "?";
}

std::string CommandSpec::Fingerprint() const {
  std::string out;
  auto add = [&out](std::string_view field) {
    absl::StrAppend(&out, field.size(), ":", std::string(field), ";");
  };
  add(name);
  add(description);
  for (const std::string& c : command) add(c);
  add("|");
  for (const TaskParam& p : params) {
    add(p.name);
    add(ParamTypeName(p.type));
    add(p.required ? "r" : "o");
    add(p.help);
    add(p.default_value.SerializeAsString());
  }
  add(absl::StrCat(kind, "|", absl::FormatDuration(timeout), "|",
                   static_cast<int>(result), "|", max_output_bytes));
  add(stdin_param);
  add(cwd);
  return out;
}

absl::StatusOr<CommandTemplate> CommandTemplate::Parse(
    const CommandSpec& spec) {
  auto error = [&](std::string what) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", spec.name, "' (", spec.origin, "): ", what));
  };
  if (spec.command.empty()) return error("command: must name a program");
  const std::string& program = spec.command[0];
  if (program.empty() || program[0] != '/' ||
      program.find('{') != std::string::npos) {
    return error(absl::StrCat("command[0]: '", ClipUtf8(program, 256),
                              "' is not an absolute path (no placeholder)"));
  }
  if (spec.cwd.empty() || spec.cwd[0] != '/') {
    return error(absl::StrCat("cwd: '", ClipUtf8(spec.cwd, 256),
                              "' is not an absolute path"));
  }
  if (spec.max_output_bytes < 0 || spec.max_output_bytes > kMaxIoTaskBytes) {
    return error(absl::StrCat("max_output_bytes: must be between 0 and ",
                              kMaxIoTaskBytes));
  }
  std::vector<bool> used(spec.params.size(), false);
  for (size_t i = 0; i < spec.params.size(); ++i) {
    const TaskParam& p = spec.params[i];
    if (!IsParamName(p.name)) {
      return error(absl::StrCat("params.", ClipUtf8(p.name, 128),
                                ": a name is [A-Za-z_][A-Za-z0-9_]*"));
    }
    if (p.type != ParamType::kString && p.type != ParamType::kInt &&
        p.type != ParamType::kNumber && p.type != ParamType::kBool) {
      return error(absl::StrCat("params.", p.name, ": type ",
                                ParamTypeName(p.type),
                                " cannot be an argument (string, int, "
                                "number or bool)"));
    }
    if (p.name == spec.stdin_param) {
      if (p.type != ParamType::kString) {
        return error(
            absl::StrCat("stdin: parameter '", p.name, "' is not a string"));
      }
      used[i] = true;
    }
  }
  if (!spec.stdin_param.empty() &&
      std::none_of(
          spec.params.begin(), spec.params.end(),
          [&](const TaskParam& p) { return p.name == spec.stdin_param; })) {
    return error(absl::StrCat("stdin: no parameter '", spec.stdin_param,
                              "' (parameters: ", ParamNames(spec.params), ")"));
  }
  CommandTemplate t;
  t.params_ = spec.params;
  for (size_t e = 0; e < spec.command.size(); ++e) {
    const std::string& element = spec.command[e];
    std::vector<Piece> pieces;
    std::string text;
    for (size_t i = 0; i < element.size(); ++i) {
      const char c = element[i];
      if (c == '}') {
        if (i + 1 < element.size() && element[i + 1] == '}') {
          text += '}';
          ++i;
          continue;
        }
        return error(absl::StrCat("command[", e,
                                  "]: a lone '}' (write '}}' for a brace)"));
      }
      if (c != '{') {
        text += c;
        continue;
      }
      if (i + 1 < element.size() && element[i + 1] == '{') {
        text += '{';
        ++i;
        continue;
      }
      const size_t close = element.find('}', i);
      if (close == std::string::npos) {
        return error(absl::StrCat("command[", e,
                                  "]: '{' without '}' (write '{{' for a "
                                  "brace)"));
      }
      const std::string name = element.substr(i + 1, close - i - 1);
      auto it =
          std::find_if(spec.params.begin(), spec.params.end(),
                       [&](const TaskParam& p) { return p.name == name; });
      if (it == spec.params.end()) {
        return error(absl::StrCat(
            "command[", e, "]: unknown placeholder {", ClipUtf8(name, 128),
            "} (parameters: ", ParamNames(spec.params), ")"));
      }
      if (!it->required &&
          it->default_value.kind_case() == Value::KIND_NOT_SET) {
        return error(absl::StrCat("command[", e, "]: {", name,
                                  "} is optional without a default"));
      }
      if (!text.empty()) pieces.push_back({.text = std::move(text)});
      text.clear();
      const int index = static_cast<int>(it - spec.params.begin());
      pieces.push_back({.param = index});
      used[index] = true;
      i = close;
    }
    if (!text.empty() || pieces.empty()) {
      pieces.push_back({.text = std::move(text)});
    }
    t.elements_.push_back(std::move(pieces));
  }
  for (size_t i = 0; i < used.size(); ++i) {
    if (!used[i]) {
      return error(absl::StrCat("params.", spec.params[i].name,
                                ": used nowhere (neither a placeholder in "
                                "command nor stdin)"));
    }
  }
  return t;
}

absl::StatusOr<std::vector<std::string>> CommandTemplate::Build(
    const TaskArgs& args) const {
  std::vector<std::string> argv;
  argv.reserve(elements_.size());
  for (const std::vector<Piece>& pieces : elements_) {
    std::string arg;
    for (const Piece& piece : pieces) {
      if (piece.param < 0) {
        arg += piece.text;
        continue;
      }
      const std::string& name = params_[piece.param].name;
      const Value* v = args.Find(name);
      if (v == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": has no value"));
      }
      const std::string text = ArgText(*v);
      if (text.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": holds a NUL byte, which no program argument can"));
      }
      arg += text;
    }
    argv.push_back(std::move(arg));
  }
  return argv;
}

absl::StatusOr<TaskDef> CommandTask(
    std::shared_ptr<const CommandSpec> spec,
    std::shared_ptr<const ExecPolicy> policy,
    std::shared_ptr<const ExecSandbox> sandbox) {
  absl::StatusOr<CommandTemplate> parsed = CommandTemplate::Parse(*spec);
  if (!parsed.ok()) return parsed.status();
  auto argv_template =
      std::make_shared<const CommandTemplate>(*std::move(parsed));
  if (sandbox == nullptr) sandbox = std::make_shared<const ExecSandbox>();
  if (policy == nullptr) policy = std::make_shared<const ExecPolicy>();
  std::string description = spec->description;
  if (description.empty()) {
    description = absl::StrCat("Runs ", spec->command[0],
                               " (declared in the "
                               "config file)");
  }
  std::vector<std::string> shown;
  for (const std::string& arg : spec->command) shown.push_back(Shown(arg));
  absl::StrAppend(
      &description, " [command: ", absl::StrJoin(shown, " "),
      "; result: ", ResultName(spec->result), "; input: ",
      spec->stdin_param.empty() ? "the payload"
                                : "parameter " + spec->stdin_param,
      spec->timeout > absl::ZeroDuration()
          ? absl::StrCat("; timeout: ", absl::FormatDuration(spec->timeout))
          : "",
      "]");
  return TaskDef{
      .name = spec->name,
      .description = std::move(description),
      .default_kind = spec->kind,
      .params = spec->params,
      .max_timeout = spec->timeout,
      .holds_pool_slot = true,
      .async = MakeAsyncTask(
          [spec, argv_template, policy, sandbox](AsyncTaskContext& ctx) {
            return RunCommand(ctx, spec, argv_template, policy->Get(), sandbox);
          }),
      .validate =
          [argv_template](const TaskArgs& args) {
            return argv_template->Build(args).status();
          },
  };
}

}  // namespace jobd
