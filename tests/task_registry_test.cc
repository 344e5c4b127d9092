// Unit tests: TaskRegistry registration rules and argument binding.
#include "workers/sdk/task_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;
using ::testing::HasSubstr;

Value Num(double d) {
  Value v;
  v.set_number_value(d);
  return v;
}
Value Str(std::string s) {
  Value v;
  v.set_string_value(std::move(s));
  return v;
}
ListValue Args(std::initializer_list<Value> values) {
  ListValue l;
  for (const Value& v : values) *l.add_values() = v;
  return l;
}

absl::StatusOr<TaskOutput> Noop(TaskContext&) { return TaskOutput{}; }

// Binds through a spec built from raw args, kwargs and payload.
absl::StatusOr<TaskArgs> BindSpec(const TaskDef& task, const ListValue& args,
                                  const Struct& kwargs, std::string payload) {
  auto spec = std::make_shared<v1::JobSpec>();
  *spec->mutable_args() = args.values();
  *spec->mutable_kwargs() = kwargs;
  spec->set_payload(std::move(payload));
  return TaskRegistry::Bind(task, std::move(spec));
}

TaskDef TwoParams() {
  TaskParam a{.name = "a", .type = ParamType::kInt};
  TaskParam b{.name = "b",
              .type = ParamType::kString,
              .required = false,
              .default_value = Str("dflt")};
  return {.name = "t", .params = {a, b}, .run = Noop};
}

TEST(TaskRegistryTest, RejectsBadDefinitions) {
  TaskRegistry r;
  EXPECT_FALSE(r.Add({.name = "", .run = Noop}).ok());
  EXPECT_THAT(r.Add({.name = "x"}).message(), HasSubstr("no implementation"));
  TaskParam p{.name = "p"};
  EXPECT_THAT(r.Add({.name = "dup", .params = {p, p}, .run = Noop}).message(),
              HasSubstr("repeated parameter"));
  TaskParam opt{.name = "o", .required = false};
  EXPECT_THAT(
      r.Add({.name = "order", .params = {opt, p}, .run = Noop}).message(),
      HasSubstr("follows an optional"));
  // A task the reactor runs as the process pool's guest must have an async
  // form (the reactor would call a missing one).
  EXPECT_THAT(r.Add({.name = "slot", .holds_pool_slot = true, .run = Noop})
                  .message(),
              HasSubstr("holds a pool slot"));
  ASSERT_TRUE(r.Add({.name = "ok", .run = Noop}).ok());
  EXPECT_THAT(r.Add({.name = "ok", .run = Noop}).message(),
              HasSubstr("already registered"));
  EXPECT_NE(r.Find("ok"), nullptr);
  EXPECT_EQ(r.Find("missing"), nullptr);
}

TEST(TaskRegistryTest, BindsPositionalKeywordAndDefaults) {
  const TaskDef t = TwoParams();
  auto bound = BindSpec(t, Args({Num(3)}), Struct(), "pay");
  ASSERT_TRUE(bound.ok()) << bound.status();
  EXPECT_EQ(bound->Int("a"), 3);
  EXPECT_EQ(bound->String("b"), "dflt");
  EXPECT_EQ(bound->payload(), "pay");

  Struct kw;
  (*kw.mutable_fields())["b"] = Str("given");
  (*kw.mutable_fields())["a"] = Num(7);
  bound = BindSpec(t, ListValue(), kw, "");
  ASSERT_TRUE(bound.ok()) << bound.status();
  EXPECT_EQ(bound->Int("a"), 7);
  EXPECT_EQ(bound->String("b"), "given");
}

TEST(TaskRegistryTest, BindErrorsNameTheField) {
  const TaskDef t = TwoParams();
  auto s = BindSpec(t, ListValue(), Struct(), "").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("spec.kwargs.a"));
  EXPECT_THAT(s.message(), HasSubstr("requires argument 'a'"));

  s = BindSpec(t, Args({Str("x")}), Struct(), "").status();
  EXPECT_THAT(s.message(),
              HasSubstr("spec.args[0] (a): expected int, got string"));

  s = BindSpec(t, Args({Num(1.5)}), Struct(), "").status();
  EXPECT_THAT(s.message(), HasSubstr("non-integral"));

  s = BindSpec(t, Args({Num(1), Str("b"), Num(3)}), Struct(), "").status();
  EXPECT_THAT(s.message(), HasSubstr("at most 2 positional"));

  Struct kw;
  (*kw.mutable_fields())["zzz"] = Num(1);
  s = BindSpec(t, Args({Num(1)}), kw, "").status();
  EXPECT_THAT(s.message(), HasSubstr("spec.kwargs.zzz"));

  Struct twice;
  (*twice.mutable_fields())["a"] = Num(1);
  s = BindSpec(t, Args({Num(1)}), twice, "").status();
  EXPECT_THAT(s.message(), HasSubstr("also given positionally"));
}

TEST(TaskRegistryTest, VariadicTakesAnything) {
  TaskDef t{.name = "v", .variadic = true, .run = Noop};
  Struct kw;
  (*kw.mutable_fields())["anything"] = Str("x");
  auto bound = BindSpec(t, Args({Num(1), Str("s")}), kw, "");
  ASSERT_TRUE(bound.ok());
  EXPECT_EQ(bound->args().size(), 2);
  EXPECT_EQ(bound->kwargs().fields().size(), 1u);
}

TEST(BuiltinTasksTest, RegistersTheDocumentedSet) {
  TaskRegistry r;
  ASSERT_TRUE(RegisterBuiltinTasks(r, {}).ok());
  for (const char* name : {"echo", "sleep", "primes.count", "fail"}) {
    EXPECT_NE(r.Find(name), nullptr) << name;
  }
  EXPECT_EQ(r.Find("crash"), nullptr) << "crash needs testing_tasks";
  TaskRegistry t;
  ASSERT_TRUE(RegisterBuiltinTasks(t, {.testing_tasks = true}).ok());
  EXPECT_NE(t.Find("crash"), nullptr);
}

TEST(BuiltinTasksTest, CountsPrimes) {
  EXPECT_EQ(CountPrimesInRange(0, 10), 4);  // 2 3 5 7
  EXPECT_EQ(CountPrimesInRange(0, 100000), 9592);
  EXPECT_EQ(CountPrimesInRange(10, 20), 4);  // 11 13 17 19
}

// A group is replaced as a whole; a TaskDef handed out before stays valid
// (retired, not freed), an unchanged one is kept, a flip-flop reuses it.
TEST(TaskRegistryTest, SetGroupReplacesAGroupAndKeepsOldDefinitionsAlive) {
  TaskRegistry r;
  ASSERT_TRUE(r.Add({.name = "builtin", .run = Noop}).ok());
  auto def = [](std::string name, std::string description) {
    return TaskDef{.name = std::move(name),
                   .description = std::move(description),
                   .run = Noop};
  };
  std::vector<std::pair<TaskDef, std::string>> v1;
  v1.emplace_back(def("a", "first a"), "a1");
  v1.emplace_back(def("b", "b"), "b1");
  auto change = r.SetGroup("cfg", std::move(v1));
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->added, (std::vector<std::string>{"a", "b"}));
  const TaskDef* a1 = r.Find("a");
  const TaskDef* b1 = r.Find("b");
  ASSERT_NE(a1, nullptr);

  std::vector<std::pair<TaskDef, std::string>> v2;
  v2.emplace_back(def("a", "second a"), "a2");
  v2.emplace_back(def("b", "b"), "b1");
  v2.emplace_back(def("c", "c"), "c1");
  change = r.SetGroup("cfg", std::move(v2));
  ASSERT_TRUE(change.ok());
  EXPECT_EQ(change->changed, (std::vector<std::string>{"a"}));
  EXPECT_EQ(change->added, (std::vector<std::string>{"c"}));
  EXPECT_TRUE(change->removed.empty());
  EXPECT_EQ(r.Find("b"), b1);  // Unchanged: the same TaskDef.
  EXPECT_NE(r.Find("a"), a1);
  EXPECT_EQ(r.Find("a")->description, "second a");
  EXPECT_EQ(a1->description, "first a");  // Retired, still readable.

  // A name of a task outside the group: refused, nothing changes.
  std::vector<std::pair<TaskDef, std::string>> bad;
  bad.emplace_back(def("builtin", "x"), "x");
  change = r.SetGroup("cfg", std::move(bad));
  ASSERT_FALSE(change.ok());
  EXPECT_THAT(change.status().message(),
              HasSubstr("task 'builtin': the name is taken by a built-in"));
  EXPECT_NE(r.Find("c"), nullptr);
  EXPECT_EQ(r.List().size(), 4u);

  // Back to the first declaration of a: its first TaskDef comes back.
  std::vector<std::pair<TaskDef, std::string>> v3;
  v3.emplace_back(def("a", "first a"), "a1");
  change = r.SetGroup("cfg", std::move(v3));
  ASSERT_TRUE(change.ok());
  EXPECT_EQ(change->removed, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(r.Find("a"), a1);
  EXPECT_EQ(r.Find("b"), nullptr);
  EXPECT_EQ(b1->name, "b");  // Removed, still readable.
}

}  // namespace
}  // namespace jobd
