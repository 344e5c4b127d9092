// Integration tests of job dependencies against the real daemon (the
// binary): a graph in one Submit stream by client tags, run in order; a
// failure down the graph; refusals naming the field, that item alone; and
// dependants across kill -9 (released after the restart, or failed by a
// dependency lost in it).
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/journaled_daemon.h"

namespace jobd {
namespace {

using testing::Shell;

using testing::Deadline;
using ::testing::HasSubstr;
using testing::StreamResult;

using DependencyGraphTest = testing::JournaledDaemonTest;

// Writes `req`, half-closes, and reads every event until the stream ends.
StreamResult SubmitRequest(v1::JobService::Stub& stub,
                           const v1::SubmitRequest& req) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  auto stream = stub.Submit(&ctx);
  StreamResult r;
  EXPECT_TRUE(stream->Write(req));
  EXPECT_TRUE(stream->WritesDone());
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) r.events.push_back(e);
  }
  r.status = stream->Finish();
  return r;
}

// The terminal (or REJECTED) event of the item with `tag`.
v1::JobEvent EndOf(const StreamResult& r, uint64_t tag) {
  for (const v1::JobEvent& e : r.Terminal()) {
    if (e.client_tag() == tag) return e;
  }
  ADD_FAILURE() << "no end for tag " << tag;
  return {};
}

// Reads `stream` until `enough` holds for the events read so far, or it
// ends (its deadline bounds it); returns those events.
std::vector<v1::JobEvent> ReadUntil(
    grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>& stream,
    const std::function<bool(const std::vector<v1::JobEvent>&)>& enough) {
  std::vector<v1::JobEvent> events;
  v1::SubmitResponse resp;
  while (!enough(events) && stream.Read(&resp)) {
    events.insert(events.end(), resp.events().begin(), resp.events().end());
  }
  return events;
}

// Events of `type` (of the item with client tag `tag`, if not 0).
int Count(const std::vector<v1::JobEvent>& events, v1::EventType type,
          uint64_t tag = 0) {
  return static_cast<int>(
      std::count_if(events.begin(), events.end(), [&](const auto& e) {
        return e.type() == type && (tag == 0 || e.client_tag() == tag);
      }));
}

// The accepted items' job ids by client tag.
std::map<uint64_t, std::string> IdsByTag(
    const std::vector<v1::JobEvent>& events) {
  std::map<uint64_t, std::string> ids;
  for (const v1::JobEvent& e : events) {
    if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids[e.client_tag()] = e.job_id();
  }
  return ids;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(DependencyGraphTest, AGraphInOneStreamRunsInOrderAndFailsBelowAFailure) {
  StartDaemon({"--exec-allow", "/bin/sh"});
  const std::string order = dir_ + "/order";
  std::vector<v1::JobSpec> specs;
  for (const char* step : {"a", "b", "c"}) {
    // Each step sleeps a little: a later one starting early would show.
    specs.push_back(
        Shell(absl::StrCat("sleep 0.1; echo ", step, " >> ", order)));
  }
  specs.push_back(testing::Spec("fail"));  // Tag 4.
  specs.push_back(Shell("true"));          // Tag 5: after 4.
  specs.push_back(Shell("true"));          // Tag 6: after 5.
  specs.push_back(Shell("true"));          // Tag 7: unknown tag.
  specs.push_back(Shell("true"));          // Tag 8: unknown job.
  specs.push_back(Shell("true"));          // Tag 9: all-ended after 4.
  v1::SubmitRequest req = testing::SubmitRequestOf(specs);
  req.mutable_items(1)->add_depends_on_tags(1);
  req.mutable_items(2)->add_depends_on_tags(2);
  req.mutable_items(4)->add_depends_on_tags(4);
  req.mutable_items(5)->add_depends_on_tags(5);
  req.mutable_items(6)->add_depends_on_tags(99);
  req.mutable_items(7)->mutable_spec()->add_depends_on("424242");
  req.mutable_items(8)->add_depends_on_tags(4);
  req.mutable_items(8)->mutable_spec()->set_dependency_policy(
      v1::DEPENDENCY_POLICY_ALL_ENDED);
  const StreamResult r = SubmitRequest(*stub_, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  for (uint64_t tag : {1, 2, 3, 9}) {
    EXPECT_EQ(EndOf(r, tag).type(), v1::EVENT_TYPE_SUCCEEDED) << tag;
  }
  EXPECT_EQ(Slurp(order), "a\nb\nc\n");
  const v1::JobEvent failed = EndOf(r, 4);
  EXPECT_EQ(failed.type(), v1::EVENT_TYPE_FAILED);
  for (uint64_t tag : {5, 6}) {
    const v1::JobEvent e = EndOf(r, tag);
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED) << tag;
    EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_DEPENDENCY_FAILED) << tag;
  }
  EXPECT_THAT(EndOf(r, 5).error().message(),
              HasSubstr(absl::StrCat("job ", failed.job_id(),
                                     ", which it depends on, ended FAILED")));
  const v1::JobEvent unknown_tag = EndOf(r, 7);
  EXPECT_EQ(unknown_tag.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_THAT(unknown_tag.error().message(),
              HasSubstr("depends_on_tags[0]: client tag 99 is not an earlier "
                        "item of this stream"));
  const v1::JobEvent unknown_job = EndOf(r, 8);
  EXPECT_EQ(unknown_job.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_THAT(unknown_job.error().message(),
              HasSubstr("spec.depends_on[0]: job 424242 is unknown or "
                        "forgotten"));
}

TEST_F(DependencyGraphTest, TooManyDependenciesAreRefusedNamingTheLimit) {
  StartDaemon({"--max-dependencies", "2"});
  v1::JobSpec s = testing::Spec("echo");
  for (const char* id : {"1", "2", "3"}) s.add_depends_on(id);
  v1::JobSpec bad = testing::Spec("echo");
  bad.add_depends_on("x");
  const StreamResult r = testing::SubmitAll(*stub_, {s, bad});
  ASSERT_EQ(r.Terminal().size(), 2u);
  EXPECT_THAT(EndOf(r, 1).error().message(),
              HasSubstr("spec.depends_on: 3 dependencies; the limit is 2 "
                        "(max-dependencies)"));
  EXPECT_THAT(EndOf(r, 2).error().message(),
              HasSubstr("spec.depends_on[0]: 'x' is not a job id"));
}

TEST_F(DependencyGraphTest, DependantsWaitingSurviveKill9) {
  StartDaemon({"--exec-allow", "/bin/sh"});
  const std::string mark = dir_ + "/ran";
  // 1: delayed past the restart, 2 after it: both run after the restart.
  // 3: running at the kill (at-most-once: lost), 4 after it: fails then.
  v1::JobSpec delayed = Shell("echo first >> " + mark);
  delayed.mutable_delay()->set_seconds(2);
  v1::JobSpec running = Shell("sleep 60");
  v1::SubmitRequest req = testing::SubmitRequestOf(
      {delayed, Shell("echo second >> " + mark), running, Shell("true")});
  req.mutable_items(1)->add_depends_on_tags(1);
  req.mutable_items(3)->add_depends_on_tags(3);
  std::map<uint64_t, std::string> ids;
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    auto stream = stub_->Submit(&ctx);
    ASSERT_TRUE(stream->Write(req));
    const std::vector<v1::JobEvent> events = ReadUntil(*stream, [&](auto& e) {
      return Count(e, v1::EVENT_TYPE_ACCEPTED) == 4 &&
             Count(e, v1::EVENT_TYPE_STARTED, 3) == 1;
    });
    ids = IdsByTag(events);
    ASSERT_EQ(ids.size(), 4u);
    ASSERT_EQ(Count(events, v1::EVENT_TYPE_STARTED, 3), 1);
    absl::StatusOr<v1::Job> waiting = GetJob(ids[2]);
    ASSERT_TRUE(waiting.ok()) << waiting.status();
    EXPECT_EQ(waiting->state(), v1::JOB_STATE_WAITING);
    EXPECT_EQ(waiting->unmet_dependencies(), 1u);
    ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
    ctx.TryCancel();
  }
  EXPECT_FALSE(std::filesystem::exists(mark));
  StartDaemon({"--exec-allow", "/bin/sh"});
  absl::StatusOr<v1::Job> second = GetJob(ids[2], absl::Seconds(30));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->state(), v1::JOB_STATE_SUCCEEDED)
      << second->error().message();
  EXPECT_EQ(Slurp(mark), "first\nsecond\n");
  absl::StatusOr<v1::Job> after_lost = GetJob(ids[4], absl::Seconds(30));
  ASSERT_TRUE(after_lost.ok()) << after_lost.status();
  EXPECT_EQ(after_lost->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(after_lost->error().reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(after_lost->error().message(),
              HasSubstr(absl::StrCat("job ", ids[3],
                                     ", which it depends on, "
                                     "ended FAILED (LOST_ON_RESTART)")));
}

v1::JobSpec Echo(google::protobuf::Value arg) {
  v1::JobSpec s;
  s.set_task("echo");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  *s.add_args() = std::move(arg);
  return s;
}
google::protobuf::Value Num(double d) {
  google::protobuf::Value v;
  v.set_number_value(d);
  return v;
}
google::protobuf::Value Str(std::string text) {
  google::protobuf::Value v;
  v.set_string_value(std::move(text));
  return v;
}

// A chord's last job gets its group's results, journaled: released (its
// results in its spec) before a kill -9, or still waiting at it.
TEST_F(DependencyGraphTest, TheLastJobGetsItsDependenciesResultsAcrossKill9) {
  StartDaemon();
  // 1, 2: echo 41 and "b"; 3: echo "tail" after both with their results,
  // delayed past the kill; 4: sleeps at-least-once, running at the kill;
  // 5: echo "after" with 4's result.
  v1::JobSpec tail = Echo(Str("tail"));
  tail.set_dependency_results(true);
  tail.mutable_delay()->set_seconds(3);
  v1::JobSpec sleeper;
  sleeper.set_task("sleep");
  sleeper.set_kind(v1::JOB_KIND_IO_BOUND);
  sleeper.add_args()->set_number_value(1500);
  sleeper.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  v1::JobSpec after = Echo(Str("after"));
  after.set_dependency_results(true);
  v1::SubmitRequest req = testing::SubmitRequestOf(
      {Echo(Num(41)), Echo(Str("b")), tail, sleeper, after});
  req.mutable_items(2)->add_depends_on_tags(1);
  req.mutable_items(2)->add_depends_on_tags(2);
  req.mutable_items(4)->add_depends_on_tags(4);
  std::map<uint64_t, std::string> ids;
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    auto stream = stub_->Submit(&ctx);
    ASSERT_TRUE(stream->Write(req));
    const std::vector<v1::JobEvent> events = ReadUntil(*stream, [&](auto& e) {
      return Count(e, v1::EVENT_TYPE_ACCEPTED) == 5 &&
             Count(e, v1::EVENT_TYPE_SUCCEEDED) == 2 &&
             Count(e, v1::EVENT_TYPE_STARTED, 4) == 1;
    });
    ids = IdsByTag(events);
    ASSERT_EQ(ids.size(), 5u);
    ASSERT_EQ(Count(events, v1::EVENT_TYPE_STARTED, 4), 1);
    // 3 was released when 1 and 2 ended: its results are in its spec.
    absl::StatusOr<v1::Job> released = GetJob(ids[3]);
    ASSERT_TRUE(released.ok()) << released.status();
    EXPECT_EQ(released->state(), v1::JOB_STATE_WAITING);
    ASSERT_TRUE(released->spec().dependency_results_passed());
    EXPECT_EQ(released->spec().args(0).ShortDebugString(),
              "list_value { values { number_value: 41 } values { "
              "string_value: \"b\" } }");
    // A job accepted after it: its acceptance is durable, and so is the
    // release journaled before it.
    testing::StreamResult more = testing::SubmitAll(*stub_, {Echo(Num(0))});
    ASSERT_EQ(more.Terminal().size(), 1u);
    ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
    ctx.TryCancel();
  }
  StartDaemon();
  absl::StatusOr<v1::Job> merged = GetJob(ids[3], absl::Seconds(30));
  ASSERT_TRUE(merged.ok()) << merged.status();
  ASSERT_EQ(merged->state(), v1::JOB_STATE_SUCCEEDED)
      << merged->error().message();
  EXPECT_EQ(merged->result().value().ShortDebugString(),
            "list_value { values { list_value { values { number_value: 41 } "
            "values { string_value: \"b\" } } } values { string_value: "
            "\"tail\" } }");
  absl::StatusOr<v1::Job> rerun = GetJob(ids[5], absl::Seconds(30));
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  ASSERT_EQ(rerun->state(), v1::JOB_STATE_SUCCEEDED)
      << rerun->error().message();
  EXPECT_EQ(rerun->result().value().ShortDebugString(),
            "list_value { values { list_value { values { number_value: 1500 } "
            "} } values { string_value: \"after\" } }");
}

TEST_F(DependencyGraphTest, JobctlSubmitsAfterJobsWithEitherPolicy) {
  StartDaemon();
  const std::string address = daemon_->unix_address();
  auto submit = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::JobctlPath(), "--address",
                                     address, "submit"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  };
  testing::CommandResult r = submit({"fail"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string failed = r.out.substr(0, r.out.find('\n'));
  r = submit({"echo", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ok = r.out.substr(0, r.out.find('\n'));
  r = submit({"echo", "2", "--after", ok, "--after", failed});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string strict = r.out.substr(0, r.out.find('\n'));
  r = submit({"echo", "3", "--after", ok, "--after", failed, "--after-policy",
              "all-ended"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string lenient = r.out.substr(0, r.out.find('\n'));
  absl::StatusOr<v1::Job> job = GetJob(strict, absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  job = GetJob(lenient, absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  r = testing::RunCommand(
      {testing::JobctlPath(), "--address", address, "get", lenient});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out,
              HasSubstr(absl::StrCat(ok, " ", failed, " (when all ended)")));
  r = submit({"echo", "tail", "--after", ok, "--after-results", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[[1],\"tail\"]"));
  r = submit({"echo", "--after-results"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--after-results: give the jobs with --after"));
  r = submit({"echo", "--after-policy", "all-ended"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--after-policy: give the jobs with --after"));
  r = submit({"echo", "--after", "999999"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.depends_on[0]: job 999999 is unknown"));
}

}  // namespace
}  // namespace jobd
