// Unit tests of command tasks' argument templates (workers/tasks/
// command_task.h) and of the config file's [[task]] tables
// (server/config/toml_config.h).
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/toml_config.h"
#include "workers/sdk/task_registry.h"
#include "workers/tasks/command_task.h"

namespace jobd {
namespace {

using google::protobuf::Value;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

CommandSpec Spec(std::vector<std::string> command,
                 std::vector<TaskParam> params) {
  CommandSpec spec;
  spec.name = "t";
  spec.origin = "line 7";
  spec.command = std::move(command);
  spec.params = std::move(params);
  return spec;
}

// The argv `spec` builds for kwargs `kwargs`.
absl::StatusOr<std::vector<std::string>> Argv(
    const CommandSpec& spec, const std::map<std::string, Value>& kwargs) {
  absl::StatusOr<CommandTemplate> t = CommandTemplate::Parse(spec);
  if (!t.ok()) return t.status();
  TaskDef def{.name = spec.name,
              .params = spec.params,
              .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
                return TaskOutput{};
              }};
  auto job = std::make_shared<v1::JobSpec>();
  for (const auto& [k, v] : kwargs) {
    (*job->mutable_kwargs()->mutable_fields())[k] = v;
  }
  absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(def, job);
  if (!args.ok()) return args.status();
  return t->Build(*args);
}

TEST(CommandTemplateTest, EachPlaceholderStaysInsideItsOneElement) {
  const CommandSpec spec =
      Spec({"/bin/echo", "{a}", "--size={n}x{n}", "{{literal}}", "{b}"},
           {Param("a", ParamType::kString, ""), Param("n", ParamType::kInt, ""),
            OptionalParam("b", ParamType::kBool, BoolValue(true), "")});
  const std::string nasty = "x y; $(rm -rf /) `id` 'q' \"d\"\n-- -rf";
  Value n;
  n.set_number_value(256);
  auto argv = Argv(spec, {{"a", StringValue(nasty)}, {"n", n}});
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_THAT(*argv, ElementsAre("/bin/echo", nasty, "--size=256x256",
                                 "{literal}", "true"));
  // An empty value is still one (empty) argument.
  argv = Argv(spec, {{"a", StringValue("")}, {"n", n}});
  ASSERT_TRUE(argv.ok());
  EXPECT_EQ(argv->size(), 5u);
  EXPECT_EQ((*argv)[1], "");
}

TEST(CommandTemplateTest, NumbersAreWrittenExactly) {
  const CommandSpec spec =
      Spec({"/bin/echo", "{x}"}, {Param("x", ParamType::kNumber, "")});
  Value x;
  x.set_number_value(0.1);
  EXPECT_THAT(*Argv(spec, {{"x", x}}), ElementsAre("/bin/echo", "0.1"));
  x.set_number_value(-3);
  EXPECT_THAT(*Argv(spec, {{"x", x}}), ElementsAre("/bin/echo", "-3"));
  // Beyond int64's range: written as a double, never cast to an integer.
  x.set_number_value(1e300);
  EXPECT_THAT(*Argv(spec, {{"x", x}}), ElementsAre("/bin/echo", "1e+300"));
  x.set_number_value(-0x1p63);
  EXPECT_THAT(*Argv(spec, {{"x", x}}),
              ElementsAre("/bin/echo", "-9.223372036854776e+18"));
}

TEST(CommandTemplateTest, RefusesANulByteAndBindsLikeBuiltIns) {
  const CommandSpec spec =
      Spec({"/bin/echo", "{a}"}, {Param("a", ParamType::kString, "")});
  auto argv = Argv(spec, {{"a", StringValue(std::string("x\0y", 3))}});
  ASSERT_FALSE(argv.ok());
  EXPECT_THAT(argv.status().message(), HasSubstr("a: holds a NUL byte"));
  Value n;
  n.set_number_value(1);
  argv = Argv(spec, {{"a", n}});
  ASSERT_FALSE(argv.ok());
  EXPECT_EQ(argv.status().message(),
            "spec.kwargs.a: expected string, got number");
  argv = Argv(spec, {});
  ASSERT_FALSE(argv.ok());
  EXPECT_THAT(argv.status().message(), HasSubstr("requires argument 'a'"));
}

TEST(CommandTemplateTest, RefusesMalformedTemplatesNamingTheElement) {
  const std::vector<TaskParam> a = {Param("a", ParamType::kString, "")};
  struct Case {
    CommandSpec spec;
    std::string error;
  } cases[] = {
      {Spec({"/bin/echo", "{b}", "{a}"}, a),
       "task 't' (line 7): command[1]: unknown placeholder {b} "
       "(parameters: a)"},
      {Spec({"/bin/echo", "{a"}, a), "command[1]: '{' without '}'"},
      {Spec({"/bin/echo", "a}", "{a}"}, a), "command[1]: a lone '}'"},
      {Spec({"echo", "{a}"}, a), "command[0]: 'echo' is not an absolute path"},
      {Spec({"/bin/{a}"}, a), "command[0]: '/bin/{a}' is not an absolute"},
      {Spec({}, a), "command: must name a program"},
      {Spec({"/bin/echo"}, a), "params.a: used nowhere"},
      {Spec({"/bin/echo", "{a}"}, {Param("a", ParamType::kList, "")}),
       "params.a: type list cannot be an argument"},
      {Spec({"/bin/echo", "{a}"},
            {OptionalParam("a", ParamType::kString, Value(), "")}),
       "{a} is optional without a default"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<CommandTemplate> t = CommandTemplate::Parse(c.spec);
    ASSERT_FALSE(t.ok()) << c.error;
    EXPECT_THAT(t.status().message(), HasSubstr(c.error));
  }
  CommandSpec in = Spec({"/bin/cat"}, a);
  in.stdin_param = "a";
  EXPECT_TRUE(CommandTemplate::Parse(in).ok());
  in.stdin_param = "z";
  EXPECT_THAT(CommandTemplate::Parse(in).status().message(),
              HasSubstr("stdin: no parameter 'z'"));
}

TEST(CommandSpecTest, FingerprintTellsDeclarationsApart) {
  CommandSpec x =
      Spec({"/bin/echo", "{a}"}, {Param("a", ParamType::kString, "")});
  CommandSpec y = x;
  y.origin = "line 99";
  EXPECT_EQ(x.Fingerprint(), y.Fingerprint());
  y.command[1] = "{a}{a}";
  EXPECT_NE(x.Fingerprint(), y.Fingerprint());
  y = x;
  y.timeout = absl::Minutes(5);
  EXPECT_NE(x.Fingerprint(), y.Fingerprint());
}

TEST(CommandTaskTest, TheTaskDefSaysWhatItRuns) {
  CommandSpec spec =
      Spec({"/bin/echo", "a b\n", "{x}"}, {Param("x", ParamType::kString, "")});
  spec.description = "Echoes";
  spec.kind = v1::JOB_KIND_CPU_BOUND;
  spec.timeout = absl::Seconds(30);
  absl::StatusOr<TaskDef> def =
      CommandTask(std::make_shared<const CommandSpec>(spec), nullptr, nullptr);
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(def->description,
            "Echoes [command: /bin/echo 'a b\\n' {x}; result: text; input: "
            "the payload; timeout: 30s]");
  EXPECT_EQ(def->default_kind, v1::JOB_KIND_CPU_BOUND);
  EXPECT_EQ(def->max_timeout, absl::Seconds(30));
  EXPECT_TRUE(def->holds_pool_slot);
  EXPECT_TRUE(def->has_async());
  EXPECT_FALSE(def->has_sync());
  spec.command[1] = "{nope}";
  EXPECT_FALSE(
      CommandTask(std::make_shared<const CommandSpec>(spec), nullptr, nullptr)
          .ok());
}

// ---- [[task]] tables -----------------------------------------------------

TEST(TaskTablesTest, ReadsTheDocumentedForm) {
  auto tasks = ParseCommandTasks(R"(
log-level = "info"

[[task]]
name = "thumb"
description = "Makes a thumbnail"
command = ["/bin/echo", "{src}", "-resize", "{size}", "{dst}"]
params = { src = "string", dst = "string", size = "string = '256x256'" }
kind = "cpu"
timeout = "5m"
result = "json"

[[task]]
name = "count"
command = ["/usr/bin/wc", "-c"]
stdin = "text"
max_output_bytes = 1024
[task.params]
text = { type = "string", help = "what to count" }
)");
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ(tasks->size(), 2u);
  const CommandSpec& t = (*tasks)[0];
  EXPECT_EQ(t.name, "thumb");
  EXPECT_EQ(t.origin, "line 4");
  EXPECT_EQ(t.kind, v1::JOB_KIND_CPU_BOUND);
  EXPECT_EQ(t.timeout, absl::Minutes(5));
  EXPECT_EQ(t.result, CommandSpec::Result::kJson);
  // In the order written, not alphabetical.
  ASSERT_EQ(t.params.size(), 3u);
  EXPECT_EQ(t.params[0].name, "src");
  EXPECT_EQ(t.params[1].name, "dst");
  EXPECT_EQ(t.params[2].name, "size");
  EXPECT_FALSE(t.params[2].required);
  EXPECT_EQ(t.params[2].default_value.string_value(), "256x256");
  const CommandSpec& c = (*tasks)[1];
  EXPECT_EQ(c.stdin_param, "text");
  EXPECT_EQ(c.max_output_bytes, 1024);
  ASSERT_EQ(c.params.size(), 1u);
  EXPECT_EQ(c.params[0].help, "what to count");
  EXPECT_EQ(c.kind, v1::JOB_KIND_IO_BOUND);
}

TEST(TaskTablesTest, RefusesMalformedTablesNamingTheLine) {
  struct Case {
    std::string toml, error;
  } cases[] = {
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"{x}\"]\n",
       "task 'a' (line 1): command[1]: unknown placeholder {x}"},
      {"\n[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"{x}\"]\n"
       "params = { x = \"strng\" }\n",
       "task 'a' (line 5): params.x: unknown type 'strng'"},
      {"[[task]]\nname = \"a\"\ncommand = [\"bin/echo\"]\n",
       "task 'a' (line 1): command[0]: 'bin/echo' is not an absolute path"},
      {"[[task]]\nname = \"a\"\n", "task 'a' (line 1): command: missing"},
      {"[[task]]\ncommand = [\"/bin/echo\"]\n", "(line 1): name: missing"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\"]\ncomand = 1\n",
       "task 'a' (line 4): unknown key 'comand'"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\"]\nkind = \"gpu\"\n",
       "task 'a' (line 4): kind: 'gpu' is not \"cpu\" or \"io\""},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\"]\ntimeout = \"5\"\n",
       "(line 4): timeout: '5' is not a positive duration"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/no/such/program\"]\n",
       "(line 3): command[0]: '/no/such/program' is not an executable file"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"{x}\"]\n"
       "params = { x = \"int = 'seven'\" }\n",
       "(line 4): params.x default: expected int, got string"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"{x}{y}\"]\n"
       "params = { x = \"int = 1\", y = \"int\" }\n",
       "(line 4): params.y: a required parameter cannot follow"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\"]\n"
       "[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\"]\n",
       "task 'a' (line 4): name: already declared at line 1"},
      {"[[task]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"{x}\"]\n"
       "params = { x = \"int = 1\\ny = 2\" }\n",
       "(line 4): params.x: default ' 1\ny = 2' is more than one TOML value"},
      {"task = 3\n", "line 1: task: declare command tasks as [[task]] tables"},
      {"[[task]\n", "line 1"},
  };
  for (const Case& c : cases) {
    auto tasks = ParseCommandTasks(c.toml);
    ASSERT_FALSE(tasks.ok()) << c.toml;
    EXPECT_THAT(tasks.status().message(), HasSubstr(c.error)) << c.toml;
  }
}

}  // namespace
}  // namespace jobd
