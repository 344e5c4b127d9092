// Python tasks in this process's embedded interpreter (workers/python):
// describing a module's @jobd.task functions, their parameters from type
// hints, running them with TaskArgs and a TaskContext (conversions both
// ways, the payload, exceptions with their traceback, progress and
// cancellation; batches of calls, flat or not), and what start refuses. The
// daemon end to end (a real process pool, jobctl, crashes, timeouts) is in
// client/python/tests/test_python_tasks.py.
#include "workers/python/python_tasks.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "workers/python/interpreter.h"

// The interpreter lives until the process exits (jobd never finalizes it:
// its workers _exit), so LeakSanitizer would report what it still holds.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libpython3\n";
}

namespace jobd {
namespace {

using ::testing::HasSubstr;

constexpr char kModule[] = R"PY(
import jobd

@jobd.task
def add(a: int, b: int = 2) -> int:
    """Adds two ints.

    More text."""
    return a + b

@jobd.task(name="types", kind="io")
def types(n: int, x: float, s: str, flag: bool, items: list[int],
          opts: dict, anything, *rest, payload: bytes = b""):
    return jobd.Result({"n": n, "n_type": type(n).__name__, "x": x,
                        "x_type": type(x).__name__, "s": s, "flag": flag,
                        "items": items, "opts": opts, "anything": anything,
                        "rest": list(rest)}, payload.upper())

@jobd.task
def raw_bytes():
    return b"\x00\xff"

@jobd.task
def fail(message):
    raise KeyError(message)

@jobd.task
def not_json():
    return {"a": [1, {2}]}

@jobd.task
def watch():
    jobd.progress(0.25, "a quarter")
    return jobd.cancelled()

def helper():  # not a task
    return 1
)PY";

// Tasks the batch tests run (JobSpec.calls).
constexpr char kBatchModule[] = R"PY(
import time

import jobd

@jobd.task
def half(x: float, payload: bytes = b""):
    if x == 3:
        raise ValueError("three")
    if x == 5:
        raise StopIteration("five")
    return [x / 2, type(x).__name__, payload.decode()]

@jobd.task
def pair(a: int, b=None):
    return [a, type(a).__name__, b]

@jobd.task
def slow(x):
    time.sleep(0.002)
    return x
)PY";

class PythonTasksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() /
                           ("jobd-pytest-" + std::to_string(getpid())));
    std::filesystem::create_directories(*dir_);
    std::ofstream(*dir_ + "/unit_tasks.py") << kModule;
    std::ofstream(*dir_ + "/unit_batch.py") << kBatchModule;
    std::ofstream(*dir_ + "/unit_broken.py")
        << "import jobd\nraise OSError('cannot load')\n";
    std::ofstream(*dir_ + "/unit_async.py")
        << "import jobd\n@jobd.task\nasync def nap():\n    pass\n";
    ASSERT_TRUE(python::Start({*dir_, std::string(JOBD_TEST_SOURCE_DIR) +
                                          "/client/python"})
                    .ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  // The specs of `module`, registered (and bound) in registry_.
  std::vector<PythonTaskSpec> Load(const std::string& module) {
    absl::StatusOr<google::protobuf::ListValue> d = python::Describe({module});
    EXPECT_TRUE(d.ok()) << d.status();
    absl::StatusOr<std::vector<PythonTaskSpec>> specs =
        PythonTaskSpecsFromDescription(*d);
    EXPECT_TRUE(specs.ok()) << specs.status();
    EXPECT_TRUE(RegisterPythonTasks(*specs, registry_).ok());
    PythonTasksOptions options;
    options.modules = {module};
    EXPECT_TRUE(StartPythonInWorker(options, *specs).ok());
    return *specs;
  }

  absl::StatusOr<TaskOutput> Run(const std::string& task,
                                 const std::string& spec_text,
                                 CancelToken* cancel = nullptr) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task);
    for (const std::string& line : {spec_text}) {
      if (!line.empty()) {
        EXPECT_TRUE(
            google::protobuf::TextFormat::ParseFromString(line, spec.get()));
      }
    }
    const TaskDef* def = registry_.Find(task);
    if (def == nullptr) return absl::NotFoundError(task);
    absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(*def, spec);
    if (!args.ok()) return args.status();
    CancelToken own;
    TaskContext ctx(*args, cancel != nullptr ? *cancel : own,
                    absl::InfiniteFuture(),
                    [this](double f, std::string_view m) {
                      progress_.emplace_back(f, std::string(m));
                    });
    return def->run(ctx);
  }

  static std::string* dir_;
  TaskRegistry registry_;
  std::vector<std::pair<double, std::string>> progress_;
};
std::string* PythonTasksTest::dir_ = nullptr;

TEST_F(PythonTasksTest, ParametersComeFromTheSignature) {
  std::vector<PythonTaskSpec> specs = Load("unit_tasks");
  ASSERT_EQ(specs.size(), 6u);  // helper() is not a task
  const TaskDef* add = registry_.Find("unit_tasks.add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->description, "Adds two ints.");
  EXPECT_EQ(add->default_kind, v1::JOB_KIND_CPU_BOUND);
  EXPECT_TRUE(add->needs_isolation);
  ASSERT_EQ(add->params.size(), 2u);
  EXPECT_EQ(add->params[0].type, ParamType::kInt);
  EXPECT_TRUE(add->params[0].required);
  EXPECT_FALSE(add->params[1].required);
  EXPECT_EQ(add->params[1].default_value.number_value(), 2);
  const TaskDef* types = registry_.Find("types");
  ASSERT_NE(types, nullptr);
  EXPECT_EQ(types->default_kind, v1::JOB_KIND_IO_BOUND);
  EXPECT_TRUE(types->variadic);
  std::vector<std::string> got;
  for (const TaskParam& p : types->params) {
    got.push_back(p.name + ":" + ParamTypeName(p.type));
  }
  EXPECT_THAT(
      got, ::testing::ElementsAre("n:int", "x:number", "s:string", "flag:bool",
                                  "items:list", "opts:object", "anything:any"));
}

TEST_F(PythonTasksTest, ArgumentsResultsAndPayloadConvert) {
  Load("unit_tasks");
  absl::StatusOr<TaskOutput> out =
      Run("unit_tasks.add", "args { number_value: 40 }");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->value.number_value(), 42);

  out = Run("types",
            "args { number_value: 3 } args { number_value: 2 } "
            "args { string_value: 'é' } args { bool_value: true } "
            "args { list_value { values { number_value: 1 } } } "
            "args { struct_value { fields { key: 'k' value { null_value: "
            "NULL_VALUE } } } } args { number_value: 1.5 } "
            "args { string_value: 'extra' } payload: 'abc'");
  ASSERT_TRUE(out.ok()) << out.status();
  const auto& f = out->value.struct_value().fields();
  EXPECT_EQ(f.at("n_type").string_value(), "int");
  EXPECT_EQ(f.at("x_type").string_value(), "float");  // float hint
  EXPECT_EQ(f.at("s").string_value(), "é");
  EXPECT_TRUE(f.at("flag").bool_value());
  EXPECT_EQ(f.at("items").list_value().values(0).number_value(), 1);
  EXPECT_TRUE(f.at("opts").struct_value().fields().at("k").has_null_value());
  EXPECT_EQ(f.at("anything").number_value(), 1.5);
  EXPECT_EQ(f.at("rest").list_value().values(0).string_value(), "extra");
  EXPECT_EQ(out->payload, "ABC");

  out = Run("unit_tasks.raw_bytes", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->payload, std::string("\x00\xff", 2));
  EXPECT_TRUE(out->value.has_null_value());
}

TEST_F(PythonTasksTest, AnExceptionFailsWithTypeMessageAndTraceback) {
  Load("unit_tasks");
  absl::StatusOr<TaskOutput> out =
      Run("unit_tasks.fail", "args { string_value: 'gone' }");
  ASSERT_FALSE(out.ok());
  const std::string m(out.status().message());
  EXPECT_EQ(m.substr(0, m.find('\n')), "KeyError: 'gone'");
  EXPECT_THAT(m, HasSubstr("Traceback (most recent call last):"));
  EXPECT_THAT(m, HasSubstr("unit_tasks.py\", line"));
  EXPECT_THAT(m, HasSubstr("raise KeyError(message)"));
}

TEST_F(PythonTasksTest, AResultThatIsNotJsonFailsNamingWhere) {
  Load("unit_tasks");
  absl::StatusOr<TaskOutput> out = Run("unit_tasks.not_json", "");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(),
              HasSubstr("result.a[1]: a set is not a JSON value"));
}

TEST_F(PythonTasksTest, ProgressAndCancellationReachTheTask) {
  Load("unit_tasks");
  absl::StatusOr<TaskOutput> out = Run("unit_tasks.watch", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->value.bool_value());
  ASSERT_EQ(progress_.size(), 1u);
  EXPECT_EQ(progress_[0].first, 0.25);
  EXPECT_EQ(progress_[0].second, "a quarter");
  CancelToken cancel;
  cancel.Cancel(CancelReason::kTimeout);
  out = Run("unit_tasks.watch", "", &cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->value.bool_value());
}

TEST_F(PythonTasksTest, AFlatBatchCallsTheTaskOncePerElement) {
  Load("unit_batch");
  absl::StatusOr<TaskOutput> out =
      Run("unit_batch.half",
          "calls: '[1,2,3,4.0,5,6]' flat_calls: true "
          "payload: 'ab'");
  ASSERT_TRUE(out.ok()) << out.status();
  // The float hint applies to each element; a failed call is null.
  EXPECT_EQ(out->results,
            "[[0.5,\"float\",\"ab\"],[1.0,\"float\",\"ab\"],null,"
            "[2.0,\"float\",\"ab\"],null,[3.0,\"float\",\"ab\"]]");
  ASSERT_EQ(out->call_errors.size(), 2u);
  const v1::CallError& e = out->call_errors[0];
  EXPECT_EQ(e.index(), 2u);
  EXPECT_EQ(e.type(), "ValueError");
  EXPECT_EQ(e.message(), "ValueError: three");
  EXPECT_THAT(e.traceback(), HasSubstr("raise ValueError(\"three\")"));
  EXPECT_THAT(e.traceback(), ::testing::Not(HasSubstr("<jobd batch>")));
  // A StopIteration is a call's exception like any other.
  EXPECT_EQ(out->call_errors[1].index(), 4u);
  EXPECT_EQ(out->call_errors[1].message(), "StopIteration: five");
}

TEST_F(PythonTasksTest, ABatchOfArgumentArraysBindsEachCall) {
  Load("unit_batch");
  absl::StatusOr<TaskOutput> out =
      Run("unit_batch.pair", R"(calls: '[[1],[2.0,"x"],[3,[1]]]')");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->results,
            "[[1,\"int\",null],[2,\"int\",\"x\"],[3,\"int\",[1]]]");
  EXPECT_TRUE(out->call_errors.empty());
  out = Run("unit_batch.half", "calls: '[[5],[6]]'");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->results, "[null,[3.0,\"float\",\"\"]]");
  ASSERT_EQ(out->call_errors.size(), 1u);
  EXPECT_EQ(out->call_errors[0].message(), "StopIteration: five");
}

TEST_F(PythonTasksTest, ACancelledBatchRunsNoFurtherCall) {
  Load("unit_batch");
  CancelToken cancel;
  cancel.Cancel(CancelReason::kCancelled);
  absl::StatusOr<TaskOutput> out =
      Run("unit_batch.slow", "calls: '[1,2,3,4]' flat_calls: true", &cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->results, "[1]");  // The call that saw it, no other.
  out = Run("unit_batch.slow", "calls: '[[1],[2]]'", &cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->results, "[1]");
}

TEST_F(PythonTasksTest, AFailedImportIsRefusedWithItsTraceback) {
  absl::StatusOr<google::protobuf::ListValue> d =
      python::Describe({"unit_broken"});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("OSError: cannot load"));
  EXPECT_THAT(d.status().message(), HasSubstr("unit_broken.py"));
}

TEST_F(PythonTasksTest, AsyncTasksAreRefused) {
  absl::StatusOr<google::protobuf::ListValue> d =
      python::Describe({"unit_async"});
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<std::vector<PythonTaskSpec>> specs =
      PythonTaskSpecsFromDescription(*d);
  ASSERT_TRUE(specs.ok());
  absl::Status s = RegisterPythonTasks(*specs, registry_);
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(s.message(), HasSubstr("'unit_async.nap'"));
  EXPECT_THAT(s.message(), HasSubstr("async def"));
}

TEST(PythonTasksOptionsTest, ArgumentsRoundTrip) {
  PythonTasksOptions o;
  o.modules = {"a", "b.c"};
  o.paths = {"/x", "/y z"};
  o.run_as = std::make_pair(uid_t{65534}, gid_t{65533});
  std::vector<std::string> args = o.ToArgs();
  args.insert(args.begin(), {"jobd", "--other"});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  PythonTasksOptions back =
      PythonTasksOptionsFromArgs(static_cast<int>(argv.size()), argv.data(), 1);
  EXPECT_EQ(back.modules, o.modules);
  EXPECT_EQ(back.paths, o.paths);
  EXPECT_EQ(back.run_as, o.run_as);
}

}  // namespace
}  // namespace jobd
