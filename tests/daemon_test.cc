// Unit tests of the Daemon (server/daemon/daemon.h), the composition root,
// started in this process as a test would start it: a temp Unix socket and
// 127.0.0.1 port 0, driven through its sockets. Two daemons at once and
// one after another on the same paths; one journal per state directory;
// the Drain RPC asking the owner to
// stop; configuration errors told from start failures; Reload; a process
// pool whose fork server the daemon spawns itself.
#include "server/daemon/daemon.h"

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "server/config/config.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jobd-daemon-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A small daemon: no process pool, no journal unless asked.
  DaemonConfig Config(const std::string& name) {
    DaemonConfig c;
    c.unix_socket = dir_ + "/" + name + "/jobd.sock";
    c.tcp_address = "127.0.0.1:0";
    c.thread_workers = 2;
    c.process_pool.workers = 0;
    c.durability = Durability::kNone;
    c.state_dir = dir_ + "/" + name + "-state";
    c.shutdown_grace = absl::Milliseconds(200);
    return c;
  }

  static std::unique_ptr<v1::JobService::Stub> Stub(const std::string& addr) {
    return v1::JobService::NewStub(
        grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  }

  // GetStats over `addr`.
  static grpc::Status Stats(const std::string& addr,
                            v1::GetStatsResponse* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::GetStatsResponse stats;
    grpc::Status s = Stub(addr)->GetStats(&ctx, {}, &stats);
    if (out != nullptr) *out = stats;
    return s;
  }

  // Runs one `task` job over `addr`; its terminal event.
  static v1::JobEvent RunOne(const std::string& addr, const std::string& task,
                             v1::JobKind kind = v1::JOB_KIND_IO_BOUND) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto stream = Stub(addr)->Submit(&ctx);
    v1::SubmitRequest req;
    auto* item = req.add_items();
    item->set_client_tag(1);
    item->mutable_spec()->set_task(task);
    item->mutable_spec()->set_kind(kind);
    item->mutable_spec()->add_args()->set_number_value(7);
    stream->Write(req);
    stream->WritesDone();
    v1::JobEvent last;
    v1::SubmitResponse resp;
    while (stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) last = e;
    }
    stream->Finish();
    return last;
  }

  std::string dir_;
};

uint32_t ThreadWorkers(const v1::GetStatsResponse& stats) {
  for (const v1::ExecutorStats& e : stats.executors()) {
    if (e.executor() == v1::EXECUTOR_THREAD) return e.workers();
  }
  return 0;
}

TEST_F(DaemonTest, ListensOnATempSocketAndAPickedPortAndServes) {
  auto d = Daemon::Start(Config("a"));
  ASSERT_TRUE(d.ok()) << d.status();
  const Daemon& daemon = **d;
  ASSERT_EQ(daemon.listening().size(), 2u);
  EXPECT_EQ(daemon.listening()[0], "unix:" + dir_ + "/a/jobd.sock");
  EXPECT_EQ(daemon.unix_socket(), dir_ + "/a/jobd.sock");
  EXPECT_GT(daemon.tcp_port(), 0);
  EXPECT_EQ(daemon.listening()[1],
            "127.0.0.1:" + std::to_string(daemon.tcp_port()));
  for (const std::string& addr : daemon.listening()) {
    const v1::JobEvent e = RunOne(addr, "echo");
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << addr;
    EXPECT_EQ(e.result().value().number_value(), 7) << addr;
  }
  const DaemonStopped stopped = (*d)->Stop();
  EXPECT_FALSE(stopped.listener_dead);
  EXPECT_FALSE(stopped.tasks_left_running);
  // Its socket is gone, and nothing answers any more.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a/jobd.sock"));
  // A second Stop answers the same without doing it again.
  EXPECT_FALSE((*d)->Stop().listener_dead);
}

TEST_F(DaemonTest, TwoAtOnceAndAnotherAfterThemOnTheSamePaths) {
  DaemonConfig a = Config("a");
  a.durability = Durability::kBatched;  // Journals of their own.
  DaemonConfig b = Config("b");
  b.durability = Durability::kBatched;
  b.thread_workers = 3;
  auto first = Daemon::Start(a);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Daemon::Start(b);
  ASSERT_TRUE(second.ok()) << second.status();
  // Each serves on its own sockets with its own configuration.
  v1::GetStatsResponse sa, sb;
  ASSERT_TRUE(Stats((*first)->listening()[0], &sa).ok());
  ASSERT_TRUE(Stats((*second)->listening()[1], &sb).ok());
  EXPECT_EQ(ThreadWorkers(sa), 2u);
  EXPECT_EQ(ThreadWorkers(sb), 3u);
  EXPECT_EQ(RunOne((*first)->listening()[1], "echo").type(),
            v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(RunOne((*second)->listening()[0], "echo").type(),
            v1::EVENT_TYPE_SUCCEEDED);
  // Stopping one leaves the other serving.
  first->reset();
  ASSERT_TRUE(Stats((*second)->listening()[0]).ok());
  second->reset();
  // A daemon again on the first one's socket and state directory.
  auto again = Daemon::Start(a);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(RunOne((*again)->listening()[0], "echo").type(),
            v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(DaemonTest, TheDrainRpcAsksItsOwnerToStopIt) {
  std::atomic<int> asked = 0;
  auto d = Daemon::Start(Config("a"), {.on_stop_request = [&] { ++asked; }});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE((*d)->WaitStopRequested(absl::Now() + absl::Milliseconds(50)));
  for (int i = 0; i < 2; ++i) {  // Asked once, however often drained.
    grpc::ClientContext ctx;
    v1::DrainResponse resp;
    ASSERT_TRUE(Stub((*d)->listening()[0])->Drain(&ctx, {}, &resp).ok());
  }
  EXPECT_TRUE((*d)->WaitStopRequested(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(asked, 1);
  // It serves on until its owner stops it.
  EXPECT_EQ(RunOne((*d)->listening()[0], "echo").type(),
            v1::EVENT_TYPE_SUCCEEDED);
  (*d)->Stop();
  EXPECT_FALSE(Stats((*d)->listening()[1]).ok());
}

TEST_F(DaemonTest, ConfigurationErrorsAreInvalidArgumentStartFailuresAreNot) {
  DaemonConfig open = Config("a");
  open.tcp_address = "0.0.0.0:0";  // Beyond loopback, no TLS, no tokens.
  EXPECT_TRUE(absl::IsInvalidArgument(Daemon::CheckConfig(open)));
  auto refused = Daemon::Start(open);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_THAT(refused.status().message(),
              HasSubstr("--tcp: refusing to listen on non-loopback"));
  // Nothing was made for it.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a"));

  DaemonConfig no_group = Config("g");
  no_group.unix_socket_group = "no-such-group-here";
  auto ungrouped = Daemon::Start(no_group);
  ASSERT_FALSE(ungrouped.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ungrouped.status()));
  EXPECT_THAT(ungrouped.status().message(), HasSubstr("--unix-socket-group"));

  auto first = Daemon::Start(Config("b"));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Daemon::Start(Config("b"));  // The same socket.
  ASSERT_FALSE(second.ok());
  EXPECT_FALSE(absl::IsInvalidArgument(second.status()));
  EXPECT_THAT(second.status().message(), HasSubstr("another process"));
  // The first one is unharmed.
  EXPECT_TRUE(Stats((*first)->listening()[0]).ok());
}

TEST_F(DaemonTest, ASecondDaemonOnTheSameStateDirectoryIsRefused) {
  DaemonConfig a = Config("a");
  a.durability = Durability::kBatched;
  DaemonConfig b = Config("b");  // Its own socket, the first one's journal.
  b.durability = Durability::kBatched;
  b.state_dir = a.state_dir;
  auto first = Daemon::Start(a);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Daemon::Start(b);
  ASSERT_FALSE(second.ok());
  // A start failure (jobd exits 1), not a configuration error (2).
  EXPECT_FALSE(absl::IsInvalidArgument(second.status())) << second.status();
  EXPECT_THAT(
      second.status().message(),
      HasSubstr("another jobd uses the state directory " + a.state_dir));
  // It left nothing behind: its socket path is free, the first one serves.
  EXPECT_FALSE(std::filesystem::exists(b.unix_socket));
  EXPECT_TRUE(Stats((*first)->listening()[0]).ok());
  // Once the first is gone, the directory is free again.
  first->reset();
  auto third = Daemon::Start(b);
  ASSERT_TRUE(third.ok()) << third.status();
}

TEST_F(DaemonTest, ReloadAppliesWhatCanChangeLiveAndABadReadChangesNothing) {
  auto d = Daemon::Start(Config("a"));
  ASSERT_TRUE(d.ok()) << d.status();
  DaemonConfig fresh = (*d)->config();
  fresh.thread_workers = 4;
  fresh.process_pool.workers = 1;  // Needs a restart.
  const ReloadResult r = (*d)->Reload(fresh);
  EXPECT_THAT(r.applied, ::testing::Contains(HasSubstr("--thread-workers")));
  EXPECT_THAT(r.needs_restart,
              ::testing::Contains(HasSubstr("--process-workers")));
  EXPECT_EQ((*d)->config().thread_workers, 4);
  EXPECT_EQ((*d)->config().process_pool.workers, 0);
  v1::GetStatsResponse stats;
  ASSERT_TRUE(Stats((*d)->listening()[0], &stats).ok());
  EXPECT_EQ(ThreadWorkers(stats), 4u);

  const ReloadResult bad =
      (*d)->Reload(absl::InvalidArgumentError("--thread-workers: bad"));
  EXPECT_TRUE(bad.applied.empty() && bad.needs_restart.empty());
  EXPECT_EQ((*d)->config().thread_workers, 4);
}

TEST_F(DaemonTest, WithoutAForkServerItSpawnsOneFromTheJobdBinary) {
  DaemonConfig c = Config("a");
  c.process_pool.workers = 1;
  c.process_pool.spare_workers = 0;
  c.process_pool.self_exe = JOBD_TEST_JOBD_PATH;
  auto d = Daemon::Start(c);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::JobEvent e =
      RunOne((*d)->listening()[0], "primes.count", v1::JOB_KIND_CPU_BOUND);
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.executor(), v1::EXECUTOR_PROCESS);
  EXPECT_EQ(e.result().value().number_value(), 3);  // 2, 3, 5.
  v1::GetStatsResponse stats;
  ASSERT_TRUE(Stats((*d)->listening()[0], &stats).ok());
  const pid_t server = stats.process_pool().fork_server_pid();
  ASSERT_GT(server, 0);
  d->reset();
  // The fork server ended with the daemon (and was reaped by it).
  EXPECT_NE(kill(server, 0), 0);
}

}  // namespace
}  // namespace jobd
