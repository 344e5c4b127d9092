// Unit tests: every malformed JobSpec gets InvalidArgument naming its field.
#include "server/frontend/spec_validator.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

class SpecValidatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(registry_, {}).ok());
  }
  v1::JobSpec Sleep(double ms) {
    v1::JobSpec s;
    s.set_task("sleep");
    s.set_kind(v1::JOB_KIND_IO_BOUND);
    s.add_args()->set_number_value(ms);
    return s;
  }
  std::string Error(v1::JobSpec spec) {
    auto r = ValidateSpec(std::move(spec), registry_, limits_);
    EXPECT_FALSE(r.ok());
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  }
  TaskRegistry registry_;
  SpecLimits limits_;
};

TEST_F(SpecValidatorTest, AcceptsAGoodSpecAndKeepsItsArgs) {
  auto r = ValidateSpec(Sleep(5), registry_, limits_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->task->name, "sleep");
  EXPECT_EQ(r->spec->args_size(), 1);
  EXPECT_EQ(r->args.Int("ms"), 5);
  // Kept without its name (the TaskDef has it), which comes back whole.
  EXPECT_EQ(r->spec->task(), "");
  EXPECT_EQ(r->spec.task(), r->task);
  EXPECT_EQ(r->spec.Whole().SerializeAsString(), Sleep(5).SerializeAsString());
}

TEST_F(SpecValidatorTest, NamesTheBadField) {
  v1::JobSpec s = Sleep(5);
  s.clear_task();
  EXPECT_THAT(Error(s), HasSubstr("spec.task: missing"));
  s.set_task("no.such");
  EXPECT_THAT(Error(s), HasSubstr("unknown task 'no.such'"));

  s = Sleep(5);
  s.set_kind(v1::JOB_KIND_UNSPECIFIED);
  EXPECT_THAT(Error(s), HasSubstr("spec.kind: JOB_KIND_UNSPECIFIED"));
  s.set_kind(static_cast<v1::JobKind>(42));
  EXPECT_THAT(Error(s), HasSubstr("spec.kind: unknown value 42"));

  s = Sleep(5);
  s.set_executor(static_cast<v1::Executor>(9));
  EXPECT_THAT(Error(s), HasSubstr("spec.executor"));

  s = Sleep(5);
  s.mutable_timeout()->set_seconds(-1);
  EXPECT_THAT(Error(s), HasSubstr("spec.timeout: must not be negative"));
  s.mutable_timeout()->set_seconds(0);
  EXPECT_THAT(Error(s), HasSubstr("spec.timeout: must be positive"));

  s = Sleep(5);
  s.set_payload(std::string(limits_.max_payload_bytes + 1, 'x'));
  EXPECT_THAT(Error(s), HasSubstr("spec.payload"));
  EXPECT_THAT(Error(s), HasSubstr("max_payload_bytes"));

  s = Sleep(5);
  s.set_idempotency_key(std::string(1000, 'k'));
  EXPECT_THAT(Error(s), HasSubstr("spec.idempotency_key"));

  s = Sleep(5);
  for (size_t i = 0; i <= limits_.max_labels; ++i) {
    (*s.mutable_labels())["k" + std::to_string(i)] = "v";
  }
  EXPECT_THAT(Error(s), HasSubstr("spec.labels"));

  s = Sleep(5);
  s.clear_args();
  EXPECT_THAT(Error(s), HasSubstr("requires argument 'ms'"));
}

TEST_F(SpecValidatorTest, RejectsDeepNesting) {
  v1::JobSpec s;
  s.set_task("echo");
  s.set_kind(v1::JOB_KIND_AUTO);
  google::protobuf::Value* v = s.add_args();
  for (int i = 0; i < limits_.max_value_depth + 5; ++i) {
    v = v->mutable_list_value()->add_values();
  }
  v->set_number_value(1);
  EXPECT_THAT(Error(s), HasSubstr("nested deeper"));
}

TEST(TraceparentTest, OnlyW3cTraceparentsAreValid) {
  const std::string good =
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_TRUE(IsValidTraceparent(good));
  EXPECT_TRUE(IsValidTraceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
  // A later version may carry more after a '-'.
  EXPECT_TRUE(IsValidTraceparent(
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"));
  for (const std::string& bad : std::vector<std::string>{
           std::string(""),
           good + "-x",            // Version 00: exactly 55.
           good.substr(0, 54),     // Short.
           "ff" + good.substr(2),  // Version ff.
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
       }) {
    EXPECT_FALSE(IsValidTraceparent(bad)) << bad;
  }
}

TEST_F(SpecValidatorTest, ABadTraceparentIsRefusedByName) {
  v1::JobSpec spec = Sleep(1);
  spec.set_traceparent("00-not-a-trace");
  EXPECT_THAT(Error(spec), HasSubstr("spec.traceparent"));
  spec.set_traceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  auto r = ValidateSpec(spec, registry_, limits_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->spec->traceparent(), spec.traceparent());
}

TEST_F(SpecValidatorTest, DependenciesAreCheckedForTheirFormAndCount) {
  limits_.max_dependencies = 2;
  v1::JobSpec ok = Sleep(1);
  ok.add_depends_on("17");
  ok.add_depends_on("18");
  ok.set_dependency_policy(v1::DEPENDENCY_POLICY_ALL_ENDED);
  EXPECT_TRUE(ValidateSpec(ok, registry_, limits_).ok());
  v1::JobSpec many = ok;
  many.add_depends_on("19");
  EXPECT_EQ(Error(many),
            "spec.depends_on: 3 dependencies; the limit is 2 "
            "(max-dependencies)");
  v1::JobSpec bad = Sleep(1);
  bad.add_depends_on("17");
  bad.add_depends_on("0");
  EXPECT_THAT(Error(bad), HasSubstr("spec.depends_on[1]: '0' is not a job id"));
  // Another node's job (this process is in no cluster: every node is
  // another).
  v1::JobSpec other = Sleep(1);
  other.add_depends_on("17@node-b");
  EXPECT_THAT(Error(other),
              HasSubstr("spec.depends_on[0]: '17@node-b' is a job of node "
                        "'node-b'; this node is not in a cluster"));
  // In a cluster it is followed at its node, for its result too.
  limits_.remote_dependencies = true;
  EXPECT_TRUE(ValidateSpec(other, registry_, limits_).ok());
  v1::JobSpec with_result;
  with_result.set_task("echo");
  with_result.set_kind(v1::JOB_KIND_IO_BOUND);
  with_result.add_depends_on("17@node-b");
  with_result.set_dependency_results(true);
  EXPECT_TRUE(ValidateSpec(with_result, registry_, limits_).ok());
  limits_.remote_dependencies = false;
  v1::JobSpec policy = Sleep(1);
  policy.set_dependency_policy(v1::DEPENDENCY_POLICY_ALL_ENDED);
  EXPECT_EQ(Error(policy),
            "spec.dependency_policy: set without spec.depends_on");
  v1::JobSpec unknown = ok;
  unknown.set_dependency_policy(static_cast<v1::DependencyPolicy>(9));
  EXPECT_EQ(Error(unknown),
            "spec.dependency_policy: 9 is not a DependencyPolicy");
}

TEST_F(SpecValidatorTest, DependencyResultsNeedDependenciesAndAListFirst) {
  v1::JobSpec none = Sleep(1);
  none.set_dependency_results(true);
  EXPECT_EQ(Error(none),
            "spec.dependency_results: set without spec.depends_on");
  // sleep(ms) takes an int first: the results (a list) cannot go there.
  v1::JobSpec sleep = Sleep(1);
  sleep.clear_args();
  sleep.add_depends_on("17");
  sleep.set_dependency_results(true);
  EXPECT_THAT(Error(sleep),
              HasSubstr("spec.dependency_results: the results go first, in "
                        "spec.args[0], before the arguments given: "
                        "spec.args[0] (ms): expected int, got list"));
  v1::JobSpec forged = Sleep(1);
  forged.add_depends_on("17");
  forged.set_dependency_results_passed(true);
  EXPECT_EQ(Error(forged),
            "spec.dependency_results_passed: set by jobd, not by clients");
}

TEST_F(SpecValidatorTest, InMemoryIsRefusedWhenForbiddenOrAtLeastOnce) {
  v1::JobSpec s = Sleep(1);
  s.set_in_memory(true);
  EXPECT_TRUE(ValidateSpec(s, registry_, limits_).ok());
  v1::JobSpec again = s;
  again.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  EXPECT_THAT(Error(again), HasSubstr("spec.in_memory: an in-memory job "
                                      "cannot be DELIVERY_AT_LEAST_ONCE"));
  limits_.allow_in_memory = false;
  EXPECT_EQ(Error(s),
            "spec.in_memory: this jobd journals every job (started with "
            "--in-memory-jobs forbid)");
  EXPECT_TRUE(ValidateSpec(Sleep(1), registry_, limits_).ok());
}

TEST_F(SpecValidatorTest, AStreamDeadlineIsNoStartDeadlineForADependant) {
  const absl::Time now = absl::Now();
  v1::JobSpec s = Sleep(1);
  s.add_depends_on("17");
  auto r = ValidateSpec(s, registry_, limits_, now, now + absl::Seconds(5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->spec->has_start_deadline());
}

}  // namespace
}  // namespace jobd
