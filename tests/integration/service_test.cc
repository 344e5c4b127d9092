// Integration tests: a whole jobd (in this process, service_fixture.h)
// driven through the raw jobd.v1 gRPC API (no client library): stream
// ordering, window flow control, batching, every kind of bad input,
// cancellation, priorities, idempotence, queue and message limits.
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"
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

TEST_F(ServiceTest, CompletionOrderIsTheDefault) {
  auto r = SubmitAll(*stub_, {Spec("sleep", {300}), Spec("sleep", {10})});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto t = r.Terminal();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].client_tag(), 2u);  // 10 ms job first.
  EXPECT_EQ(t[1].client_tag(), 1u);
  for (const auto& e : t) EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(t[0].result().value().number_value(), 10);
  // Every job got ACCEPTED with an id, then STARTED, before its end.
  int accepted = 0, started = 0;
  for (const auto& e : r.events) {
    if (e.type() == v1::EVENT_TYPE_ACCEPTED) {
      ++accepted;
      EXPECT_FALSE(e.job_id().empty());
      EXPECT_EQ(e.task(), "sleep");
      EXPECT_EQ(e.executor(), v1::EXECUTOR_REACTOR);  // Async, IO-bound.
    }
    if (e.type() == v1::EVENT_TYPE_STARTED) ++started;
  }
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(started, 2);
}

TEST_F(ServiceTest, SubmissionOrderHoldsBackEarlyResults) {
  v1::SubmitOptions o;
  o.set_order(v1::ORDER_SUBMISSION);
  auto r = SubmitAll(*stub_,
                     {Spec("sleep", {300}), Spec("sleep", {10}), Spec("nope"),
                      Spec("sleep", {20})},
                     o);
  ASSERT_TRUE(r.status.ok());
  auto t = r.Terminal();
  ASSERT_EQ(t.size(), 4u);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i].client_tag(), i + 1);
  EXPECT_EQ(t[2].type(), v1::EVENT_TYPE_REJECTED);  // In its place, too.
}

TEST_F(ServiceTest, TerminalOnlyAndBatching) {
  v1::SubmitOptions o;
  o.set_terminal_only(true);
  std::vector<v1::JobSpec> specs(2000, Spec("echo", {1}, v1::JOB_KIND_AUTO));
  auto r = SubmitAll(*stub_, specs, o);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.Terminal().size(), 2000u);
  for (const auto& e : r.events) {
    EXPECT_NE(e.type(), v1::EVENT_TYPE_STARTED);
  }
  EXPECT_EQ(r.events.size(), 4000u);  // ACCEPTED + SUCCEEDED each.
  o.set_omit_accepted(true);
  r = SubmitAll(*stub_, specs, o);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.events.size(), 2000u);  // Results only.
  for (const auto& e : r.events) EXPECT_FALSE(e.job_id().empty());
}

// A trivial task's job that its Submit's thread runs at once (echo on the
// thread pool) has its ACCEPTED and its end leave in one message: a round
// trip of one write and one read, not two of each. Not every time: the
// completion of the stream's previous write may come between the two and
// send the ACCEPTED alone (rare; without the one-message order, never one).
TEST_F(ServiceTest, ATrivialJobRunAtOnceIsAnsweredInOneMessage) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  constexpr int kRounds = 20;
  int in_one = 0;
  for (int i = 1; i <= kRounds; ++i) {
    v1::SubmitRequest req;
    if (i == 1) req.mutable_options()->set_terminal_only(true);
    auto* item = req.add_items();
    item->set_client_tag(i);
    *item->mutable_spec() =
        Spec("echo", {static_cast<double>(i)}, v1::JOB_KIND_IO_BOUND);
    item->mutable_spec()->set_in_memory(true);
    ASSERT_TRUE(stream->Write(req));
    std::vector<v1::JobEvent> events;
    int messages = 0;
    while (events.empty() || !v1::EndsSubmitItem(events.back().type())) {
      v1::SubmitResponse resp;
      ASSERT_TRUE(stream->Read(&resp));
      ++messages;
      for (const v1::JobEvent& e : resp.events()) events.push_back(e);
    }
    in_one += messages == 1;
    ASSERT_EQ(events.size(), 2u) << "job " << i;
    EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_ACCEPTED);
    EXPECT_EQ(events[1].type(), v1::EVENT_TYPE_SUCCEEDED);
    EXPECT_EQ(events[1].client_tag(), static_cast<uint64_t>(i));
    EXPECT_EQ(events[1].executor(), v1::EXECUTOR_THREAD);
    EXPECT_EQ(events[1].result().value().number_value(), i);
  }
  EXPECT_GE(in_one, kRounds * 3 / 4);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, RejectedSpecsNameTheFieldAndSpareTheOthers) {
  v1::JobSpec no_kind = Spec("sleep", {1});
  no_kind.set_kind(v1::JOB_KIND_UNSPECIFIED);
  v1::JobSpec neg_timeout = Spec("sleep", {1});
  neg_timeout.mutable_timeout()->set_seconds(-5);
  v1::JobSpec ill_typed = Spec("sleep");
  ill_typed.add_args()->set_string_value("soon");
  v1::JobSpec missing = Spec("sleep");
  auto r = SubmitAll(*stub_, {Spec("no.such.task"), no_kind, neg_timeout,
                              ill_typed, missing, Spec("sleep", {1})});
  ASSERT_TRUE(r.status.ok());
  std::map<uint64_t, v1::JobEvent> by_tag;
  for (const auto& e : r.Terminal()) by_tag[e.client_tag()] = e;
  ASSERT_EQ(by_tag.size(), 6u);
  const std::vector<std::string> expected = {
      "unknown task 'no.such.task'", "spec.kind", "spec.timeout",
      "spec.args[0] (ms): expected int, got string", "requires argument 'ms'"};
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = by_tag[i + 1];
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED) << i;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_INVALID_INPUT);
    EXPECT_THAT(e.error().message(), HasSubstr(expected[i]));
  }
  EXPECT_EQ(by_tag[6].type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(Stats().rejected(), 5u);
  EXPECT_EQ(Stats().accepted(), 1u);
}

// Error texts that quote a client's input are cut on a character boundary:
// task names of 125 to 127 ASCII bytes and a 2-, 3- or 4-byte character
// put the validator's 128-byte cut at every offset of it. The REJECTED
// events share response messages with the good jobs' events, which must
// all arrive (one invalid byte would fail the whole message's parse).
TEST_F(ServiceTest, ErrorTextsCutInsideACharacterStayUtf8) {
  std::vector<v1::JobSpec> specs = {Spec("sleep", {1}), Spec("sleep", {1}),
                                    Spec("sleep", {1})};
  for (const char* ch : {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"}) {
    for (size_t lead = 124; lead <= 127; ++lead) {
      specs.push_back(Spec(std::string(lead, 'a') + ch + "z"));
    }
    // A label over the size limit, quoted in 64 bytes.
    for (size_t lead = 61; lead <= 63; ++lead) {
      v1::JobSpec labelled = Spec("sleep", {1});
      (*labelled.mutable_labels())[std::string(lead, 'k') + ch +
                                   std::string(2000, 'k')] = "v";
      specs.push_back(labelled);
    }
  }
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::map<uint64_t, std::vector<v1::EventType>> by_tag;
  for (const v1::JobEvent& e : r.events)
    by_tag[e.client_tag()].push_back(e.type());
  ASSERT_EQ(by_tag.size(), specs.size());
  for (uint64_t tag = 1; tag <= 3; ++tag) {
    EXPECT_THAT(by_tag[tag], ::testing::Contains(v1::EVENT_TYPE_ACCEPTED));
    EXPECT_THAT(by_tag[tag], ::testing::Contains(v1::EVENT_TYPE_SUCCEEDED));
  }
  for (const v1::JobEvent& e : r.Terminal()) {
    if (e.client_tag() <= 3) continue;
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
    EXPECT_THAT(e.error().message(),
                ::testing::AnyOf(HasSubstr("unknown task 'aaaa"),
                                 HasSubstr("spec.labels[kkkk")));
  }
}

TEST_F(ServiceTest, MalformedOptionsFailTheStream) {
  v1::SubmitOptions o;
  o.set_order(static_cast<v1::Order>(7));
  auto r = SubmitAll(*stub_, {Spec("sleep", {1})}, o);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("options.order"));
  ExpectServing();
}

TEST_F(ServiceTest, FailedTaskIsAResultNotAnRpcError) {
  v1::JobSpec fail = Spec("fail");
  (*fail.mutable_kwargs()->mutable_fields())["message"].set_string_value(
      "disk on fire");
  auto r = SubmitAll(*stub_, {fail});
  ASSERT_TRUE(r.status.ok());
  auto t = r.Terminal();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(t[0].error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_EQ(t[0].error().message(), "disk on fire");
}

TEST_F(ServiceTest, TimeoutEndsTheJob) {
  v1::JobSpec s = Spec("sleep", {10000});
  s.mutable_timeout()->set_nanos(100 * 1000 * 1000);
  const absl::Time start = absl::Now();
  auto r = SubmitAll(*stub_, {s});
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  auto t = r.Terminal();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(t[0].error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_EQ(t[0].error().code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ServiceTest, CancelQueuedAndRunningJobs) {
  StartDaemon({"--thread-workers", "1"});
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  v1::SubmitRequest req;
  for (int i = 1; i <= 2; ++i) {
    auto* item = req.add_items();
    item->set_client_tag(i);
    *item->mutable_spec() = Spec("sleep", {20000});
  }
  ASSERT_TRUE(stream->Write(req));
  std::map<uint64_t, std::string> ids;
  v1::SubmitResponse resp;
  while (ids.size() < 2 && stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids[e.client_tag()] = e.job_id();
    }
  }
  ASSERT_EQ(ids.size(), 2u);
  for (uint64_t tag : {2, 1}) {  // Queued one first, then the running one.
    grpc::ClientContext c;
    Deadline(c);
    v1::CancelJobRequest cr;
    cr.set_job_id(ids[tag]);
    v1::CancelJobResponse cresp;
    ASSERT_TRUE(stub_->CancelJob(&c, cr, &cresp).ok());
    EXPECT_EQ(cresp.state(), v1::JOB_STATE_CANCELLED);
  }
  stream->WritesDone();
  int cancelled = 0;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_CANCELLED) {
        ++cancelled;
        EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_CANCELLED);
      }
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(cancelled, 2);
  // The sleeping task honoured its token: the worker is free again.
  ExpectServing();
  // Unknown and malformed ids.
  grpc::ClientContext c1, c2;
  v1::CancelJobRequest bad;
  v1::CancelJobResponse cresp;
  bad.set_job_id("123456789");
  EXPECT_EQ(stub_->CancelJob(&c1, bad, &cresp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  bad.set_job_id("abc");
  EXPECT_EQ(stub_->CancelJob(&c2, bad, &cresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, PrioritiesOrderTheQueue) {
  StartDaemon({"--thread-workers", "1"});
  std::vector<v1::JobSpec> specs;
  // Occupies the only worker: a batch is admitted whole before dispatch, so
  // the highest priority in it starts first.
  v1::JobSpec blocker = ThreadSleep(200);
  blocker.set_priority(100);
  specs.push_back(blocker);
  for (int p : {0, 10, 5}) {
    v1::JobSpec s = ThreadSleep(1);
    s.set_priority(p);
    specs.push_back(s);
  }
  auto r = SubmitAll(*stub_, specs);
  std::vector<uint64_t> order;
  for (const auto& e : r.Terminal()) order.push_back(e.client_tag());
  EXPECT_THAT(order, ::testing::ElementsAre(1, 3, 4, 2));
}

TEST_F(ServiceTest, IdempotentResubmitReturnsTheSameJob) {
  v1::JobSpec s = Spec("sleep", {50});
  s.set_idempotency_key("order-42");
  auto a = SubmitAll(*stub_, {s});
  auto b = SubmitAll(*stub_, {s});
  ASSERT_EQ(a.Terminal().size(), 1u);
  ASSERT_EQ(b.Terminal().size(), 1u);
  EXPECT_EQ(a.Terminal()[0].job_id(), b.Terminal()[0].job_id());
  bool duplicate = false;
  for (const auto& e : b.events) duplicate |= e.duplicate();
  EXPECT_TRUE(duplicate);
  EXPECT_EQ(Stats().accepted(), 1u);
}

TEST_F(ServiceTest, WindowStopsReadingUntilJobsEnd) {
  v1::SubmitOptions o;
  o.set_window(2);
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  // Ten messages of one job each; only 2 may be in flight.
  std::thread writer([&] {
    for (int i = 1; i <= 10; ++i) {
      v1::SubmitRequest req;
      if (i == 1) *req.mutable_options() = o;
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = Spec("sleep", {300});
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  v1::SubmitResponse resp;
  int terminal = 0;
  uint64_t max_accepted_while_running = 0;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (v1::EndsSubmitItem(e.type())) ++terminal;
    }
    if (terminal == 0) {
      max_accepted_while_running =
          std::max(max_accepted_while_running, Stats().accepted());
    }
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(terminal, 10);
  EXPECT_LE(max_accepted_while_running, 2u);
  EXPECT_EQ(Stats().accepted(), 10u);
}

TEST_F(ServiceTest, QueueLimitAndRequestLimits) {
  StartDaemon({"--thread-workers", "1", "--max-queued", "2",
               "--max-jobs-per-request", "5", "--max-payload-bytes", "1000",
               "--max-message-bytes", "65536"});
  v1::JobSpec blocker = ThreadSleep(300);
  blocker.set_priority(1);  // Starts first; the other three wait.
  auto r = SubmitAll(*stub_,
                     {ThreadSleep(1), ThreadSleep(1), blocker, ThreadSleep(1)});
  auto t = r.Terminal();
  ASSERT_EQ(t.size(), 4u);
  int overloaded = 0;
  for (const auto& e : t) {
    if (e.type() == v1::EVENT_TYPE_REJECTED) {
      ++overloaded;
      EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_OVERLOADED);
      EXPECT_THAT(e.error().message(), HasSubstr("limit is 2 (max_queued)"));
    }
  }
  EXPECT_EQ(overloaded, 1);

  std::vector<v1::JobSpec> six(6, Spec("sleep", {1}));
  r = SubmitAll(*stub_, six);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(r.status.error_message(), HasSubstr("max_jobs_per_request"));

  v1::JobSpec big = Spec("echo", {}, v1::JOB_KIND_AUTO);
  big.set_payload(std::string(2000, 'x'));
  r = SubmitAll(*stub_, {big});
  ASSERT_EQ(r.Terminal().size(), 1u);
  EXPECT_THAT(r.Terminal()[0].error().message(),
              HasSubstr("spec.payload: 2000 bytes; the limit is 1000"));

  big.set_payload(std::string(100000, 'x'));  // Over the gRPC message limit.
  r = SubmitAll(*stub_, {big});
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ExpectServing();
}

TEST_F(ServiceTest, AClientThatDoesNotReadCannotGrowTheServer) {
  StartDaemon({"--max-payload-bytes", "200000"});
  grpc::ClientContext ctx;
  auto stream = stub_->Submit(&ctx);
  v1::JobSpec big = Spec("echo", {}, v1::JOB_KIND_AUTO);
  big.set_payload(std::string(100000, 'x'));  // Echoed back: 100 KB each.
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 400; ++i) {
      v1::SubmitRequest req;
      if (i == 0) req.mutable_options()->set_window(4);
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = big;
      if (!stream->Write(req)) return;  // Blocks once the server stops reading.
      ++written;
    }
  });
  // Never read. The echo jobs end in microseconds, so without the window
  // counting unwritten results all 400 (40 MB) would be accepted within this
  // time. With it, acceptance stops once gRPC's flow-control buffers (a few
  // MB here) are full and the window is reached.
  uint64_t accepted = 0;
  for (int i = 0; i < 100; ++i) {
    accepted = std::max(accepted, Stats().accepted());
    absl::SleepFor(absl::Milliseconds(10));  // Sampling a counter over time.
  }
  EXPECT_LT(accepted, 150u);
  EXPECT_LT(written.load(), 400);
  ctx.TryCancel();
  writer.join();
  stream->Finish();
  ExpectServing();
}

TEST_F(ServiceTest, LargeResultsAreSplitAcrossMessages) {
  StartDaemon({"--max-payload-bytes", "1000000"});
  grpc::ClientContext ctx;  // Default 4 MiB receive limit on this side.
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  v1::JobSpec big = Spec("echo", {}, v1::JOB_KIND_AUTO);
  big.set_payload(std::string(900000, 'y'));
  for (int m = 0; m < 5; ++m) {
    v1::SubmitRequest req;
    req.mutable_options()->set_terminal_only(true);
    for (int i = 0; i < 4; ++i) {
      auto* item = req.add_items();
      item->set_client_tag(m * 4 + i);
      *item->mutable_spec() = big;
    }
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  int ok = 0;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      ok += e.type() == v1::EVENT_TYPE_SUCCEEDED &&
            e.result().payload().size() == 900000;
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ok, 20);
}

// A result that cannot fit one message with its spec never reaches a
// reader whole: its job fails RESULT_TOO_LARGE, and every reader (the
// stream, GetJob, ListJobs, a watch replay) still works. ListJobs pages
// and Submit responses split by bytes below the message limit.
TEST_F(ServiceTest, ResultsAndPagesNeverExceedTheMessageLimit) {
  StartDaemon(
      {"--max-message-bytes", "1048576", "--max-payload-bytes", "600000"});
  v1::JobSpec big = Spec("echo", {}, v1::JOB_KIND_IO_BOUND);
  big.set_payload(std::string(600000, 'y'));  // Echoed: 1.2 MB with its spec.
  v1::JobSpec half = Spec("echo", {}, v1::JOB_KIND_IO_BOUND);
  half.set_payload(std::string(300000, 'h'));  // 600 kB with it: fits.
  std::vector<v1::JobSpec> specs = {big, half, half, big, half};
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  for (const v1::JobSpec& s : specs) {  // One message each (1 MiB limit).
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf({s})));
  }
  stream->WritesDone();
  std::vector<v1::JobEvent> ends;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (v1::EndsSubmitItem(e.type())) ends.push_back(e);
    }
  }
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(ends.size(), specs.size());
  int too_large = 0;
  for (const v1::JobEvent& e : ends) {
    if (e.type() == v1::EVENT_TYPE_FAILED) {
      ++too_large;
      EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_RESULT_TOO_LARGE);
      EXPECT_THAT(e.error().message(), HasSubstr("--max-message-bytes"));
    } else {
      EXPECT_EQ(e.result().payload().size(), 300000u);
    }
    const v1::Job job = GetJob(e.job_id(), absl::ZeroDuration());
    EXPECT_EQ(job.id(), e.job_id());
  }
  EXPECT_EQ(too_large, 2);
  // Five jobs of 300-600 kB specs: pages of at most 1 MiB.
  std::set<std::string> listed;
  std::string token;
  for (int page = 0; page < 10; ++page) {
    grpc::ClientContext list_ctx;
    Deadline(list_ctx);
    v1::ListJobsRequest req;
    req.set_page_token(token);
    v1::ListJobsResponse list;
    grpc::Status s = stub_->ListJobs(&list_ctx, req, &list);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_LE(list.ByteSizeLong(), 1048576u);
    for (const v1::Job& j : list.jobs()) listed.insert(j.id());
    token = list.next_page_token();
    if (token.empty()) break;
  }
  EXPECT_EQ(listed.size(), specs.size());
  // A replay of every event, ends included, in messages under the limit.
  grpc::ClientContext watch_ctx;
  Deadline(watch_ctx);
  v1::WatchJobsRequest watch;
  for (const v1::JobEvent& e : ends) watch.add_job_ids(e.job_id());
  watch.set_after_sequence(1);
  auto reader = stub_->WatchJobs(&watch_ctx, watch);
  v1::WatchJobsResponse wr;
  size_t replayed_ends = 0;
  while (reader->Read(&wr)) {
    for (const v1::JobEvent& e : wr.events()) {
      replayed_ends += v1::EndsSubmitItem(e.type());
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(replayed_ends, specs.size());
}

}  // namespace
}  // namespace jobd
