// Unit tests: a batch's calls (JobSpec.calls, and flat ones:
// JobSpec.flat_calls) are checked against the task's parameters before the
// job is accepted, every refusal naming the call and the field; tasks that
// do not take batches refuse them.
#include "server/frontend/call_batch.h"

#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/frontend/spec_validator.h"
#include "workers/sdk/task_registry.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

// A task as a Python one looks: takes batches; (a: int, s: string = "x").
TaskDef BatchTask(bool variadic = false) {
  TaskDef def;
  def.name = variadic ? "py.any" : "py.add";
  def.default_kind = v1::JOB_KIND_CPU_BOUND;
  def.needs_isolation = true;
  def.takes_calls = true;
  def.takes_flat_calls = true;
  def.variadic = variadic;
  def.params = {Param("a", ParamType::kInt, ""),
                OptionalParam("s", ParamType::kString, StringValue("x"), "")};
  def.run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
    return TaskOutput();
  };
  return def;
}

std::string Refusal(std::string_view calls, const TaskDef& task, int depth = 32,
                    bool flat = false) {
  size_t n = 0;
  absl::Status s = CheckBatchCalls(calls, flat, task, depth, &n);
  EXPECT_FALSE(s.ok()) << calls;
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.message());
}

TEST(CallBatchTest, AcceptsWellFormedCallsAndCountsThem) {
  const TaskDef task = BatchTask();
  size_t n = 0;
  ASSERT_TRUE(CheckBatchCalls("[[1],[2,\"b\"],[ -3e2 , \"\\u00e9\\n\"]]", false,
                              task, 32, &n)
                  .ok());
  EXPECT_EQ(n, 3u);
  ASSERT_TRUE(CheckBatchCalls(" [ [ 4 ] ] ", false, task, 32, &n).ok());
  EXPECT_EQ(n, 1u);
  // A variadic task takes any arguments, nested values included.
  ASSERT_TRUE(CheckBatchCalls("[[],[1,2,3,{\"k\":[null,true,false]}]]", false,
                              BatchTask(true), 32, &n)
                  .ok());
  EXPECT_EQ(n, 2u);
}

TEST(CallBatchTest, NamesTheCallAndTheFieldOfABadArgument) {
  const TaskDef task = BatchTask();
  EXPECT_EQ(Refusal("[[1],[2],[\"x\"]]", task),
            "spec.calls[2][0] (a): expected int, got string");
  EXPECT_EQ(Refusal("[[1],[2, 3]]", task),
            "spec.calls[1][1] (s): expected string, got number");
  EXPECT_THAT(Refusal("[[1.5]]", task),
              HasSubstr("spec.calls[0][0] (a): expected int, got "
                        "non-integral number 1.5"));
  EXPECT_THAT(Refusal("[[1],[]]", task),
              HasSubstr("spec.calls[1][0] (a): task 'py.add' requires "
                        "argument 'a' (int)"));
  EXPECT_THAT(Refusal("[[1],[1,\"a\",3]]", task),
              HasSubstr("spec.calls[1]: task 'py.add' takes at most 2 "
                        "positional argument(s)"));
  EXPECT_EQ(Refusal("[[1],5]", task),
            "spec.calls[1]: expected an array of positional arguments, got "
            "number");
  EXPECT_EQ(Refusal("[[1e999]]", task),
            "spec.calls[0][0] (a): expected int, got non-integral number inf");
}

TEST(CallBatchTest, RefusesWhatIsNotABatchOrNotJson) {
  const TaskDef task = BatchTask();
  EXPECT_THAT(Refusal("", task), HasSubstr("spec.calls: expected a JSON "
                                           "array of calls"));
  EXPECT_THAT(Refusal("[]", task), HasSubstr("spec.calls: an empty batch"));
  EXPECT_THAT(Refusal("[[1]", task), HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[[1],]", task), HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[[NaN]]", task), HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[[01]]", task), HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[[1]] x", task),
              HasSubstr("more after the batch's array"));
  EXPECT_THAT(Refusal("[[1,\"a\\q\"]]", task), HasSubstr("a bad escape"));
  EXPECT_THAT(Refusal("[[1,\"a\nb\"]]", task),
              HasSubstr("a control character"));
}

TEST(CallBatchTest, LimitsDepthAndCount) {
  const TaskDef any = BatchTask(true);
  EXPECT_EQ(Refusal("[[1,[[[[1]]]]]]", any, 3),
            "spec.calls[0][1]: nested deeper than 3 levels");
  size_t n = 0;
  EXPECT_TRUE(CheckBatchCalls("[[1,[[[1]]]]]", false, any, 3, &n).ok());
  std::string many = "[";
  for (size_t i = 0; i <= kMaxBatchCalls; ++i) many += "[],";
  many.back() = ']';
  EXPECT_THAT(Refusal(many, any),
              HasSubstr("spec.calls: more than 65536 calls"));
}

TEST(CallBatchTest, AFlatBatchChecksEachElementAsTheOnlyArgument) {
  const TaskDef task = BatchTask();
  size_t n = 0;
  ASSERT_TRUE(
      CheckBatchCalls(" [1, 2 ,-3,4e2, 123456789012345]", true, task, 32, &n)
          .ok());
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(Refusal("[1,2,\"x\"]", task, 32, true),
            "spec.calls[2] (a): expected int, got string");
  EXPECT_EQ(Refusal("[1,[2]]", task, 32, true),
            "spec.calls[1] (a): expected int, got list");
  EXPECT_THAT(Refusal("[0,2.5]", task, 32, true),
              HasSubstr("spec.calls[1] (a): expected int, got non-integral "
                        "number 2.5"));
  EXPECT_THAT(Refusal("[9007199254740994]", task, 32, true),
              HasSubstr("spec.calls[0] (a): int out of range"));
  EXPECT_THAT(Refusal("[1,]", task, 32, true),
              HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[]", task, 32, true),
              HasSubstr("spec.calls: an empty batch"));
  EXPECT_THAT(Refusal("{}", task, 32, true),
              HasSubstr("spec.calls: expected a JSON array of arguments"));
  // A variadic task takes anything, nested within the depth limit.
  const TaskDef any = BatchTask(true);
  ASSERT_TRUE(
      CheckBatchCalls("[[1,2],{\"k\":null},\"s\",[]]", true, any, 32, &n).ok());
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(Refusal("[1,[[[[1]]]]]", any, 3, true),
            "spec.calls[1]: nested deeper than 3 levels");
}

TEST(CallBatchTest, AFlatBatchNeedsATaskOfOneArgument) {
  TaskDef two = BatchTask();
  two.params[1].required = true;
  EXPECT_EQ(Refusal("[1]", two, 32, true),
            "spec.flat_calls: task 'py.add' requires argument 's' (string); "
            "a flat batch passes one per call (send argument arrays in "
            "spec.calls)");
  TaskDef none = BatchTask();
  none.params.clear();
  EXPECT_THAT(Refusal("[1]", none, 32, true),
              HasSubstr("spec.flat_calls: task 'py.add' takes no arguments"));
}

TEST(CallBatchTest, NumbersKeepTheirValueOnTheIntegerPath) {
  // Integers up to 15 digits take a path of their own: the same checks.
  const TaskDef task = BatchTask();
  size_t n = 0;
  EXPECT_TRUE(CheckBatchCalls("[0,-0,999999999999999,-999999999999999]", true,
                              task, 32, &n)
                  .ok());
  EXPECT_TRUE(CheckBatchCalls("[9007199254740992,-9007199254740992]", true,
                              task, 32, &n)
                  .ok());
  EXPECT_THAT(Refusal("[-9007199254740994]", task, 32, true),
              HasSubstr("int out of range"));
  EXPECT_THAT(Refusal("[1e0,00]", task, 32, true),
              HasSubstr("spec.calls: not JSON"));
  EXPECT_THAT(Refusal("[-]", task, 32, true),
              HasSubstr("spec.calls: not JSON"));
}

class BatchSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(registry_, {}).ok());
    ASSERT_TRUE(registry_.Add(BatchTask()).ok());
  }
  static v1::JobSpec Batch(std::string task, std::string calls) {
    v1::JobSpec s;
    s.set_task(std::move(task));
    s.set_kind(v1::JOB_KIND_CPU_BOUND);
    s.set_calls(std::move(calls));
    return s;
  }
  std::string Error(v1::JobSpec spec) {
    auto r = ValidateSpec(std::move(spec), registry_, limits_);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : std::string(r.status().message());
  }
  TaskRegistry registry_;
  SpecLimits limits_;
};

TEST_F(BatchSpecTest, AcceptsABatchWithoutBindingItsOwnArguments) {
  auto r = ValidateSpec(Batch("py.add", "[[1],[2,\"y\"]]"), registry_, limits_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->spec->calls(), "[[1],[2,\"y\"]]");
  EXPECT_EQ(r->args.Find("a"), nullptr);  // Each call binds its own.
}

TEST_F(BatchSpecTest, RefusesBatchesWhereTheyDoNotBelong) {
  EXPECT_THAT(Error(Batch("echo", "[[1]]")),
              HasSubstr("spec.calls: task 'echo' does not take batches"));
  v1::JobSpec s = Batch("py.add", "[[1]]");
  s.add_args()->set_number_value(1);
  EXPECT_THAT(Error(s), HasSubstr("spec.calls: set with spec.args"));
  v1::JobSpec chord = Batch("py.add", "[[1]]");
  chord.add_depends_on("17");
  chord.set_dependency_results(true);
  EXPECT_THAT(Error(chord),
              HasSubstr("spec.calls: set with spec.dependency_results"));
  EXPECT_EQ(Error(Batch("py.add", "[[1],[true]]")),
            "spec.calls[1][0] (a): expected int, got bool");
}

TEST_F(BatchSpecTest, AcceptsAFlatBatchForATaskThatTakesOne) {
  v1::JobSpec flat = Batch("py.add", "[1,2,3]");
  flat.set_flat_calls(true);
  auto r = ValidateSpec(flat, registry_, limits_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->spec->flat_calls());
  EXPECT_EQ(r->spec->calls(), "[1,2,3]");
  // The same bytes as argument arrays are not calls.
  EXPECT_EQ(Error(Batch("py.add", "[1,2,3]")),
            "spec.calls[0]: expected an array of positional arguments, got "
            "number");
  flat.set_calls("[1,true]");
  EXPECT_EQ(Error(flat), "spec.calls[1] (a): expected int, got bool");
}

TEST_F(BatchSpecTest, RefusesFlatBatchesWhereTheyDoNotBelong) {
  v1::JobSpec none = Batch("py.add", "");
  none.set_flat_calls(true);
  none.add_args()->set_number_value(1);
  EXPECT_EQ(Error(none), "spec.flat_calls: set without spec.calls");
  TaskDef nested_only = BatchTask();
  nested_only.name = "py.nested";
  nested_only.takes_flat_calls = false;
  ASSERT_TRUE(registry_.Add(std::move(nested_only)).ok());
  v1::JobSpec flat = Batch("py.nested", "[1]");
  flat.set_flat_calls(true);
  EXPECT_THAT(Error(flat),
              HasSubstr("spec.flat_calls: task 'py.nested' does not take "
                        "flat batches"));
  flat.set_task("echo");
  EXPECT_THAT(Error(flat),
              HasSubstr("spec.flat_calls: task 'echo' does not take flat "
                        "batches"));
}

TEST_F(BatchSpecTest, AnOversizedBatchIsRefusedNamingTheField) {
  limits_.max_args_bytes = 1000;
  std::string calls = "[";
  for (int i = 0; i < 200; ++i) calls += "[12345],";
  calls.back() = ']';
  EXPECT_THAT(Error(Batch("py.add", calls)),
              HasSubstr("spec.calls: 1601 bytes, more than the limit of "
                        "1000 (max-args-bytes)"));
}

}  // namespace
}  // namespace jobd
