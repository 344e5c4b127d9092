// Test fixture of the service tests (service_test.cc, watch_test.cc): a
// whole jobd in the test's own process (in_process_daemon.h: temp Unix
// socket, 127.0.0.1 port 0, --testing-tasks), driven through the raw jobd.v1
// gRPC API on its Unix socket as any client drives the binary. Nothing here
// needs a process of its own; what does (signals, exit codes, the config
// file read by the binary) is in jobd_binary_test.cc.
//
// Thread-safety: one fixture per test, used from the test's thread (and the
// threads a test starts itself). Ownership: the fixture owns its daemon and
// stub; StartDaemon replaces both (the old daemon stops once the new one
// serves).
#ifndef JOBD_TESTS_INTEGRATION_SERVICE_FIXTURE_H_
#define JOBD_TESTS_INTEGRATION_SERVICE_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"

namespace jobd::testing {

using Stream = grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>;

class ServiceTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args = {}) {
    auto d = InProcessDaemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }
  void SetUp() override { StartDaemon(); }

  v1::Job GetJob(const std::string& id, absl::Duration wait) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetJobRequest req;
    req.set_job_id(id);
    if (wait > absl::ZeroDuration()) {
      req.mutable_wait()->set_seconds(absl::ToInt64Seconds(wait));
    }
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
    return job;
  }
  v1::GetStatsResponse Stats() { return testing::GetStats(*stub_); }
  // The daemon still serves a normal job.
  void ExpectServing() {
    auto r = SubmitAll(*stub_, {Spec("sleep", {1})});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.Terminal().size(), 1u);
    EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  }

  std::unique_ptr<InProcessDaemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// A sleep on the thread pool, for tests of its queue (on the reactor,
// sleeps never wait for a slot).
inline v1::JobSpec ThreadSleep(double ms) {
  v1::JobSpec s = Spec("sleep", {ms});
  s.set_executor(v1::EXECUTOR_THREAD);
  return s;
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_SERVICE_FIXTURE_H_
