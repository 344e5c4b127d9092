// Integration tests: a whole jobd (in this process, service_fixture.h)
// driven through the raw jobd.v1 gRPC API: clients that vanish, GetJob and
// its wait, progress events, WatchJobs and its resume, ListJobs and
// ListTasks.
#include <map>
#include <set>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/service_fixture.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::ServiceTest;
using testing::Spec;
using testing::Stream;
using testing::StreamResult;
using testing::SubmitAll;
using testing::ThreadSleep;

TEST_F(ServiceTest, VanishedClientLosesNothingElse) {
  StartDaemon({"--thread-workers", "2"});
  std::string kept_id, cancelled_id;
  for (bool cancel_on_disconnect : {false, true}) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = stub_->Submit(ctx.get());
    v1::SubmitRequest req;
    req.mutable_options()->set_cancel_on_disconnect(cancel_on_disconnect);
    auto* item = req.add_items();
    item->set_client_tag(1);
    *item->mutable_spec() = Spec("sleep", {300});
    ASSERT_TRUE(stream->Write(req));
    v1::SubmitResponse resp;
    std::string id;
    while (id.empty() && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) id = e.job_id();
      }
    }
    ASSERT_FALSE(id.empty());
    ctx->TryCancel();  // The client vanishes mid-stream.
    stream->Finish();
    (cancel_on_disconnect ? cancelled_id : kept_id) = id;
  }
  EXPECT_EQ(GetJob(kept_id, absl::Seconds(10)).state(),
            v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(GetJob(cancelled_id, absl::Seconds(10)).state(),
            v1::JOB_STATE_CANCELLED);
  ExpectServing();
}

TEST_F(ServiceTest, GetJobWaitsAndReportsErrors) {
  auto r = SubmitAll(*stub_, {Spec("sleep", {1})});
  const std::string id = r.Terminal().at(0).job_id();
  v1::Job job = GetJob(id, absl::ZeroDuration());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.spec().task(), "sleep");
  EXPECT_TRUE(job.has_finish_time());

  grpc::ClientContext c1, c2, c3;
  v1::GetJobRequest req;
  v1::Job out;
  req.set_job_id("999999");
  EXPECT_EQ(stub_->GetJob(&c1, req, &out).error_code(),
            grpc::StatusCode::NOT_FOUND);
  req.set_job_id("-1");
  EXPECT_EQ(stub_->GetJob(&c2, req, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  req.set_job_id(id);
  req.mutable_wait()->set_seconds(-3);
  EXPECT_EQ(stub_->GetJob(&c3, req, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, GetJobWaitBlocksUntilTheEndOrTheWaitLimit) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  v1::SubmitRequest req;
  req.mutable_options()->set_cancel_on_disconnect(true);  // See TryCancel.
  for (double ms : {400.0, 20000.0}) {
    auto* item = req.add_items();
    item->set_client_tag(req.items_size());
    *item->mutable_spec() = Spec("sleep", {ms});
  }
  ASSERT_TRUE(stream->Write(req));
  std::map<uint64_t, std::string> ids;
  v1::SubmitResponse resp;
  while (ids.size() < 2 && stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids[e.client_tag()] = e.job_id();
    }
  }
  // Ends while we wait: answered at the end, not at the wait limit.
  absl::Time start = absl::Now();
  EXPECT_EQ(GetJob(ids[1], absl::Seconds(10)).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Still running at the wait limit: answered with its current state.
  grpc::ClientContext c;
  Deadline(c);
  v1::GetJobRequest get;
  get.set_job_id(ids[2]);
  get.mutable_wait()->set_nanos(200 * 1000 * 1000);
  v1::Job job;
  start = absl::Now();
  ASSERT_TRUE(stub_->GetJob(&c, get, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
  ctx.TryCancel();
}

TEST_F(ServiceTest, ProgressEventsReachTheSubmitter) {
  // primes.count reports progress every 100,000 numbers.
  auto r = SubmitAll(*stub_,
                     {Spec("primes.count", {300000}, v1::JOB_KIND_CPU_BOUND)});
  ASSERT_TRUE(r.status.ok());
  int progress = 0;
  for (const auto& e : r.events) {
    if (e.type() != v1::EVENT_TYPE_PROGRESS) continue;
    ++progress;
    EXPECT_GT(e.progress().fraction(), 0);
    EXPECT_LT(e.progress().fraction(), 1);
  }
  EXPECT_GE(progress, 1);
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_EQ(r.Terminal()[0].result().value().number_value(), 25997);
}

TEST_F(ServiceTest, WatchAllResumesFromASequence) {
  auto first = SubmitAll(*stub_, {Spec("sleep", {1}), Spec("sleep", {1})});
  const uint64_t last_seen = first.events.back().sequence();
  ASSERT_GT(last_seen, 0u);
  auto second = SubmitAll(*stub_, {Spec("sleep", {1})});  // Missed by watcher.
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(5));
  v1::WatchJobsRequest req;
  req.set_after_sequence(last_seen);
  auto reader = stub_->WatchJobs(&ctx, req);
  v1::WatchJobsResponse resp;
  std::vector<v1::JobEvent> got;
  while (got.size() < 3 && reader->Read(&resp)) {
    for (const auto& e : resp.events()) got.push_back(e);
  }
  ctx.TryCancel();
  reader->Finish();
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got[0].sequence(), last_seen + 1);
  EXPECT_EQ(got[0].job_id(), second.Terminal()[0].job_id());
  EXPECT_EQ(got[2].type(), v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(ServiceTest, WatchNamedJobsEndsWhenTheyEnd) {
  auto r = SubmitAll(*stub_, {Spec("sleep", {1})});
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::WatchJobsRequest req;
  req.add_job_ids(r.Terminal().at(0).job_id());
  auto reader = stub_->WatchJobs(&ctx, req);
  v1::WatchJobsResponse resp;
  int terminal = 0;
  while (reader->Read(&resp)) {
    for (const auto& e : resp.events()) terminal += e.type() >= 4;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(terminal, 1);

  // Resuming after the end it has seen: nothing more will come, so the
  // stream ends at once instead of hanging.
  grpc::ClientContext again;
  Deadline(again, absl::Seconds(10));
  v1::WatchJobsRequest resume = req;
  resume.set_after_sequence(r.Terminal().at(0).sequence());
  auto resumed = stub_->WatchJobs(&again, resume);
  int events = 0;
  while (resumed->Read(&resp)) events += resp.events_size();
  EXPECT_TRUE(resumed->Finish().ok());
  EXPECT_EQ(events, 0);

  grpc::ClientContext ctx2;
  Deadline(ctx2, absl::Seconds(10));
  req.set_job_ids(0, "777777");
  auto missing = stub_->WatchJobs(&ctx2, req);
  while (missing->Read(&resp)) {
  }
  EXPECT_EQ(missing->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, ListJobsPagesAndFilters) {
  std::vector<v1::JobSpec> specs(5, Spec("sleep", {1}));
  specs.push_back(Spec("fail"));
  SubmitAll(*stub_, specs);
  grpc::ClientContext c1;
  v1::ListJobsRequest req;
  req.set_page_size(4);
  v1::ListJobsResponse page;
  ASSERT_TRUE(stub_->ListJobs(&c1, req, &page).ok());
  EXPECT_EQ(page.jobs_size(), 4);
  ASSERT_FALSE(page.next_page_token().empty());
  grpc::ClientContext c2;
  req.set_page_token(page.next_page_token());
  v1::ListJobsResponse rest;
  ASSERT_TRUE(stub_->ListJobs(&c2, req, &rest).ok());
  EXPECT_EQ(rest.jobs_size(), 2);
  grpc::ClientContext c3;
  v1::ListJobsRequest failed;
  failed.add_states(v1::JOB_STATE_FAILED);
  v1::ListJobsResponse f;
  ASSERT_TRUE(stub_->ListJobs(&c3, failed, &f).ok());
  ASSERT_EQ(f.jobs_size(), 1);
  EXPECT_EQ(f.jobs(0).spec().task(), "fail");
  grpc::ClientContext c4;
  v1::ListJobsRequest bad;
  bad.set_page_token("xyz");
  EXPECT_EQ(stub_->ListJobs(&c4, bad, &f).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, ListTasksDescribesTheBuiltins) {
  grpc::ClientContext ctx;
  v1::ListTasksResponse resp;
  ASSERT_TRUE(stub_->ListTasks(&ctx, {}, &resp).ok());
  std::map<std::string, v1::TaskInfo> tasks;
  for (const auto& t : resp.tasks()) tasks[t.name()] = t;
  for (const char* n : {"echo", "sleep", "primes.count", "fail", "crash"}) {
    EXPECT_TRUE(tasks.count(n)) << n;
  }
  EXPECT_EQ(tasks["primes.count"].default_kind(), v1::JOB_KIND_CPU_BOUND);
  ASSERT_EQ(tasks["sleep"].params_size(), 1);
  EXPECT_EQ(tasks["sleep"].params(0).name(), "ms");
  EXPECT_EQ(tasks["sleep"].params(0).type(), "int");
  EXPECT_TRUE(tasks["echo"].variadic());
}

}  // namespace
}  // namespace jobd
