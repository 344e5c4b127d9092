// Integration tests of the jobd binary itself, what an in-process daemon
// cannot show: SIGTERM's graceful shutdown and the exit status, the Drain
// RPC stopping the process, the config file read at start, and the exit
// codes and messages of a refused start.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;

// A sleep on the thread pool (on the reactor, sleeps never wait for a slot).
v1::JobSpec ThreadSleep(double ms) {
  v1::JobSpec s = Spec("sleep", {ms});
  s.set_executor(v1::EXECUTOR_THREAD);
  return s;
}

// Without a journal nothing can wait for a next start: what is left is
// cancelled. (With one, see journal_test.cc.)
TEST(ShutdownTest, SigtermFinishesRunningJobsAndCancelsTheRest) {
  auto launched = Daemon::Start({"--thread-workers", "2", "--shutdown-grace",
                                 "1s", "--durability", "none"});
  ASSERT_TRUE(launched.ok()) << launched.status();
  Daemon& daemon = **launched;
  auto stub = daemon.NewStub();
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub->Submit(&ctx);
  v1::SubmitRequest req;
  // On the two threads: tag 1 ends within the grace; tag 2 would not; tag 3
  // waits in the queue. Tag 4, on the reactor, would not end either.
  for (double ms : {300.0, 20000.0, 1.0}) {
    auto* item = req.add_items();
    item->set_client_tag(req.items_size());
    *item->mutable_spec() = ThreadSleep(ms);
  }
  auto* on_reactor = req.add_items();
  on_reactor->set_client_tag(4);
  *on_reactor->mutable_spec() = Spec("sleep", {20000});
  ASSERT_TRUE(stream->Write(req));
  v1::SubmitResponse resp;
  int started = 0;
  while (started < 3 && stream->Read(&resp)) {
    for (const auto& e : resp.events()) started += e.type() == 2;
  }
  kill(daemon.pid(), SIGTERM);
  std::map<uint64_t, v1::JobEvent> ends;
  while (stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (v1::EndsSubmitItem(e.type())) ends[e.client_tag()] = e;
    }
  }
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ends[1].type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(ends[2].type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(ends[2].error().reason(), v1::ERROR_REASON_SHUTDOWN);
  EXPECT_EQ(ends[3].type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(ends[4].type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(ends[4].error().reason(), v1::ERROR_REASON_SHUTDOWN);
  EXPECT_EQ(ends[4].executor(), v1::EXECUTOR_REACTOR);
  auto exit_status = daemon.Stop(0, absl::Seconds(15));
  ASSERT_TRUE(exit_status.ok());
  EXPECT_TRUE(WIFEXITED(*exit_status));
  EXPECT_EQ(WEXITSTATUS(*exit_status), 0);
  EXPECT_THAT(daemon.Log(), HasSubstr("cancelled 3 unfinished job(s)"));
}

// The Drain RPC asks main() to stop jobd as SIGTERM does: exit status 0.
TEST(ShutdownTest, TheDrainRpcStopsTheBinary) {
  auto launched = Daemon::Start({"--shutdown-grace", "100ms"});
  ASSERT_TRUE(launched.ok()) << launched.status();
  Daemon& daemon = **launched;
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::DrainResponse resp;
  ASSERT_TRUE(daemon.NewStub()->Drain(&ctx, {}, &resp).ok());
  // Stop(0, ...) only waits: the daemon exits by itself.
  auto exit_status = daemon.Stop(0, absl::Seconds(15));
  ASSERT_TRUE(exit_status.ok()) << exit_status.status();
  EXPECT_TRUE(WIFEXITED(*exit_status));
  EXPECT_EQ(WEXITSTATUS(*exit_status), 0);
}

TEST(DaemonStartTest, ReadsAConfigFileAndRejectsBadOnes) {
  char dir[] = "/tmp/jobd-config-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string good = std::string(dir) + "/good.toml";
  const std::string typo = std::string(dir) + "/typo.toml";
  std::ofstream(good) << "thread-workers = 3\nmax-queued = 50\n";
  std::ofstream(typo) << "thread-wrkers = 3\n";
  auto d = Daemon::Start({"--config", good});
  ASSERT_TRUE(d.ok()) << d.status();
  auto stub = (*d)->NewStub();
  grpc::ClientContext ctx;
  v1::GetStatsResponse stats;
  ASSERT_TRUE(stub->GetStats(&ctx, {}, &stats).ok());
  EXPECT_EQ(stats.executors(1).workers(), 3u);
  // The shipped example parses as it is.
  auto example = Daemon::Start({"--config", std::string(JOBD_TEST_SOURCE_DIR) +
                                                "/deploy/jobd.example.toml"});
  ASSERT_TRUE(example.ok()) << example.status();
  auto r = testing::RunCommand({testing::JobdPath(), "--config", typo});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("thread-wrkers"));
  r = testing::RunCommand(
      {testing::JobdPath(), "--config", "/nonexistent.toml"});
  EXPECT_EQ(r.exit_code, 2);
  std::filesystem::remove_all(dir);
}

TEST(DaemonStartTest, RefusesBadConfigAndSecondInstance) {
  auto r = testing::RunCommand({testing::JobdPath(), "--thread-workers", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--thread-workers"));
  r = testing::RunCommand(
      {testing::JobdPath(), "--tcp", "0.0.0.0:0", "--unix-socket", "none"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("non-loopback"));
  // The metrics listener beyond loopback needs TLS and authentication too,
  // and says so by its own flag.
  r = testing::RunCommand({testing::JobdPath(), "--http-listen", "0.0.0.0:0",
                           "--unix-socket", "none"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--http-listen: refusing"));
  auto d = Daemon::Start();
  ASSERT_TRUE(d.ok());
  const std::string socket = (*d)->unix_address().substr(5);
  r = testing::RunCommand(
      {testing::JobdPath(), "--unix-socket", socket, "--tcp", "none"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("another process"));
}

}  // namespace
}  // namespace jobd
