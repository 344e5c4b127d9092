// Unit tests: the Scheduler's job dependencies (scheduler_deps.cc) through
// its facade: chains, fan-ins, failures and cancellations down the graph,
// the all-ended policy, admission errors, and restore. Dependencies alone
// is dependencies_test's; a real daemon's, dependency_graph_test's
// (integration).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/jobs/dependency_results.h"
#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SchedulerDepsTest : public SchedulerFixture {
 protected:
  // Submits one job of "ok" depending on `deps`.
  Admission SubmitAfter(
      std::vector<uint64_t> deps,
      v1::DependencyPolicy policy = v1::DEPENDENCY_POLICY_UNSPECIFIED,
      absl::Duration delay = absl::ZeroDuration()) {
    return SubmitWith([&](v1::JobSpec& spec) {
      for (uint64_t d : deps) spec.add_depends_on(absl::StrCat(d));
      spec.set_dependency_policy(policy);
      if (delay > absl::ZeroDuration()) {
        spec.mutable_delay()->set_seconds(absl::ToInt64Seconds(delay));
      }
    });
  }
  v1::JobError Error(uint64_t id) { return scheduler_->GetJob(id)->error(); }
  bool Running(uint64_t id) {
    for (uint64_t r : executor().running()) {
      if (r == id) return true;
    }
    return false;
  }
  void Fail(uint64_t id) { executor().Fail(id, absl::InternalError("boom")); }
};

TEST_F(SchedulerDepsTest, AChainOf10000RunsStrictlyInOrder) {
  Build({.max_retained = 20000}, 4);
  std::vector<uint64_t> ids = {Submit(ok_task_).job_id};
  for (int i = 1; i < 10000; ++i) {
    const Admission a = SubmitAfter({ids.back()});
    ASSERT_TRUE(a.status.ok()) << a.status;
    ids.push_back(a.job_id);
  }
  EXPECT_EQ(scheduler_->GetStats().waiting_on_dependencies(), 9999u);
  EXPECT_EQ(scheduler_->GetJob(ids[1])->unmet_dependencies(), 1u);
  std::vector<uint64_t> order;
  for (int i = 0; i < 10000; ++i) {
    // One runs at a time, though 4 slots are free: the next in the chain.
    // (FakeExecutor::running() walks every start: not at each step.)
    if (i % 1000 == 0 || i == 9999) {
      ASSERT_THAT(executor().running(), ElementsAre(ids[i])) << i;
    }
    ASSERT_EQ(State(ids[i]), v1::JOB_STATE_RUNNING) << i;
    if (i + 1 < 10000) {
      ASSERT_EQ(State(ids[i + 1]), v1::JOB_STATE_WAITING) << i;
    }
    order.push_back(ids[i]);
    Done(ids[i]);
  }
  EXPECT_TRUE(executor().running().empty());
  EXPECT_EQ(order, ids);
  EXPECT_EQ(State(ids.back()), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetStats().waiting_on_dependencies(), 0u);
}

TEST_F(SchedulerDepsTest, AFanInOf10000StartsOnceAfterTheLast) {
  Build({.max_retained = 20000}, 8);
  std::vector<uint64_t> deps;
  for (int i = 0; i < 10000; ++i) deps.push_back(Submit(ok_task_).job_id);
  const uint64_t last = SubmitAfter(deps).job_id;
  EXPECT_EQ(scheduler_->GetJob(last)->unmet_dependencies(), 10000u);
  for (int i = 0; i < 10000; ++i) {
    ASSERT_FALSE(executor().run(last).has_value()) << i;  // Never started.
    // (Its snapshot copies 10,000 dependencies: not at each step.)
    if (i % 1000 == 0) {
      ASSERT_EQ(State(last), v1::JOB_STATE_WAITING) << i;
    }
    ASSERT_EQ(State(deps[i]), v1::JOB_STATE_RUNNING) << i;
    Done(deps[i]);
  }
  ASSERT_THAT(executor().running(), ElementsAre(last));
  Done(last);
  int starts = 0;
  for (const auto& chunk : executor().starts()) {
    for (uint64_t id : chunk) starts += id == last;
  }
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(State(last), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerDepsTest, AFailedDependencyFailsTheGraphBelowAndNothingElse) {
  Build({}, 4);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t other = Submit(ok_task_).job_id;
  const uint64_t b = SubmitAfter({a}).job_id;
  const uint64_t c = SubmitAfter({b, other}).job_id;
  const uint64_t d = SubmitAfter({c}).job_id;
  const uint64_t sibling = SubmitAfter({other}).job_id;
  Fail(a);
  EXPECT_EQ(State(b), v1::JOB_STATE_FAILED);
  EXPECT_EQ(Error(b).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(Error(b).message(),
              HasSubstr(absl::StrCat("job ", a,
                                     ", which it depends on, ended "
                                     "FAILED (TASK_ERROR)")));
  EXPECT_EQ(Error(c).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(Error(c).message(),
              HasSubstr(absl::StrCat("job ", b, ", which it depends on")));
  EXPECT_EQ(Error(d).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_EQ(sink_->WaitEnd(d).end()->error().reason(),
            v1::ERROR_REASON_DEPENDENCY_FAILED);
  // Nothing else: the other branch runs on.
  EXPECT_EQ(State(other), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(State(sibling), v1::JOB_STATE_WAITING);
  Done(other);
  EXPECT_TRUE(Running(sibling));
  Done(sibling);
  EXPECT_EQ(State(sibling), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetStats().waiting_on_dependencies(), 0u);
}

TEST_F(SchedulerDepsTest, TheAllEndedPolicyRunsAfterAFailure) {
  Build({}, 4);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t b = Submit(ok_task_).job_id;
  const uint64_t after =
      SubmitAfter({a, b}, v1::DEPENDENCY_POLICY_ALL_ENDED).job_id;
  Fail(a);
  EXPECT_EQ(State(after), v1::JOB_STATE_WAITING);
  Done(b);
  EXPECT_TRUE(Running(after));
  Done(after);
  EXPECT_EQ(State(after), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerDepsTest, CancellingAJobCancelsItsWaitingDependants) {
  Build({}, 2);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t b = SubmitAfter({a}).job_id;
  const uint64_t c = SubmitAfter({b}, v1::DEPENDENCY_POLICY_ALL_ENDED).job_id;
  ASSERT_TRUE(scheduler_->Cancel(a).ok());
  EXPECT_EQ(State(b), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(Error(b).reason(), v1::ERROR_REASON_CANCELLED);
  EXPECT_THAT(Error(b).message(),
              HasSubstr(absl::StrCat("job ", a,
                                     ", which it depends on, was "
                                     "cancelled")));
  EXPECT_EQ(State(c), v1::JOB_STATE_CANCELLED);  // Whatever its policy.
  // Cancelling a waiting dependant itself leaves its dependency alone.
  const uint64_t x = Submit(ok_task_).job_id;
  const uint64_t y = SubmitAfter({x}).job_id;
  ASSERT_TRUE(scheduler_->Cancel(y).ok());
  EXPECT_EQ(State(x), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(scheduler_->GetStats().waiting_on_dependencies(), 0u);
  Done(x);
  EXPECT_EQ(State(x), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerDepsTest, AnUnknownDependencyRefusesThatJobAloneNamingIt) {
  Build({}, 1);
  const uint64_t a = Submit(ok_task_).job_id;
  const Admission bad = SubmitAfter({a, 999});
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status.message(),
            "spec.depends_on[1]: job 999 is unknown or forgotten");
  EXPECT_TRUE(SubmitAfter({a}).status.ok());
  EXPECT_EQ(scheduler_->GetStats().rejected(), 1u);
}

TEST_F(SchedulerDepsTest, ADependencyThatEndedIsResolvedAtAdmission) {
  Build({}, 2);
  const uint64_t ok = Submit(ok_task_).job_id;
  Done(ok);
  const uint64_t failed = Submit(ok_task_).job_id;
  Fail(failed);
  const uint64_t runs = SubmitAfter({ok}).job_id;
  EXPECT_TRUE(Running(runs));
  const uint64_t fails = SubmitAfter({ok, failed}).job_id;
  EXPECT_EQ(Error(fails).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  const uint64_t ended =
      SubmitAfter({failed}, v1::DEPENDENCY_POLICY_ALL_ENDED).job_id;
  EXPECT_TRUE(Running(ended));
}

TEST_F(SchedulerDepsTest, ADelayedDependantWaitsForBoth) {
  Build({}, 2);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t b =
      SubmitAfter({a}, v1::DEPENDENCY_POLICY_UNSPECIFIED, absl::Seconds(10))
          .job_id;
  Done(a);  // Its dependency is met; its delay is not over.
  EXPECT_EQ(State(b), v1::JOB_STATE_WAITING);
  EXPECT_FALSE(Running(b));
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(executor().AwaitStart(b, kWait));
  // The other way round: due, then its dependency ends.
  const uint64_t c = Submit(ok_task_).job_id;
  const uint64_t d =
      SubmitAfter({c}, v1::DEPENDENCY_POLICY_UNSPECIFIED, absl::Seconds(1))
          .job_id;
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(State(d), v1::JOB_STATE_WAITING);
  Done(c);
  EXPECT_TRUE(Running(d));
}

// Journal rows as a previous run left them, and what Restore makes of
// dependants: waiting on, released, or failed by a dependency lost then.
// `other_nodes`: more depends_on, other nodes' job ids ("3@node-b").
JournalRow Row(
    uint64_t id, v1::JobState state, std::vector<uint64_t> deps,
    absl::Time created,
    v1::DependencyPolicy policy = v1::DEPENDENCY_POLICY_UNSPECIFIED,
    std::vector<std::string> other_nodes = {}) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("ok");
  spec->set_kind(v1::JOB_KIND_IO_BOUND);
  for (uint64_t d : deps) spec->add_depends_on(absl::StrCat(d));
  for (const std::string& d : other_nodes) spec->add_depends_on(d);
  spec->set_dependency_policy(policy);
  JournalRow row;
  row.id = id;
  row.spec = spec;
  row.state = state;
  row.executor = v1::EXECUTOR_THREAD;
  row.create_time = created;
  row.accepted_seq = id * 10;
  if (state == v1::JOB_STATE_WAITING) row.due_time = row.create_time;
  if (state == v1::JOB_STATE_RUNNING) {
    row.start_time = row.create_time;
    row.started_seq = id * 10 + 1;
  }
  if (IsTerminal(state)) {
    row.start_time = row.create_time;
    row.finish_time = row.create_time;
    row.ended_seq = id * 10 + 2;
    auto end = std::make_shared<JobEnd>();
    end->state = state;
    row.end = end;
  }
  return row;
}

TEST_F(SchedulerDepsTest, RestoreReleasesWaitsOnOrFailsDependants) {
  Build({}, 4);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(Def("ok")).ok());
  const absl::Time t = clock_.Now() - absl::Minutes(1);
  Recovered old;
  old.rows.push_back(Row(1, v1::JOB_STATE_RUNNING, {}, t));  // Lost now.
  old.rows.push_back(Row(2, v1::JOB_STATE_WAITING, {1}, t));
  old.rows.push_back(Row(3, v1::JOB_STATE_WAITING, {2}, t));
  old.rows.push_back(Row(4, v1::JOB_STATE_QUEUED, {}, t));
  old.rows.push_back(Row(5, v1::JOB_STATE_WAITING, {4}, t));
  old.rows.push_back(Row(6, v1::JOB_STATE_SUCCEEDED, {}, t));
  old.rows.push_back(
      Row(7, v1::JOB_STATE_WAITING, {6}, t));  // Ended meanwhile.
  old.rows.push_back(
      Row(8, v1::JOB_STATE_WAITING, {1}, t, v1::DEPENDENCY_POLICY_ALL_ENDED));
  // A dependency forgotten since (it ended and released 9 for it: that
  // record was lost) counts as met; 9 still waits for 4.
  old.rows.push_back(Row(9, v1::JOB_STATE_WAITING, {99, 4}, t));
  // Another node's job, and this daemon is no longer in a cluster: 10
  // cannot learn its end, so it fails rather than run.
  old.rows.push_back(Row(10, v1::JOB_STATE_WAITING, {4}, t,
                         v1::DEPENDENCY_POLICY_UNSPECIFIED, {"3@node-b"}));
  old.last_sequence = 100;
  scheduler_->Restore(std::move(old), registry);
  EXPECT_EQ(Error(1).reason(), v1::ERROR_REASON_LOST_ON_RESTART);
  EXPECT_EQ(Error(2).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_EQ(Error(3).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_EQ(State(5), v1::JOB_STATE_WAITING);
  EXPECT_EQ(scheduler_->GetJob(5)->unmet_dependencies(), 1u);
  EXPECT_TRUE(Running(4));
  EXPECT_TRUE(Running(7));
  EXPECT_TRUE(Running(8));
  EXPECT_FALSE(Running(5));
  EXPECT_EQ(State(9), v1::JOB_STATE_WAITING);
  EXPECT_EQ(scheduler_->GetJob(9)->unmet_dependencies(), 1u);
  EXPECT_EQ(Error(10).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(Error(10).message(), HasSubstr("'3@node-b' is a job of node"));
  Done(4);
  EXPECT_TRUE(Running(5));
  EXPECT_TRUE(Running(9));
}

// A task taking the results first: merge(parts: list, label: string),
// whose own check refuses a results list holding "bad".
TaskDef MergeTask() {
  TaskDef def = {.name = "merge",
                 .default_kind = v1::JOB_KIND_IO_BOUND,
                 .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
                   return TaskOutput{};
                 }};
  def.params = {{.name = "parts", .type = ParamType::kList},
                {.name = "label", .type = ParamType::kString}};
  def.validate = [](const TaskArgs& args) {
    for (const google::protobuf::Value& v :
         args.Find("parts")->list_value().values()) {
      if (v.string_value() == "bad") {
        return absl::InvalidArgumentError("parts: holds 'bad'");
      }
    }
    return absl::OkStatus();
  };
  return def;
}

class DependencyResultsTest : public SchedulerDepsTest {
 protected:
  // Submits merge(<results of deps>, label) with dependency_results.
  Admission SubmitMerge(
      std::vector<uint64_t> deps, std::string label = "all",
      v1::DependencyPolicy policy = v1::DEPENDENCY_POLICY_UNSPECIFIED) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(merge_.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    for (uint64_t d : deps) spec->add_depends_on(absl::StrCat(d));
    spec->set_dependency_policy(policy);
    spec->set_dependency_results(true);
    spec->add_args()->set_string_value(label);
    std::vector<NewJob> jobs(1);
    jobs[0].task = &merge_;
    absl::StatusOr<TaskArgs> bound = BindSpec(merge_, spec);
    EXPECT_TRUE(bound.ok()) << bound.status();
    jobs[0].args = *std::move(bound);
    jobs[0].spec = std::move(spec);
    jobs[0].tag = next_tag_++;
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
    return out.at(0);
  }
  void SucceedWith(uint64_t id, google::protobuf::Value value) {
    TaskOutput out;
    out.value = std::move(value);
    executor().Succeed(id, std::move(out));
  }
  static google::protobuf::Value Str(std::string s) {
    google::protobuf::Value v;
    v.set_string_value(std::move(s));
    return v;
  }
  static google::protobuf::Value Num(double d) {
    google::protobuf::Value v;
    v.set_number_value(d);
    return v;
  }
  // The `parts` argument the running job `id` was handed, as text.
  std::string PartsOf(uint64_t id) {
    std::optional<JobRun> run = executor().run(id);
    if (!run.has_value()) return "not running";
    std::string out;
    for (const google::protobuf::Value& v :
         run->args->Find("parts")->list_value().values()) {
      absl::StrAppend(&out, out.empty() ? "" : ",", v.ShortDebugString());
    }
    return absl::StrCat(out, " | ", run->args->String("label"));
  }
  const TaskDef merge_ = MergeTask();
};

TEST_F(DependencyResultsTest, TheResultsComeFirstInDependsOnOrder) {
  Build({}, 4);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t b = Submit(ok_task_).job_id;
  const Admission merge = SubmitMerge({b, a}, "sum");
  ASSERT_TRUE(merge.status.ok()) << merge.status;
  EXPECT_EQ(State(merge.job_id), v1::JOB_STATE_WAITING);
  EXPECT_FALSE(
      scheduler_->GetJob(merge.job_id)->spec().dependency_results_passed());
  SucceedWith(a, Num(1));
  EXPECT_EQ(State(merge.job_id), v1::JOB_STATE_WAITING);
  SucceedWith(b, Str("two"));
  ASSERT_TRUE(Running(merge.job_id));
  EXPECT_EQ(PartsOf(merge.job_id),
            "string_value: \"two\",number_value: 1 | sum");
  // The job shows what it was given.
  const v1::JobSpec spec = scheduler_->GetJob(merge.job_id)->spec();
  EXPECT_TRUE(spec.dependency_results_passed());
  ASSERT_EQ(spec.args_size(), 2);
  EXPECT_EQ(spec.args(0).list_value().values_size(), 2);
  EXPECT_EQ(spec.args(1).string_value(), "sum");
  // Dependencies ended before admission: passed at once.
  const Admission late = SubmitMerge({a});
  EXPECT_EQ(PartsOf(late.job_id), "number_value: 1 | all");
}

TEST_F(DependencyResultsTest, UnderAllEndedAFailedDependencyPassesNull) {
  Build({}, 4);
  const uint64_t a = Submit(ok_task_).job_id;
  const uint64_t b = Submit(ok_task_).job_id;
  const uint64_t m =
      SubmitMerge({a, b}, "x", v1::DEPENDENCY_POLICY_ALL_ENDED).job_id;
  Fail(a);
  SucceedWith(b, Num(2));
  EXPECT_EQ(PartsOf(m), "null_value: NULL_VALUE,number_value: 2 | x");
}

TEST_F(DependencyResultsTest, ABatchPassesItsResultsAndNoValuePassesNull) {
  Build({}, 4);
  const uint64_t batch = Submit(ok_task_).job_id;
  const uint64_t empty = Submit(ok_task_).job_id;
  const uint64_t m = SubmitMerge({batch, empty}).job_id;
  TaskOutput out;
  out.results = "[1,null,\"c\"]";
  executor().Succeed(batch, std::move(out));
  executor().Succeed(empty, TaskOutput{});
  EXPECT_EQ(PartsOf(m),
            "list_value { values { number_value: 1 } values { null_value: "
            "NULL_VALUE } values { string_value: \"c\" } },null_value: "
            "NULL_VALUE | all");
}

TEST_F(DependencyResultsTest, AResultNotRetainedOrRefusedFailsTheDependant) {
  Build({.max_retained_result_bytes = 64}, 4);
  const uint64_t big = Submit(ok_task_).job_id;
  const uint64_t m = SubmitMerge({big}).job_id;
  SucceedWith(big, Str(std::string(200, 'x')));  // Dropped: too large.
  EXPECT_EQ(State(m), v1::JOB_STATE_FAILED);
  EXPECT_EQ(Error(m).reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(Error(m).message(),
              HasSubstr(absl::StrCat("spec.dependency_results: the result of "
                                     "job ",
                                     big, " was larger than jobd retains")));
  // The task's own check sees the results, and may refuse them.
  const uint64_t bad = Submit(ok_task_).job_id;
  const uint64_t refused = SubmitMerge({bad}).job_id;
  SucceedWith(bad, Str("bad"));
  EXPECT_EQ(Error(refused).reason(), v1::ERROR_REASON_INVALID_INPUT);
  EXPECT_THAT(Error(refused).message(),
              HasSubstr("task 'merge' refused its dependencies' results: "
                        "parts: holds 'bad'"));
  EXPECT_TRUE(executor().running().empty());
}

TEST_F(DependencyResultsTest, ArgumentsAreCheckedAsIfTheResultsWereThere) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("merge");
  spec->add_depends_on("1");
  spec->set_dependency_results(true);
  spec->add_args()->set_number_value(3);  // label: not a string.
  absl::StatusOr<TaskArgs> bound = BindSpec(merge_, spec);
  EXPECT_EQ(bound.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bound.status().message(),
              HasSubstr("spec.dependency_results: the results go first, in "
                        "spec.args[0], before the arguments given: "
                        "spec.args[1]"));
  spec->mutable_args(0)->set_string_value("ok");
  EXPECT_TRUE(BindSpec(merge_, spec).ok());
  // A task whose first parameter cannot take a list.
  TaskDef sleep = MergeTask();
  sleep.params = {{.name = "ms", .type = ParamType::kInt}};
  spec->clear_args();
  EXPECT_THAT(BindSpec(sleep, spec).status().message(),
              HasSubstr("spec.args[0]"));
}

// Restore: a dependant still awaiting its results binds as at admission
// and gets them once released; one that had them runs with them.
TEST_F(DependencyResultsTest, RestoreBindsAndPassesTheResults) {
  Build({}, 4);
  TaskRegistry registry;
  ASSERT_TRUE(registry.Add(Def("ok")).ok());
  ASSERT_TRUE(registry.Add(MergeTask()).ok());
  const absl::Time t = clock_.Now() - absl::Minutes(1);
  Recovered old;
  old.rows.push_back(Row(1, v1::JOB_STATE_SUCCEEDED, {}, t));
  {
    auto end = std::make_shared<JobEnd>();
    end->state = v1::JOB_STATE_SUCCEEDED;
    end->mutable_result().mutable_value()->set_number_value(7);
    old.rows.back().end = end;
  }
  old.rows.push_back(Row(2, v1::JOB_STATE_QUEUED, {}, t));
  auto merge_row = [&](uint64_t id, std::vector<uint64_t> deps, bool passed) {
    JournalRow row = Row(id, v1::JOB_STATE_WAITING, deps, t);
    v1::JobSpec spec = row.spec.Whole();
    spec.set_task("merge");
    spec.set_dependency_results(true);
    if (passed) {
      spec.add_args()->mutable_list_value()->add_values()->set_number_value(5);
      spec.set_dependency_results_passed(true);
    }
    spec.add_args()->set_string_value(absl::StrCat("row", id));
    row.spec = std::make_shared<v1::JobSpec>(std::move(spec));
    return row;
  };
  old.rows.push_back(merge_row(3, {1}, false));  // Its dependency ended.
  old.rows.push_back(merge_row(4, {2}, false));  // Its dependency did not.
  old.rows.push_back(merge_row(5, {1}, true));   // Released before.
  old.last_sequence = 100;
  scheduler_->Restore(std::move(old), registry);
  EXPECT_EQ(PartsOf(3), "number_value: 7 | row3");
  EXPECT_EQ(PartsOf(5), "number_value: 5 | row5");
  EXPECT_EQ(State(4), v1::JOB_STATE_WAITING);
  SucceedWith(2, Str("late"));
  EXPECT_EQ(PartsOf(4), "string_value: \"late\" | row4");
}

}  // namespace
}  // namespace jobd
