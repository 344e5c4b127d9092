// Cluster mode: a job is reached from any node (GetJob, WaitJob,
// CancelJob), with real jobd daemons on one real redis-server
// (tests/redis/redis_server.h), on Unix sockets. Ids name their node
// ("N@node-a"); another node's job is asked for through Redis and its
// node answers with its owner checks; a cancel sent to a third node stops
// the run where it runs; a dead or unknown node is a clear error within
// the deadline. Jobs are the testing task `ledger` (a line per run).
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/reactor_fixture.h"
#include "tests/integration/test_tokens.h"
#include "tests/redis/redis_client.h"

namespace jobd {
namespace {

using testing::EndsByLine;
using ::testing::HasSubstr;
using testing::KeysOf;
using testing::Ledger;
using testing::ReadLedger;
using testing::RedisClient;
using testing::StartNodes;

// A spec of `task` (I/O-bound) with one string argument.
v1::JobSpec TextSpec(const std::string& task, const std::string& arg) {
  v1::JobSpec spec = testing::Spec(task);
  spec.add_args()->set_string_value(arg);
  return spec;
}

// Joins a test's thread when the test leaves, even by a failed ASSERT
// (before the daemons it talks to stop: declare it after them).
struct JoinAtExit {
  std::thread& thread;
  ~JoinAtExit() {
    if (thread.joinable()) thread.join();
  }
};

void WithToken(grpc::ClientContext& ctx, const std::string& token) {
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

// The ledger jobs a node holds (as `token`'s caller), by their line.
std::map<std::string, v1::Job> JobsByLine(v1::JobService::Stub& stub,
                                          const std::string& token = "") {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(10));
  WithToken(ctx, token);
  v1::ListJobsRequest req;
  req.set_task("ledger");
  req.set_page_size(1000);
  v1::ListJobsResponse resp;
  EXPECT_TRUE(stub.ListJobs(&ctx, req, &resp).ok());
  std::map<std::string, v1::Job> out;
  for (const v1::Job& j : resp.jobs()) out[j.spec().args(1).string_value()] = j;
  return out;
}

struct Answer {
  grpc::Status status;
  v1::Job job;
  absl::Duration took;
};

Answer GetJob(v1::JobService::Stub& stub, const std::string& id,
              absl::Duration wait = absl::ZeroDuration(),
              absl::Duration deadline = absl::Seconds(10),
              const std::string& token = "") {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, deadline);
  WithToken(ctx, token);
  v1::GetJobRequest req;
  req.set_job_id(id);
  if (wait > absl::ZeroDuration()) {
    req.mutable_wait()->set_seconds(absl::ToInt64Seconds(wait));
  }
  Answer a;
  const absl::Time start = absl::Now();
  a.status = stub.GetJob(&ctx, req, &a.job);
  a.took = absl::Now() - start;
  return a;
}

grpc::Status Cancel(v1::JobService::Stub& stub, const std::string& id,
                    v1::CancelJobResponse* resp = nullptr,
                    const std::string& token = "") {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(10));
  WithToken(ctx, token);
  v1::CancelJobRequest req;
  req.set_job_id(id);
  v1::CancelJobResponse ignored;
  return stub.CancelJob(&ctx, req, resp != nullptr ? resp : &ignored);
}

// Waits until node `stub` holds a job of `line` in `state`; its id.
std::string AwaitJob(v1::JobService::Stub& stub, const std::string& line,
                     v1::JobState state, const std::string& token = "") {
  std::string id;
  testing::WaitFor(
      [&] {
        const auto jobs = JobsByLine(stub, token);
        auto it = jobs.find(line);
        if (it == jobs.end() || it->second.state() != state) return false;
        id = it->second.id();
        return true;
      },
      absl::Seconds(15));
  return id;
}

// What a StreamJobOutput stream gave.
struct OutputSeen {
  std::string out, err;
  int messages = 0;  // With data.
  uint64_t next_offset = 0;
  bool ended = false;
  grpc::Status status;
};

OutputSeen ReadOutput(v1::JobService::Stub& stub, const std::string& id,
                      bool follow, uint64_t offset = 0) {
  OutputSeen seen;
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(30));
  v1::StreamJobOutputRequest req;
  req.set_job_id(id);
  req.set_follow(follow);
  req.set_offset(offset);
  auto reader = stub.StreamJobOutput(&ctx, req);
  v1::StreamJobOutputResponse resp;
  while (reader->Read(&resp)) {
    if (!resp.chunks().empty()) ++seen.messages;
    for (const v1::OutputChunk& c : resp.chunks()) {
      (c.stream() == v1::OUTPUT_STREAM_STDOUT ? seen.out : seen.err) +=
          c.data();
    }
    seen.next_offset = resp.next_offset();
    seen.ended = seen.ended || resp.ended();
  }
  seen.status = reader->Finish();
  return seen;
}

TEST(ClusterReachTest, AJobIsSeenAndAwaitedFromAnotherNode) {
  // a runs one thread job at a time: the first runs there, the second is
  // shared and b runs it.
  auto c = StartNodes("jobd-cluster-reach", {{"node-a", 1}, {"node-b", 4}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  const std::vector<v1::JobSpec> specs = {Ledger(ledger, "local", 2500),
                                          Ledger(ledger, "shared", 2500)};
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  JoinAtExit join_submit{submit};
  const std::string local = AwaitJob(stub_a, "local", v1::JOB_STATE_RUNNING);
  // b runs the shared one; a, its submitter, shows it running there.
  ASSERT_FALSE(AwaitJob(stub_b, "shared", v1::JOB_STATE_RUNNING).empty());
  const std::string shared = AwaitJob(stub_a, "shared", v1::JOB_STATE_RUNNING);
  ASSERT_EQ(local.substr(local.find('@')), "@node-a") << local;
  ASSERT_EQ(shared.substr(shared.find('@')), "@node-a") << shared;

  // Asked at b, a answers: a's view of each.
  Answer got = GetJob(stub_b, local);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.id(), local);
  EXPECT_EQ(got.job.state(), v1::JOB_STATE_RUNNING);
  got = GetJob(stub_b, shared);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.id(), shared);
  EXPECT_EQ(got.job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(got.job.has_start_time());
  // a answers its own qualified ids and bare numbers alike.
  EXPECT_EQ(GetJob(stub_a, local).job.id(), local);
  EXPECT_EQ(GetJob(stub_a, local.substr(0, local.find('@'))).job.id(), local);

  // A watcher at b of both: their terminal events, then the stream ends.
  std::vector<v1::JobEvent> watched;
  grpc::Status watch_status;
  std::thread watch([&] {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(30));
    v1::WatchJobsRequest req;
    req.add_job_ids(local);
    req.add_job_ids(shared);
    auto reader = stub_b.WatchJobs(&ctx, req);
    v1::WatchJobsResponse resp;
    while (reader->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) watched.push_back(e);
    }
    watch_status = reader->Finish();
  });
  JoinAtExit join_watch{watch};
  // A wait shorter than the job: the job as it is then, on time.
  got = GetJob(stub_b, local, absl::Seconds(1));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_GE(got.took, absl::Milliseconds(700));
  EXPECT_LT(got.took, absl::Seconds(2));
  // WaitJob at b: both end there as at a.
  for (const std::string& id : {local, shared}) {
    got = GetJob(stub_b, id, absl::Seconds(20), absl::Seconds(25));
    ASSERT_TRUE(got.status.ok()) << id << ": " << got.status.error_message();
    EXPECT_EQ(got.job.state(), v1::JOB_STATE_SUCCEEDED) << id;
    EXPECT_EQ(got.job.id(), id);
  }
  watch.join();
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_EQ(watched.size(), 2u);
  for (const v1::JobEvent& e : watched) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.job_id();
    EXPECT_EQ(e.result().value().string_value(),
              e.job_id() == local ? "local" : "shared");
  }
  submit.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), 2u);
  for (const v1::JobEvent& e : r.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
    EXPECT_THAT(e.job_id(), HasSubstr("@node-a"));
  }

  // A watch at b of one of b's own jobs and one of a's (ended): both
  // ends, b's as its own events, a's forwarded.
  {
    testing::StreamResult own;
    std::thread run_b([&] {
      own = testing::SubmitAll(stub_b, {Ledger(ledger, "at-b", 1000)});
    });
    JoinAtExit join_b{run_b};
    const std::string at_b = AwaitJob(stub_b, "at-b", v1::JOB_STATE_RUNNING);
    ASSERT_EQ(at_b.substr(at_b.find('@')), "@node-b") << at_b;
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(30));
    v1::WatchJobsRequest req;
    req.add_job_ids(at_b);
    req.add_job_ids(local);
    auto reader = stub_b.WatchJobs(&ctx, req);
    v1::WatchJobsResponse resp;
    std::map<std::string, v1::EventType> ended;
    while (reader->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_SUCCEEDED) ended[e.job_id()] = e.type();
      }
    }
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(ended.size(), 2u);
    EXPECT_TRUE(ended.contains(at_b));
    EXPECT_TRUE(ended.contains(local));
  }

  // Unknown jobs and nodes, and ids that are not ids.
  got = GetJob(stub_b, "999999@node-a");
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::NOT_FOUND);
  got = GetJob(stub_b, "1@node-zz");
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(got.status.error_message(), HasSubstr("no node 'node-zz'"));
  EXPECT_LT(got.took, absl::Seconds(1));
  for (const char* bad : {"1@", "1@no such", "x@node-a", "@node-a"}) {
    got = GetJob(stub_b, bad);
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad;
    EXPECT_THAT(got.status.error_message(), HasSubstr("job_id"));
  }
  // Another node's job's output is read at its node: a ledger job writes
  // none; once it ended, that is said at once.
  {
    const OutputSeen seen = ReadOutput(stub_b, local, /*follow=*/true);
    EXPECT_TRUE(seen.status.ok()) << seen.status.error_message();
    EXPECT_TRUE(seen.ended);
    EXPECT_EQ(seen.out, "");
  }
}

// StreamJobOutput of another node's job is read at its node: followed
// live from a third node until the job ends, read again from an offset,
// and NOT_FOUND for a job its node does not know.
// A watcher at b of a job at a follows its events as they come, not only
// its end: here STARTED, then SUCCEEDED, each once, named by a's id and
// with sequence 0 (a's sequences are not b's).
TEST(ClusterReachTest, AJobsEventsAreFollowedFromAnotherNode) {
  auto c = StartNodes("jobd-cluster-watch", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  // The watched job waits at a for another (a job with a dependency is
  // never shared): the watch begins before it starts.
  testing::LoadStream first(stub_a, {Ledger(ledger, "first", 1500)}, 1);
  const std::string first_id = AwaitJob(stub_a, "first", v1::JOB_STATE_RUNNING);
  ASSERT_FALSE(first_id.empty());
  v1::JobSpec spec = Ledger(ledger, "second", 300);
  spec.add_depends_on(first_id);
  testing::LoadStream second(stub_a, {spec}, 1);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !second.items()[0].job_id.empty(); }, absl::Seconds(10)));
  const std::string id = second.items()[0].job_id;
  ASSERT_EQ(id.substr(id.find('@')), "@node-a") << id;

  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(30));
  v1::WatchJobsRequest req;
  req.add_job_ids(id);
  auto reader = stub_b.WatchJobs(&ctx, req);
  std::vector<v1::JobEvent> events;
  v1::WatchJobsResponse resp;
  while (reader->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) events.push_back(e);
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_STARTED);
  EXPECT_EQ(events[1].type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(events[1].result().value().string_value(), "second");
  // a's sequences (every job watched is a's): a resume follows them.
  for (const v1::JobEvent& e : events) EXPECT_EQ(e.job_id(), id);
  EXPECT_GT(events[0].sequence(), 0u);
  EXPECT_GT(events[1].sequence(), events[0].sequence());
  using google::protobuf::util::TimeUtil;
  EXPECT_LE(TimeUtil::TimestampToNanoseconds(events[0].time()),
            TimeUtil::TimestampToNanoseconds(events[1].time()));
  {
    grpc::ClientContext again;
    testing::Deadline(again, absl::Seconds(30));
    req.set_after_sequence(events[0].sequence());
    auto resumed = stub_b.WatchJobs(&again, req);
    std::vector<v1::JobEvent> rest;
    while (resumed->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) rest.push_back(e);
    }
    ASSERT_TRUE(resumed->Finish().ok());
    ASSERT_EQ(rest.size(), 1u);
    EXPECT_EQ(rest[0].type(), v1::EVENT_TYPE_SUCCEEDED);
    EXPECT_EQ(rest[0].sequence(), events[1].sequence());
  }
  // With a job of b's own in the same watch, a's events come with
  // sequence 0 (b's log does not hold them).
  {
    const v1::JobEvent own = testing::RunOne(stub_b, Ledger(ledger, "own", 0));
    ASSERT_EQ(own.type(), v1::EVENT_TYPE_SUCCEEDED);
    grpc::ClientContext mixed;
    testing::Deadline(mixed, absl::Seconds(30));
    v1::WatchJobsRequest both;
    both.add_job_ids(id);
    both.add_job_ids(own.job_id());
    auto reader2 = stub_b.WatchJobs(&mixed, both);
    std::vector<v1::JobEvent> seen;
    while (reader2->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) seen.push_back(e);
    }
    ASSERT_TRUE(reader2->Finish().ok());
    size_t of_a = 0;  // Its end (a watch from now on of an ended job).
    for (const v1::JobEvent& e : seen) {
      if (e.job_id() != id) continue;
      ++of_a;
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
      EXPECT_EQ(e.sequence(), 0u);
    }
    EXPECT_EQ(of_a, 1u);
  }
  ASSERT_TRUE(first.Wait(absl::Seconds(10)));
  ASSERT_TRUE(second.Wait(absl::Seconds(10)));
}

// depends_on may name another node's job: the dependant waits at its own
// node (across that node's kill -9 and restart) until the job ends at
// its node, then runs; a failed one fails it, an unknown one too, naming
// the node. One that takes its dependencies' results gets that job's,
// asked again of its node after the restart.
TEST(ClusterReachTest, AJobDependsOnAnotherNodesJob) {
  auto c = StartNodes("jobd-cluster-deps", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  using google::protobuf::util::TimeUtil;

  testing::LoadStream first(stub_a, {Ledger(ledger, "first", 4000)}, 1);
  const std::string first_id = AwaitJob(stub_a, "first", v1::JOB_STATE_RUNNING);
  ASSERT_FALSE(first_id.empty());
  v1::JobSpec fail = TextSpec("fail", "boom");
  fail.set_executor(v1::EXECUTOR_THREAD);
  const v1::JobEvent failed = testing::RunOne(stub_a, fail);
  ASSERT_EQ(failed.type(), v1::EVENT_TYPE_FAILED) << failed.error().message();

  v1::JobSpec after = Ledger(ledger, "after", 0);
  after.add_depends_on(first_id);
  v1::JobSpec after_failed = Ledger(ledger, "after-failed", 0);
  after_failed.add_depends_on(failed.job_id());
  v1::JobSpec after_unknown = Ledger(ledger, "after-unknown", 0);
  after_unknown.add_depends_on("999999@node-a");
  v1::JobSpec with_results = TextSpec("echo", "tail");
  with_results.add_depends_on(first_id);
  with_results.set_dependency_results(true);
  const testing::StreamResult r =
      testing::SubmitAll((*c)->stub(1), {after_failed, after_unknown});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, {after_failed, after_unknown});
  ASSERT_EQ(ends.size(), 2u);
  const v1::JobEvent& e1 = ends.at("after-failed").at(0);
  EXPECT_EQ(e1.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e1.error().reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(e1.error().message(), HasSubstr(failed.job_id()));
  const v1::JobEvent& e2 = ends.at("after-unknown").at(0);
  EXPECT_EQ(e2.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e2.error().reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  EXPECT_THAT(e2.error().message(),
              HasSubstr("999999@node-a, which it depends on, is unknown"));

  // b holds the dependants, WAITING, through its kill -9 and restart.
  std::string after_id, with_results_id;
  {
    testing::LoadStream waiting((*c)->stub(1), {after, with_results}, 1);
    ASSERT_TRUE(testing::WaitFor(
        [&] {
          return !waiting.items()[0].job_id.empty() &&
                 !waiting.items()[1].job_id.empty();
        },
        absl::Seconds(10)));
    after_id = waiting.items()[0].job_id;
    with_results_id = waiting.items()[1].job_id;
    Answer got = GetJob((*c)->stub(1), after_id);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.job.state(), v1::JOB_STATE_WAITING);
    ASSERT_TRUE((*c)->daemon(1).Stop(SIGKILL, absl::Seconds(10)).ok());
  }
  ASSERT_TRUE((*c)->Restart(1, 2).ok());
  const Answer done =
      GetJob((*c)->stub(1), after_id, absl::Seconds(20), absl::Seconds(25));
  ASSERT_TRUE(done.status.ok()) << done.status.error_message();
  ASSERT_EQ(done.job.state(), v1::JOB_STATE_SUCCEEDED)
      << done.job.error().message();
  const Answer dependency = GetJob(stub_a, first_id);
  ASSERT_EQ(dependency.job.state(), v1::JOB_STATE_SUCCEEDED);
  // It began once its dependency had ended (both clocks are this host's).
  EXPECT_GE(TimeUtil::TimestampToNanoseconds(done.job.start_time()),
            TimeUtil::TimestampToNanoseconds(dependency.job.finish_time()));
  EXPECT_EQ(ReadLedger(ledger).count("after"), 1u);
  // a's job's result (its line), then its own argument.
  const Answer passed = GetJob((*c)->stub(1), with_results_id,
                               absl::Seconds(20), absl::Seconds(25));
  ASSERT_TRUE(passed.status.ok()) << passed.status.error_message();
  ASSERT_EQ(passed.job.state(), v1::JOB_STATE_SUCCEEDED)
      << passed.job.error().message();
  EXPECT_EQ(passed.job.result().value().ShortDebugString(),
            "list_value { values { list_value { values { string_value: "
            "\"first\" } } } values { string_value: \"tail\" } }");
  ASSERT_TRUE(first.Wait(absl::Seconds(10)));
}

// A dependant taking its dependencies' results gets another node's jobs'
// (a failed one's as null, under ALL_ENDED) with its own node's, though
// the other node's ended long before its own one did.
TEST(ClusterReachTest, ADependantGetsTheResultsOfAnotherNodesJobs) {
  auto c =
      StartNodes("jobd-cluster-deps-results", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  const v1::JobEvent remote_ok =
      testing::RunOne(stub_a, TextSpec("echo", "alpha"));
  ASSERT_EQ(remote_ok.type(), v1::EVENT_TYPE_SUCCEEDED);
  const v1::JobEvent remote_failed =
      testing::RunOne(stub_a, TextSpec("fail", "boom"));
  ASSERT_EQ(remote_failed.type(), v1::EVENT_TYPE_FAILED);

  testing::LoadStream local(stub_b, {Ledger((*c)->ledger(), "local", 1500)}, 1);
  const std::string local_id = AwaitJob(stub_b, "local", v1::JOB_STATE_RUNNING);
  ASSERT_FALSE(local_id.empty());
  v1::JobSpec tail = TextSpec("echo", "tail");
  tail.add_depends_on(remote_ok.job_id());
  tail.add_depends_on(local_id);
  tail.add_depends_on(remote_failed.job_id());
  tail.set_dependency_policy(v1::DEPENDENCY_POLICY_ALL_ENDED);
  tail.set_dependency_results(true);
  const testing::StreamResult r = testing::SubmitAll(stub_b, {tail});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const std::vector<v1::JobEvent> ends = r.Terminal();
  ASSERT_EQ(ends.size(), 1u);
  ASSERT_EQ(ends[0].type(), v1::EVENT_TYPE_SUCCEEDED)
      << ends[0].error().message();
  EXPECT_EQ(ends[0].result().value().ShortDebugString(),
            "list_value { values { list_value { values { string_value: "
            "\"alpha\" } values { string_value: \"local\" } values { "
            "null_value: NULL_VALUE } } } values { string_value: \"tail\" "
            "} }");
  // Its own node's job, named in its qualified form, is kept as a bare
  // number (read back the same with another node name, or none).
  const Answer got = GetJob(stub_b, ends[0].job_id());
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  ASSERT_EQ(got.job.spec().depends_on_size(), 3);
  EXPECT_EQ(got.job.spec().depends_on(0), remote_ok.job_id());
  EXPECT_EQ(got.job.spec().depends_on(1),
            local_id.substr(0, local_id.find('@')));
  ASSERT_TRUE(local.Wait(absl::Seconds(10)));
}

TEST(ClusterReachTest, AJobsOutputIsReadAndFollowedFromAnotherNode) {
  const std::vector<std::string> exec = {"--exec-allow", "/bin/sh"};
  auto c = StartNodes("jobd-cluster-output",
                      {{"node-a", 2, exec}, {"node-b", 2, exec}});
  ASSERT_TRUE(c.ok()) << c.status();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  // Writes, pauses long enough for a follower to see the first line
  // alone, then writes more and ends.
  v1::JobSpec sh = testing::KwSpec(
      "exec",
      {{"argv", testing::List({"sh", "-c",
                               "echo one; sleep 1; echo two >&2; sleep 0.5; "
                               "echo three"})}});
  testing::LoadStream job(stub_a, {sh}, 1);
  std::string id;
  ASSERT_TRUE(
      testing::WaitFor([&] { return !(id = job.items()[0].job_id).empty(); },
                       absl::Seconds(10)));
  ASSERT_THAT(id, HasSubstr("@node-a"));

  const absl::Time start = absl::Now();
  const OutputSeen followed = ReadOutput(stub_b, id, /*follow=*/true);
  ASSERT_TRUE(followed.status.ok()) << followed.status.error_message();
  EXPECT_TRUE(followed.ended);
  EXPECT_EQ(followed.out, "one\nthree\n");
  EXPECT_EQ(followed.err, "two\n");
  // Live: the first line came before the rest was written.
  EXPECT_GE(followed.messages, 2);
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
  ASSERT_TRUE(job.Wait(absl::Seconds(10)));
  EXPECT_EQ(job.items()[0].ends[0].type(), v1::EVENT_TYPE_SUCCEEDED);

  // Once more, all at once, and from an offset (past "one\n").
  const OutputSeen again = ReadOutput(stub_b, id, /*follow=*/false);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.out, "one\nthree\n");
  EXPECT_EQ(again.next_offset, followed.next_offset);
  const OutputSeen tail = ReadOutput(stub_b, id, /*follow=*/false, 4);
  ASSERT_TRUE(tail.status.ok()) << tail.status.error_message();
  EXPECT_EQ(tail.out, "three\n");
  EXPECT_EQ(tail.err, "two\n");

  const OutputSeen unknown = ReadOutput(stub_b, "999999@node-a", false);
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND)
      << unknown.status.error_message();
  const OutputSeen no_node = ReadOutput(stub_b, "1@node-zz", false);
  EXPECT_EQ(no_node.status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// A job its submitter (a) shared and b runs: its output is read and
// followed at a, where its client asks, as b's run writes it, and read
// again at a once it ended, and by its id at any node.
TEST(ClusterReachTest, ASharedJobsOutputIsReadAtItsSubmitter) {
  const std::vector<std::string> exec = {"--exec-allow", "/bin/sh"};
  std::vector<std::string> a_flags = exec;
  a_flags.insert(a_flags.end(), {"--reactor-max-jobs", "1"});
  auto c = StartNodes("jobd-cluster-shared-output",
                      {{"node-a", 2, a_flags}, {"node-b", 2, exec}});
  ASSERT_TRUE(c.ok()) << c.status();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  auto sh = [](const std::string& script) {
    return testing::KwSpec("exec",
                           {{"argv", testing::List({"sh", "-c", script})}});
  };
  // Program jobs running at a node.
  auto running = [](v1::JobService::Stub& stub) {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(10));
    v1::ListJobsRequest req;
    req.add_states(v1::JOB_STATE_RUNNING);
    req.set_task("exec");
    v1::ListJobsResponse resp;
    EXPECT_TRUE(stub.ListJobs(&ctx, req, &resp).ok());
    return resp.jobs_size();
  };
  // a's one reactor slot is held: its next program job is shared.
  testing::LoadStream blocker(stub_a, {sh("sleep 60")}, 1);
  ASSERT_TRUE(testing::WaitFor([&] { return running(stub_a) == 1; },
                               absl::Seconds(10)));
  testing::LoadStream job(
      stub_a, {sh("echo one; sleep 1; echo two >&2; sleep 0.5; echo three")},
      1);
  std::string id;
  ASSERT_TRUE(
      testing::WaitFor([&] { return !(id = job.items()[0].job_id).empty(); },
                       absl::Seconds(10)));
  ASSERT_THAT(id, HasSubstr("@node-a"));
  ASSERT_TRUE(testing::WaitFor([&] { return running(stub_b) == 1; },
                               absl::Seconds(10)));

  const OutputSeen followed = ReadOutput(stub_a, id, /*follow=*/true);
  ASSERT_TRUE(followed.status.ok()) << followed.status.error_message();
  EXPECT_TRUE(followed.ended);
  EXPECT_EQ(followed.out, "one\nthree\n");
  EXPECT_EQ(followed.err, "two\n");
  EXPECT_GE(followed.messages, 2);  // Live: "one" came before the rest.
  ASSERT_TRUE(job.Wait(absl::Seconds(10)));
  EXPECT_EQ(job.items()[0].ends[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  // Ended: read at a again, whole and from an offset.
  const OutputSeen again = ReadOutput(stub_a, id, /*follow=*/false);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.out, "one\nthree\n");
  EXPECT_EQ(again.err, "two\n");
  EXPECT_TRUE(again.ended);
  const OutputSeen tail = ReadOutput(stub_a, id, /*follow=*/false, 4);
  EXPECT_EQ(tail.out, "three\n");
  // Asked at any node by its id: its node finds it where it ran.
  const OutputSeen from_b = ReadOutput(stub_b, id, /*follow=*/false);
  ASSERT_TRUE(from_b.status.ok()) << from_b.status.error_message();
  EXPECT_EQ(from_b.out, "one\nthree\n");
  EXPECT_EQ(from_b.err, "two\n");
  {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(10));
    v1::CancelJobRequest req;
    req.set_job_id(blocker.items()[0].job_id);
    v1::CancelJobResponse resp;
    ASSERT_TRUE(stub_a.CancelJob(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE(blocker.Wait(absl::Seconds(10)));
}

TEST(ClusterReachTest, CancelFromAnotherNodeStopsTheRunWhereItRuns) {
  auto c = StartNodes("jobd-cluster-cancel", {{"node-a", 1}, {"node-b", 4}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  // a's thread busy; "long" is shared and runs on b; "keyed" (a
  // concurrency key ties it to a) queues at a.
  v1::JobSpec keyed = Ledger(ledger, "keyed", 100);
  keyed.set_concurrency_key("k");
  const std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 8000),
                                          Ledger(ledger, "long", 30000), keyed};
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  JoinAtExit join_submit{submit};
  ASSERT_FALSE(AwaitJob(stub_b, "long", v1::JOB_STATE_RUNNING).empty());
  const std::string long_id = AwaitJob(stub_a, "long", v1::JOB_STATE_RUNNING);
  const std::string keyed_id = AwaitJob(stub_a, "keyed", v1::JOB_STATE_QUEUED);
  ASSERT_FALSE(long_id.empty());
  ASSERT_FALSE(keyed_id.empty());

  // c joins once b holds the job, and is asked to cancel both.
  const absl::StatusOr<size_t> node_c = (*c)->Add({"node-c", 4}, 3);
  ASSERT_TRUE(node_c.ok()) << node_c.status();
  v1::JobService::Stub& stub_c = (*c)->stub(*node_c);
  v1::CancelJobResponse resp;
  grpc::Status s = Cancel(stub_c, keyed_id, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(resp.already_ended());
  const absl::Time cancelled = absl::Now();
  s = Cancel(stub_c, long_id, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(resp.already_ended());
  // The run on b stops at once (well within a heartbeat or two, not at
  // the job's 30 s).
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const auto on_b = JobsByLine(stub_b);
        auto it = on_b.find("long");
        return it != on_b.end() &&
               it->second.state() == v1::JOB_STATE_CANCELLED;
      },
      absl::Seconds(5)))
      << "a:\n"
      << (*c)->daemon(0).Log() << "\nb:\n"
      << (*c)->daemon(1).Log();
  EXPECT_LT(absl::Now() - cancelled, absl::Seconds(2));
  // Cancelling again: already ended.
  s = Cancel(stub_c, long_id, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resp.already_ended());

  submit.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends["long"].size(), 1u);
  EXPECT_EQ(ends["long"][0].type(), v1::EVENT_TYPE_CANCELLED);
  ASSERT_EQ(ends["keyed"].size(), 1u);
  EXPECT_EQ(ends["keyed"][0].type(), v1::EVENT_TYPE_CANCELLED);
  ASSERT_EQ(ends["blocker"].size(), 1u);
  EXPECT_EQ(ends["blocker"][0].type(), v1::EVENT_TYPE_SUCCEEDED);
  // "long" began once (on b), "keyed" never.
  const auto runs = ReadLedger(ledger);
  EXPECT_EQ(runs.count("keyed"), 0u);
  EXPECT_EQ(runs.at("long"), 1);
  // b's end of it reached a or not, a dropped it: a got no result.
  EXPECT_EQ(testing::GetStats(stub_a).cluster().work().results(), 0u);
  // a's view stays CANCELLED, from every node.
  for (v1::JobService::Stub* stub : {&stub_a, &stub_b, &stub_c}) {
    const Answer got = GetJob(*stub, long_id);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.job.state(), v1::JOB_STATE_CANCELLED);
  }
}

// One ListJobs page of every node's ledger jobs, after `token`.
grpc::Status AllNodesPage(v1::JobService::Stub& stub, const std::string& token,
                          int page_size, v1::ListJobsResponse* resp) {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(10));
  v1::ListJobsRequest req;
  req.set_task("ledger");
  req.set_all_nodes(true);
  req.set_page_size(page_size);
  req.set_page_token(token);
  return stub.ListJobs(&ctx, req, resp);
}

// Every node's ledger jobs, page after page (`page_size` jobs each, 20
// pages at most): the ids in the order they came.
std::vector<std::string> ListAllNodes(v1::JobService::Stub& stub, int page_size,
                                      int* pages = nullptr) {
  std::vector<std::string> ids;
  std::string token;
  for (int page = 0; page < 20; ++page) {
    v1::ListJobsResponse resp;
    const grpc::Status s = AllNodesPage(stub, token, page_size, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) break;
    for (const v1::Job& j : resp.jobs()) ids.push_back(j.id());
    if (pages != nullptr) *pages = page + 1;
    if (resp.next_page_token().empty()) break;
    token = resp.next_page_token();
  }
  return ids;
}

TEST(ClusterReachTest, ListingAllNodesWalksTheNodesByNameEachJobOnce) {
  // a runs one job at a time: "held" there, so "shared" runs at b for it.
  auto c = StartNodes("jobd-cluster-list", {{"node-a", 1}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  const testing::StreamResult at_a = testing::SubmitAll(
      stub_a, {Ledger(ledger, "held", 1000), Ledger(ledger, "shared", 10),
               Ledger(ledger, "a-3", 10)});
  const testing::StreamResult at_b = testing::SubmitAll(
      stub_b, {Ledger(ledger, "b-1", 10), Ledger(ledger, "b-2", 10)});
  std::vector<std::string> expected;  // a's by id, then b's.
  for (const testing::StreamResult* r : {&at_a, &at_b}) {
    ASSERT_TRUE(r->status.ok()) << r->status.error_message();
    std::vector<std::pair<uint64_t, std::string>> ids;
    for (const v1::JobEvent& e : r->Terminal()) {
      ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.job_id();
      ids.emplace_back(std::stoull(e.job_id()), e.job_id());
    }
    std::sort(ids.begin(), ids.end());
    for (const auto& [number, id] : ids) expected.push_back(id);
  }
  ASSERT_EQ(expected.size(), 5u);
  ASSERT_GE(testing::Work(stub_b).completed(), 1u) << "nothing was shared";
  // b ran "shared" (and maybe "a-3") for a and keeps its copy: its own
  // listing shows it.
  EXPECT_GE(JobsByLine(stub_b).size(), 3u);

  // From either node, in pages of 2 or all at once: a's jobs by id, then
  // b's, each once (the copy at b is a's job).
  for (v1::JobService::Stub* stub : {&stub_a, &stub_b}) {
    int pages = 0;
    EXPECT_EQ(ListAllNodes(*stub, 2, &pages), expected);
    EXPECT_EQ(pages, 3);
    EXPECT_EQ(ListAllNodes(*stub, 100), expected);
  }
  // A page token names its node: the walk goes on from there.
  v1::ListJobsResponse resp;
  ASSERT_TRUE(AllNodesPage(stub_a, expected[3], 0, &resp).ok());  // b's 1st.
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).id(), expected[4]);
  EXPECT_TRUE(resp.next_page_token().empty());
  // A token that is not an id: said. A node that is gone: the walk goes on
  // at the next name ("node-aa" sorts between a and b).
  const grpc::Status bad = AllNodesPage(stub_a, "x@node-a", 0, &resp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("page_token"));
  resp.Clear();
  ASSERT_TRUE(AllNodesPage(stub_a, "1@node-aa", 0, &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 2);
  EXPECT_EQ(resp.jobs(0).id(), expected[3]);
  // Without all_nodes: a node's own listing, as before.
  EXPECT_EQ(JobsByLine(stub_a).size(), 3u);
}

TEST(ClusterReachTest, ADeadNodesJobsAreUnavailableWithinTheDeadline) {
  auto c = StartNodes("jobd-cluster-dead", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  const v1::JobEvent end = testing::RunOne(stub_a, Ledger(ledger, "one", 10));
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED);
  ASSERT_TRUE(GetJob(stub_b, end.job_id()).status.ok());

  ASSERT_TRUE((*c)->daemon(0).Stop(SIGKILL, absl::Seconds(5)).ok());
  // Before b sees it dead: no answer, UNAVAILABLE at the deadline.
  Answer got = GetJob(stub_b, end.job_id(), absl::ZeroDuration(),
                      absl::Milliseconds(600));
  EXPECT_TRUE(got.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
              got.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      << got.status.error_message();
  EXPECT_LT(got.took, absl::Seconds(1));
  // Once it is seen dead: UNAVAILABLE at once, naming it.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const v1::GetStatsResponse stats = testing::GetStats(stub_b);
        for (const v1::ClusterNode& n : stats.cluster().nodes()) {
          if (n.name() == "node-a") return !n.alive();
        }
        return false;
      },
      absl::Seconds(10)));
  got = GetJob(stub_b, end.job_id());
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(got.status.error_message(), HasSubstr("node 'node-a' is dead"));
  EXPECT_LT(got.took, absl::Seconds(1));
  EXPECT_EQ(Cancel(stub_b, end.job_id()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

// Scripts Redis failed to run (INFO commandstats' failed_calls of EVAL).
int64_t FailedScripts(RedisClient& redis) {
  auto info = redis.Query({"INFO", "commandstats"});
  if (!info.ok()) return -1;
  const std::string& text = info->str;
  const size_t line = text.find("cmdstat_eval:");
  if (line == std::string::npos) return 0;
  const size_t at = text.find("failed_calls=", line);
  if (at == std::string::npos || at > text.find('\n', line)) return -1;
  return std::strtoll(text.c_str() + at + strlen("failed_calls="), nullptr, 10);
}

// A node whose answer cannot be sent (here: the asker's replies key made
// a string, so the send fails as a dropped connection's would) sends it
// again: the asker gets it once the key is back, not at its deadline.
TEST(ClusterReachTest, AnAnswerThatCannotBeSentIsSentAgain) {
  auto c = StartNodes("jobd-cluster-answer", {{"node-a", 2}, {"node-b", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  const v1::JobEvent end =
      testing::RunOne(stub_a, Ledger((*c)->ledger(), "one", 10));
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED);
  ASSERT_TRUE(GetJob(stub_b, end.job_id()).status.ok());  // b's replies key.
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::vector<std::string> keys = KeysOf(**redis, "*node-b*:replies");
  ASSERT_EQ(keys.size(), 1u);
  const int64_t failed = FailedScripts(**redis);
  ASSERT_GE(failed, 0);
  ASSERT_TRUE((*redis)->Query({"DEL", keys[0]}).ok());
  ASSERT_TRUE((*redis)->Query({"SET", keys[0], "not a stream"}).ok());
  Answer got;
  std::thread ask([&] { got = GetJob(stub_b, end.job_id()); });
  JoinAtExit join_ask{ask};
  // a read the request and could not answer it.
  EXPECT_TRUE(testing::WaitFor([&] { return FailedScripts(**redis) > failed; },
                               absl::Seconds(10)));
  ASSERT_TRUE((*redis)->Query({"DEL", keys[0]}).ok());
  ask.join();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.id(), end.job_id());
  EXPECT_LT(got.took, absl::Seconds(5));  // Its deadline: 10 s.
}

// A node reads its requests from before it is seen alive: one sent the
// moment its lease appears (here by the test, as an asker would, to the
// node's requests stream) is answered, not skipped as older than its
// reads and left to its asker's deadline.
TEST(ClusterReachTest, ANodeAnswersFromTheMomentItIsSeenAlive) {
  auto c = StartNodes("jobd-cluster-fresh", {{"node-a", 1}});
  ASSERT_TRUE(c.ok()) << c.status();
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  testing::NodeConfig b{.name = "node-b",
                        .extra = {"--state-dir", (*c)->dir() + "/node-b"}};
  auto node_b = testing::Daemon::Start(testing::ClusterArgs((*c)->redis(), b));
  ASSERT_TRUE(node_b.ok()) << node_b.status();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto lease = (*redis)->Query({"EXISTS", "{jobd}:node:node-b"});
        return lease.ok() && lease->integer == 1;
      },
      absl::Seconds(20)));
  ASSERT_TRUE(
      (*redis)
          ->Query({"XADD", "{jobd:rpc:node-b}:in", "*", "req", "7", "from",
                   "asker", "op", "get", "job", "999", "owner", ""})
          .ok());
  // node-b has no job 999: its answer is NOT_FOUND.
  std::string code;
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        auto r =
            (*redis)->Query({"XRANGE", "{jobd:rpc:asker}:replies", "-", "+"});
        if (!r.ok() || r->elements.empty()) return false;
        const auto& kv = r->elements[0].elements.at(1).elements;
        for (size_t i = 0; i + 1 < kv.size(); i += 2) {
          if (kv[i].str == "code") code = kv[i + 1].str;
        }
        return true;
      },
      absl::Seconds(5)));
  EXPECT_EQ(code,
            std::to_string(static_cast<int>(absl::StatusCode::kNotFound)));
}

// A reply meant for an earlier incarnation of the asking node (the same
// name, before a restart: its requests numbered as this one's are) is
// not taken as the answer to this one's request: here replies with every
// small request number appended to b's replies stream while b waits for
// a's answer about a running job. b's client gets a's answer, the job's
// end, not one of them.
TEST(ClusterReachTest, RepliesMeantForAnEarlierIncarnationAreNotTaken) {
  auto c = StartNodes("jobd-cluster-stale", {{"node-a", 1}, {"node-b", 1}});
  ASSERT_TRUE(c.ok()) << c.status();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  testing::LoadStream run(stub_a, {Ledger((*c)->ledger(), "long", 2000)}, 1);
  const std::string id = AwaitJob(stub_a, "long", v1::JOB_STATE_RUNNING);
  ASSERT_FALSE(id.empty());
  auto redis = RedisClient::Connect((*c)->redis().socket_path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  Answer got;
  std::thread wait(
      [&] { got = GetJob(stub_b, id, absl::Seconds(10), absl::Seconds(15)); });
  JoinAtExit join_wait{wait};
  // b's request is at a (which holds it until the job ends).
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto n = (*redis)->Query({"XLEN", "{jobd:rpc:node-a}:in"});
        return n.ok() && n->integer >= 1;
      },
      absl::Seconds(10)));
  for (int req = 1; req <= 200; ++req) {
    ASSERT_TRUE((*redis)
                    ->Query({"XADD", "{jobd:rpc:node-b}:replies", "*", "req",
                             std::to_string(req), "code",
                             std::to_string(
                                 static_cast<int>(absl::StatusCode::kNotFound)),
                             "msg", "a reply to an earlier incarnation"})
                    .ok());
  }
  wait.join();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.id(), id);
  EXPECT_EQ(got.job.state(), v1::JOB_STATE_SUCCEEDED);
}

TEST(ClusterReachTest, OwnerChecksHoldAcrossNodes) {
  auto c =
      StartNodes("jobd-cluster-owner", {{"node-a", 2, testing::TokenFlags()},
                                        {"node-b", 2, testing::TokenFlags()}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  // Over TCP: a Unix socket's peer is the local admin.
  auto stub_a = v1::JobService::NewStub(grpc::CreateChannel(
      (*c)->daemon(0).tcp_address(), grpc::InsecureChannelCredentials()));
  auto stub_b = v1::JobService::NewStub(grpc::CreateChannel(
      (*c)->daemon(1).tcp_address(), grpc::InsecureChannelCredentials()));
  // alice's job at a, still running when asked for.
  testing::StreamResult r;
  std::thread submit([&] {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(30));
    WithToken(ctx, testing::kAlice);
    r = testing::SubmitAll(ctx, *stub_a, {Ledger(ledger, "alice", 3000)});
  });
  JoinAtExit join_submit{submit};
  const std::string id =
      AwaitJob(*stub_a, "alice", v1::JOB_STATE_RUNNING, testing::kRoot);
  ASSERT_FALSE(id.empty());
  // Another submitter does not see it, nor cancel it, from b: as unknown.
  Answer got = GetJob(*stub_b, id, absl::ZeroDuration(), absl::Seconds(10),
                      testing::kCarol);
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Cancel(*stub_b, id, nullptr, testing::kCarol).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // A reader may not cancel at all (checked at b, which it called).
  EXPECT_EQ(Cancel(*stub_b, id, nullptr, testing::kBob).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Its owner and an admin do.
  got = GetJob(*stub_b, id, absl::ZeroDuration(), absl::Seconds(10),
               testing::kAlice);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.job.owner(), "alice");
  got = GetJob(*stub_b, id, absl::ZeroDuration(), absl::Seconds(10),
               testing::kRoot);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  v1::CancelJobResponse resp;
  const grpc::Status s = Cancel(*stub_b, id, &resp, testing::kAlice);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.state(), v1::JOB_STATE_CANCELLED);
  submit.join();
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_CANCELLED);
}

}  // namespace
}  // namespace jobd
