// Integration tests of fair share between callers: a whole jobd in this
// process (in_process_daemon.h) with token auth, one thread worker held by
// a blocker while two callers queue their jobs, alice 100 times more than
// carol (alice first). Once the blocker is cancelled, the order of the
// starts (the STARTED events' sequence numbers, one order for the whole
// daemon) shows carol getting her weighted share, within 10%, for as long
// as she has jobs queued: 1:1, and 3:1 with --caller-weight alice=3.
#include <algorithm>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"
#include "tests/integration/test_tokens.h"

namespace jobd {
namespace {

using testing::Deadline;
using testing::InProcessDaemon;
using testing::kAlice;
using testing::kCarol;
using testing::kRoot;

using Stream = grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>;

constexpr int kCarolJobs = 50;
constexpr int kAliceJobs = 100 * kCarolJobs;

v1::JobSpec Noop() {
  v1::JobSpec s = testing::Spec("echo");
  s.set_executor(v1::EXECUTOR_THREAD);
  return s;
}

// One caller's Submit stream.
struct Caller {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream;
  std::vector<uint64_t> started;  // STARTED events' sequence numbers.
  int accepted = 0, ended = 0, succeeded = 0;

  Caller(v1::JobService::Stub& stub, const std::string& token) {
    Deadline(ctx, absl::Seconds(120));
    ctx.AddMetadata("authorization", "Bearer " + token);
    stream = stub.Submit(&ctx);
  }
  // Sends `specs` in one message.
  bool Send(const std::vector<v1::JobSpec>& specs) {
    v1::SubmitOptions options;
    options.set_window(static_cast<uint32_t>(specs.size()) + 1);
    return stream->Write(testing::SubmitRequestOf(specs, options));
  }
  // Reads events until `accepted` jobs were accepted (or the stream ends).
  void ReadUntil(int want_accepted, int want_ended) {
    v1::SubmitResponse resp;
    while ((accepted < want_accepted || ended < want_ended) &&
           stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        switch (e.type()) {
          case v1::EVENT_TYPE_ACCEPTED:
            ++accepted;
            break;
          case v1::EVENT_TYPE_STARTED:
            started.push_back(e.sequence());
            break;
          case v1::EVENT_TYPE_REJECTED:
            ADD_FAILURE() << e.DebugString();
            ++ended;
            break;
          default:
            if (e.type() >= v1::EVENT_TYPE_SUCCEEDED) {
              ++ended;
              succeeded += e.type() == v1::EVENT_TYPE_SUCCEEDED;
            }
        }
      }
    }
  }
  void Close() {
    stream->WritesDone();
    ctx.TryCancel();
    stream->Finish();
  }
};

class FairShareTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> extra) {
    std::vector<std::string> args = testing::TokenFlags();
    for (const char* a : {"--thread-workers", "1", "--durability", "none",
                          "--max-jobs-per-request", "20000", "--max-window",
                          "20000", "--shutdown-grace", "100ms"}) {
      args.push_back(a);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    auto d = InProcessDaemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    // Over TCP: on the trusted Unix socket everyone would be "local".
    stub_ = v1::JobService::NewStub(grpc::CreateChannel(
        daemon_->tcp_address(), grpc::InsecureChannelCredentials()));
  }

  // Holds the one worker with a long sleep of root's, queues alice's
  // flood then carol's trickle, lets the worker go, and returns carol's
  // share of the starts up to her last one.
  double CarolsShare() {
    Caller root(*stub_, kRoot);
    v1::JobSpec sleep = testing::Spec("sleep", {60000});
    sleep.set_executor(v1::EXECUTOR_THREAD);
    EXPECT_TRUE(root.Send({sleep}));
    root.ReadUntil(1, 0);
    EXPECT_TRUE(testing::WaitFor([&] { return Running() == 1; }));
    Caller alice(*stub_, kAlice), carol(*stub_, kCarol);
    EXPECT_TRUE(alice.Send(std::vector<v1::JobSpec>(kAliceJobs, Noop())));
    alice.ReadUntil(kAliceJobs, 0);  // All queued behind the sleep.
    EXPECT_TRUE(carol.Send(std::vector<v1::JobSpec>(kCarolJobs, Noop())));
    carol.ReadUntil(kCarolJobs, 0);
    EXPECT_EQ(Running(), 1u);  // Nothing else started yet.
    CancelSleep(root);
    std::thread reader([&] { alice.ReadUntil(kAliceJobs, kAliceJobs); });
    carol.ReadUntil(kCarolJobs, kCarolJobs);
    reader.join();
    alice.Close();
    carol.Close();
    root.Close();
    EXPECT_EQ(alice.succeeded, kAliceJobs);
    EXPECT_EQ(carol.succeeded, kCarolJobs);
    if (carol.started.size() != size_t{kCarolJobs} ||
        alice.started.size() != size_t{kAliceJobs}) {
      ADD_FAILURE() << "starts: alice " << alice.started.size() << ", carol "
                    << carol.started.size();
      return 0;
    }
    // Carol's starts against everyone's up to her last one.
    const uint64_t last =
        *std::max_element(carol.started.begin(), carol.started.end());
    const auto before =
        std::count_if(alice.started.begin(), alice.started.end(),
                      [&](uint64_t s) { return s < last; });
    return static_cast<double>(kCarolJobs) /
           static_cast<double>(kCarolJobs + before);
  }

  uint64_t Running() {
    v1::GetStatsResponse stats = testing::GetStats(*stub_, kRoot);
    uint64_t busy = 0;
    for (const auto& e : stats.executors()) busy += e.busy();
    return busy;
  }
  // Cancels root's sleep (the one job running).
  void CancelSleep(Caller& root) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    ctx.AddMetadata("authorization", std::string("Bearer ") + kRoot);
    v1::ListJobsRequest list;
    list.add_states(v1::JOB_STATE_RUNNING);
    v1::ListJobsResponse jobs;
    ASSERT_TRUE(stub_->ListJobs(&ctx, list, &jobs).ok());
    ASSERT_EQ(jobs.jobs_size(), 1);
    grpc::ClientContext cancel_ctx;
    Deadline(cancel_ctx);
    cancel_ctx.AddMetadata("authorization", std::string("Bearer ") + kRoot);
    v1::CancelJobRequest req;
    req.set_job_id(jobs.jobs(0).id());
    v1::CancelJobResponse resp;
    ASSERT_TRUE(stub_->CancelJob(&cancel_ctx, req, &resp).ok());
    root.ReadUntil(1, 1);
  }

  std::unique_ptr<InProcessDaemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(FairShareTest, AFloodOfAHundredTimesGetsHalfWithEqualWeights) {
  StartDaemon({});
  const double share = CarolsShare();
  EXPECT_NEAR(share, 0.5, 0.05) << "carol's share of the starts";
}

TEST_F(FairShareTest, WeightsThreeToOneSplitTheStartsThreeToOne) {
  StartDaemon({"--caller-weight", "alice=3"});
  const double share = CarolsShare();
  EXPECT_NEAR(share, 0.25, 0.025) << "carol's share of the starts";
}

}  // namespace
}  // namespace jobd
