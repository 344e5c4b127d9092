// Test fixture: a real jobd with a state directory (and so a journal) of
// its own that outlives the daemon, so a test can kill it and start another
// on the same state. Raw jobd.v1 helpers on top of daemon_harness.h.
//
// Thread-safety: one fixture per test, used by the test's thread.
// Ownership: owns the daemon (stopped in TearDown) and the directory
// (removed in TearDown).
#ifndef JOBD_TESTS_INTEGRATION_JOURNALED_DAEMON_H_
#define JOBD_TESTS_INTEGRATION_JOURNALED_DAEMON_H_

#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::testing {

class JournaledDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/jobd-restart-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    state_ = dir_ + "/state";
  }
  void TearDown() override {
    daemon_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void StartDaemon(std::vector<std::string> args = {}) {
    args.insert(args.end(), {"--state-dir", state_});
    auto d = Daemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }

  absl::StatusOr<v1::Job> GetJob(const std::string& id,
                                 absl::Duration wait = absl::ZeroDuration()) {
    grpc::ClientContext ctx;
    Deadline(ctx, wait + absl::Seconds(30));
    v1::GetJobRequest req;
    req.set_job_id(id);
    if (wait > absl::ZeroDuration()) {
      req.mutable_wait()->set_seconds(absl::ToInt64Seconds(wait));
    }
    v1::Job job;
    grpc::Status s = stub_->GetJob(&ctx, req, &job);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          s.error_message());
    return job;
  }

  // Waits (bounded) until every job in `ids` has ended; returns them.
  std::map<std::string, v1::Job> WaitAllEnded(
      const std::vector<std::string>& ids) {
    std::map<std::string, v1::Job> out;
    for (const std::string& id : ids) {
      absl::StatusOr<v1::Job> job = GetJob(id, absl::Seconds(60));
      EXPECT_TRUE(job.ok()) << id << ": " << job.status();
      if (job.ok()) out[id] = *job;
    }
    return out;
  }

  std::string dir_, state_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// A job running `script` with /bin/sh (exec, on the reactor).
inline v1::JobSpec Shell(const std::string& script) {
  v1::JobSpec s;
  s.set_task("exec");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  auto& argv =
      *(*s.mutable_kwargs()->mutable_fields())["argv"].mutable_list_value();
  for (const std::string& a :
       {std::string("/bin/sh"), std::string("-c"), script}) {
    argv.add_values()->set_string_value(a);
  }
  return s;
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_JOURNALED_DAEMON_H_
