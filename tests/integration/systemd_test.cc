// Integration tests of jobd as a service: the sd_notify protocol on a
// NOTIFY_SOCKET of the test's own (READY, STATUS, WATCHDOG, STOPPING), the
// standard gRPC health service (NOT_SERVING while draining) and server
// reflection, SIGHUP reloading what can change live, journald-style log
// lines, the unit file (systemd-analyze verify) and `cmake --install`.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;
using testing::StreamResult;
using testing::SubmitAll;
using testing::TempDir;
using testing::WaitFor;

// A NOTIFY_SOCKET: a datagram socket the test reads jobd's messages from.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{.tv_sec = 0, .tv_usec = 100000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~NotifySocket() { close(fd_); }
  bool bound() const { return bound_; }
  // Reads messages until one contains `what` (true) or `limit` passes.
  bool Expect(const std::string& what, absl::Duration limit) {
    const absl::Time end = absl::Now() + limit;
    while (absl::Now() < end) {
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;  // Timed out: look at the clock again.
      const std::string message(buf, n);
      messages_ += message + "\n---\n";
      if (absl::StrContains(message, what)) return true;
    }
    return false;
  }
  const std::string& seen() const { return messages_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::string messages_;
};

TEST(SystemdTest, NotifiesReadyStatusWatchdogAndStopping) {
  TempDir dir("jobd-systemd-test");
  NotifySocket notify(dir.path() + "/notify");
  ASSERT_TRUE(notify.bound());
  auto daemon = Daemon::Start(
      {}, {"NOTIFY_SOCKET=" + dir.path() + "/notify", "WATCHDOG_USEC=400000"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_TRUE(notify.Expect("READY=1", absl::Seconds(5))) << notify.seen();
  EXPECT_THAT(notify.seen(), HasSubstr("STATUS=0 live"));
  EXPECT_THAT(notify.seen(),
              HasSubstr(absl::StrCat("MAINPID=", (*daemon)->pid())));
  // Pinged at half the watchdog interval.
  EXPECT_TRUE(notify.Expect("WATCHDOG=1", absl::Seconds(2))) << notify.seen();
  EXPECT_TRUE(notify.Expect("WATCHDOG=1", absl::Seconds(2))) << notify.seen();
  kill((*daemon)->pid(), SIGTERM);
  EXPECT_TRUE(notify.Expect("STOPPING=1", absl::Seconds(5))) << notify.seen();
}

// A unary call of grpc.health.v1.Health/Check for `service`, by hand (no
// health .proto ships with Debian's gRPC): the request is field 1 (string),
// the answer field 1 (enum: 1 SERVING, 2 NOT_SERVING). -1 on error.
int HealthStatus(const std::string& address, const std::string& service) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  std::string request;
  if (!service.empty()) {
    request = absl::StrCat(
        "\x0a", std::string(1, static_cast<char>(service.size())), service);
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(5));
  grpc::Status status;
  bool done = false;
  absl::Mutex mu;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in,
                 &out, [&](grpc::Status s) {
                   absl::MutexLock lock(&mu);
                   status = s;
                   done = true;
                 });
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&done));
  }
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!out.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.empty()) return 0;  // UNKNOWN (the default) is not encoded.
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1;
}

TEST(SystemdTest, HealthIsServingThenNotServingWhileDraining) {
  // The drain lasts the grace (the job outlives it and is cancelled then):
  // a window of 5 s to see NOT_SERVING, however slow the machine.
  auto daemon = Daemon::Start({"--shutdown-grace", "5s"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string address = (*daemon)->unix_address();
  EXPECT_EQ(HealthStatus(address, ""), 1);
  EXPECT_EQ(HealthStatus(address, "jobd.v1.JobService"), 1);
  // A running job keeps the drain going (a queued one does not: it stays
  // in the journal for the next start; with the journal, a job is queued
  // until its claim is durable).
  auto stub = (*daemon)->NewStub();
  std::thread job([&] { SubmitAll(*stub, {Spec("sleep", {60000})}); });
  ASSERT_TRUE(WaitFor([&] {
    grpc::ClientContext ctx;
    v1::GetStatsResponse s;
    if (!stub->GetStats(&ctx, {}, &s).ok()) return false;
    uint32_t busy = 0;
    for (const v1::ExecutorStats& e : s.executors()) busy += e.busy();
    return s.live() == 1 && busy == 1;
  }));
  kill((*daemon)->pid(), SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return HealthStatus(address, "") == 2; },
                      absl::Seconds(3)));
  EXPECT_EQ(HealthStatus(address, "jobd.v1.JobService"), 2);
  job.join();
}

TEST(SystemdTest, ReflectionListsTheJobService) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->unix_address(),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(5));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  // ServerReflectionRequest { list_services (7): "" }.
  grpc::Slice request(std::string("\x3a\x00", 2));
  grpc::ByteBuffer out(&request, 1), in;
  call->Write(out, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->Read(&in, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  EXPECT_THAT(bytes, HasSubstr("jobd.v1.JobService"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  ctx.TryCancel();
  call->Finish(nullptr, reinterpret_cast<void*>(4));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST(SystemdTest, SighupAppliesWhatCanChangeLive) {
  TempDir dir("jobd-systemd-test");
  const std::string config = dir.path() + "/jobd.toml";
  std::ofstream(config) << "thread-workers = 2\nmax-queued = 100\n";
  auto daemon = Daemon::Start({"--config", config, "--log-level", "info"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  auto stats = [&] {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetStatsResponse s;
    EXPECT_TRUE(stub->GetStats(&ctx, {}, &s).ok());
    return s;
  };
  v1::JobSpec exec;
  exec.set_task("exec");
  exec.set_kind(v1::JOB_KIND_IO_BOUND);
  (*exec.mutable_kwargs()->mutable_fields())["argv"]
      .mutable_list_value()
      ->add_values()
      ->set_string_value("/bin/echo");
  EXPECT_EQ(SubmitAll(*stub, {exec}).Terminal()[0].error().code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // exec disabled.

  std::ofstream(config) << "thread-workers = 4\nmax-queued = 100\n"
                        << "max-window = 5000\nexec-allow = \"/bin/echo\"\n"
                        << "process-workers = 1\n";
  kill((*daemon)->pid(), SIGHUP);
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains((*daemon)->Log(), "configuration reloaded");
  }));
  const std::string log = (*daemon)->Log();
  EXPECT_THAT(log, HasSubstr("--thread-workers: 2 -> 4"));
  EXPECT_THAT(log, HasSubstr("--max-window: 65536 -> 5000"));
  EXPECT_THAT(log, HasSubstr("need a restart: --process-workers"));
  const v1::GetStatsResponse s = stats();
  EXPECT_EQ(s.executors(1).executor(), v1::EXECUTOR_THREAD);
  EXPECT_EQ(s.executors(1).workers(), 4u);
  EXPECT_EQ(s.limits().max_window(), 5000u);
  const v1::JobEvent e = SubmitAll(*stub, {exec}).Terminal()[0];
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();

  // A file that does not parse changes nothing.
  std::ofstream(config) << "thread-workers = lots\n";
  kill((*daemon)->pid(), SIGHUP);
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains((*daemon)->Log(), "does not parse"); }));
  EXPECT_EQ(stats().executors(1).workers(), 4u);
}

TEST(SystemdTest, LogsInJournaldFormatWhenStderrIsTheJournal) {
  TempDir dir("jobd-systemd-test");
  const std::string log = dir.path() + "/stderr";
  std::ofstream(log).close();
  struct stat st {};
  ASSERT_EQ(stat(log.c_str(), &st), 0);
  auto child = testing::SpawnReady(
      {testing::JobdPath(), "--unix-socket", dir.path() + "/s.sock", "--tcp",
       "none", "--state-dir", dir.path() + "/state"},
      "try:", log, absl::Seconds(20),
      {absl::StrCat("JOURNAL_STREAM=", st.st_dev, ":", st.st_ino)});
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE(
      testing::StopProcess(child->pid, SIGTERM, absl::Seconds(10)).ok());
  std::ifstream in(log);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    EXPECT_TRUE(line.size() > 3 && line[0] == '<' && line[2] == '>') << line;
    EXPECT_FALSE(absl::StrContains(line, "[jobd]")) << line;
  }
  EXPECT_GT(lines, 1);
}

TEST(SystemdTest, TheUnitFileVerifies) {
  if (access("/usr/bin/systemd-analyze", X_OK) != 0) {
    GTEST_SKIP() << "systemd-analyze is not installed";
  }
  TempDir dir("jobd-systemd-test");
  // Verify checks that ExecStart exists: point it at the built binary.
  std::ifstream in(std::string(JOBD_TEST_SOURCE_DIR) + "/deploy/jobd.service");
  std::stringstream unit;
  unit << in.rdbuf();
  std::string text = unit.str();
  const std::string from = "/usr/bin/jobd";
  text.replace(text.find(from), from.size(), testing::JobdPath());
  const std::string path = dir.path() + "/jobd.service";
  std::ofstream(path) << text;
  const testing::CommandResult r = testing::RunCommand(
      {"/usr/bin/systemd-analyze", "verify", "--man=no", path});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
}

TEST(SystemdTest, CmakeInstallPutsFilesWhereDebianExpectsThem) {
  TempDir dir("jobd-systemd-test");
  const testing::CommandResult r =
      testing::RunCommand({"/usr/bin/cmake", "--install", JOBD_TEST_BINARY_DIR},
                          "", absl::Seconds(60), {"DESTDIR=" + dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* file :
       {"/usr/bin/jobd", "/usr/bin/jobctl",
        "/usr/lib/systemd/system/jobd.service", "/etc/jobd/jobd.toml",
        "/usr/share/doc/jobd/README.md"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.path() + file)) << file;
  }
}

}  // namespace
}  // namespace jobd
