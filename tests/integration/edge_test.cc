// Integration tests of jobd's edge against hostile or broken callers, on a
// real daemon: it keeps accepting after running out of file descriptors
// (and its health service and watchdog say when it cannot), exec backs off
// before descriptors run out, connections and streams are capped, idle and
// silent connections are closed, and requests that do not parse get
// INVALID_ARGUMENT with a reason.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
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
using testing::TempDir;
using testing::WaitFor;

// A channel of its own (its own connection, not one shared with other
// channels to the same address).
std::shared_ptr<grpc::Channel> FreshChannel(
    const std::string& target, std::shared_ptr<grpc::ChannelCredentials> creds =
                                   grpc::InsecureChannelCredentials()) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(target, creds, args);
}

// GetStats over `channel`, waiting at most `limit` for it to connect.
grpc::Status Stats(const std::shared_ptr<grpc::Channel>& channel,
                   absl::Duration limit) {
  auto stub = v1::JobService::NewStub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx, limit);
  ctx.set_wait_for_ready(true);
  v1::GetStatsResponse response;
  return stub->GetStats(&ctx, v1::GetStatsRequest(), &response);
}

// True once a brand-new client on `target` is served, polling for at most
// `limit` from now.
bool NewClientServed(const std::string& target, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  for (int i = 0; i < 100 && absl::Now() < end; ++i) {
    if (Stats(FreshChannel(target), end - absl::Now()).ok()) return true;
  }
  return false;
}

// A unary call with raw request bytes; its status and answer bytes.
grpc::Status RawUnary(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& method, const std::string& request,
                      std::string* answer = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  absl::Mutex mu;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out,
                 [&](grpc::Status s) {
                   absl::MutexLock lock(&mu);
                   status = std::move(s);
                   done = true;
                 });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  if (answer != nullptr && status.ok()) {
    std::vector<grpc::Slice> slices;
    (void)out.Dump(&slices);
    for (const grpc::Slice& s : slices) {
      answer->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return status;
}

// grpc.health.v1.Health/Check of the whole server over `channel`: 1
// SERVING, 2 NOT_SERVING, -1 on error (by hand: Debian ships no health
// .proto; the answer is field 1, an enum).
int Health(const std::shared_ptr<grpc::Channel>& channel) {
  std::string answer;
  if (!RawUnary(channel, "/grpc.health.v1.Health/Check", "", &answer).ok() ||
      answer.size() != 2 || answer[0] != 0x08) {
    return -1;
  }
  return answer[1];
}

// Descriptors open in process `pid`.
size_t OpenFds(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(
           absl::StrCat("/proc/", pid, "/fd"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// Lowers `pid`'s RLIMIT_NOFILE (soft and hard) to its open descriptors
// plus `room`.
bool LimitFds(pid_t pid, size_t room) {
  const size_t open = OpenFds(pid);
  const rlimit limit{.rlim_cur = open + room, .rlim_max = open + room};
  return prlimit(pid, RLIMIT_NOFILE, &limit, nullptr) == 0;
}

// A connected socket to 127.0.0.1:`port` or the Unix socket `path` that
// sends nothing; -1 on failure.
int RawConnect(const std::string& address) {
  int fd = -1;
  if (address.starts_with("unix:")) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, address.c_str() + 5, sizeof(a.sun_path) - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) {
    return -1;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True if jobd closes `fd` (EOF or reset) within `limit`.
bool ClosedWithin(int fd, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  char buf[256];
  for (int i = 0; i < 10000; ++i) {
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()));
    if (left <= 0) return false;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, left) != 1) return false;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return true;  // HTTP/2 frames (settings, GOAWAY) until then.
  }
  return false;
}

// A Submit stream of one job; Started() returns once it runs.
class OneJob {
 public:
  OneJob(const std::shared_ptr<grpc::Channel>& channel, v1::JobSpec spec)
      : stub_(v1::JobService::NewStub(channel)) {
    Deadline(ctx_, absl::Seconds(60));
    stream_ = stub_->Submit(&ctx_);
    stream_->Write(testing::SubmitRequestOf({spec}));
    stream_->WritesDone();
  }
  // Reads events until one of `type`; false if the stream ended first.
  bool Until(v1::EventType type) {
    v1::SubmitResponse response;
    while (stream_->Read(&response)) {
      for (const v1::JobEvent& e : response.events()) {
        last_ = e;
        if (e.type() == type) return true;
      }
    }
    return false;
  }
  const v1::JobEvent& last() const { return last_; }
  grpc::Status Finish() { return stream_->Finish(); }

 private:
  std::unique_ptr<v1::JobService::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
      stream_;
  v1::JobEvent last_;
};

// A NOTIFY_SOCKET that keeps what jobd sends (systemd_test.cc has the full
// protocol's tests).
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() { close(fd_); }
  bool bound() const { return bound_; }
  // The messages received since the last call.
  std::vector<std::string> Drain() {
    std::vector<std::string> out;
    char buf[4096];
    for (ssize_t n; (n = recv(fd_, buf, sizeof(buf), 0)) > 0;) {
      out.emplace_back(buf, n);
    }
    return out;
  }

 private:
  int fd_ = -1;
  bool bound_ = false;
};

bool AnyContains(const std::vector<std::string>& messages,
                 const std::string& what) {
  for (const std::string& m : messages) {
    if (absl::StrContains(m, what)) return true;
  }
  return false;
}

// Sanitizer builds cannot run jobd out of descriptors: UBSan's vptr check
// probes memory through a pipe (sanitizer_common IsAccessibleMemoryRange),
// which fails then and reports a valid object as having an invalid vptr.
#if defined(__SANITIZE_ADDRESS__)
#define SKIP_WHEN_SANITIZED()                                              \
  GTEST_SKIP() << "UBSan needs free descriptors for its vptr checks; the " \
                  "normal build runs this"
#else
#define SKIP_WHEN_SANITIZED()
#endif

TEST(FdLimitTest, TheSoftLimitIsRaisedToTheHardOneAtStart) {
  rlimit mine{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &mine), 0);
  if (mine.rlim_max <= 512) GTEST_SKIP() << "hard limit too low to tell";
  // jobd starts with a soft limit of 256 (restored here right after).
  rlimit low = mine;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  auto daemon = Daemon::Start();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &mine), 0);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  rlimit its{};
  ASSERT_EQ(prlimit((*daemon)->pid(), RLIMIT_NOFILE, nullptr, &its), 0);
  EXPECT_EQ(its.rlim_cur, mine.rlim_max);
  EXPECT_THAT((*daemon)->Log(), HasSubstr("soft limit raised from 256"));
}

// jobd runs out of descriptors (a task holds them all) and clients knock
// meanwhile (gRPC's own accept loop stops for good there); once the
// descriptors are free, new clients are served again on both listeners
// within 2 s. Meanwhile the health service said NOT_SERVING.
TEST(FdLimitTest, NewClientsAreServedAgainOnceDescriptorsAreFree) {
  SKIP_WHEN_SANITIZED();
  auto daemon = Daemon::Start({"--durability", "none"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string tcp = (*daemon)->tcp_address();
  const std::string uds = (*daemon)->unix_address();
  auto held = FreshChannel(uds);  // Connected before the shortage.
  ASSERT_TRUE(Stats(held, absl::Seconds(5)).ok());
  EXPECT_EQ(Health(held), 1);
  ASSERT_TRUE(LimitFds((*daemon)->pid(), 100));

  v1::JobSpec hog = Spec("hold_fds", {3000});
  hog.set_executor(v1::EXECUTOR_THREAD);
  OneJob job(held, hog);
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_STARTED)) << job.last().DebugString();
  std::vector<int> seen;
  EXPECT_TRUE(WaitFor(
      [&] {
        seen.push_back(Health(held));
        return seen.back() == 2;
      },
      absl::Seconds(2)))
      << ::testing::PrintToString(seen);
  // While jobd has no descriptor left, new clients are not served.
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(Stats(FreshChannel(tcp), absl::Milliseconds(200)).ok());
    EXPECT_FALSE(Stats(FreshChannel(uds), absl::Milliseconds(200)).ok());
  }
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_SUCCEEDED)) << job.last().DebugString();
  EXPECT_TRUE(job.Finish().ok());
  const absl::Time freed = absl::Now();
  EXPECT_TRUE(NewClientServed(tcp, absl::Seconds(2))) << (*daemon)->Log();
  EXPECT_TRUE(NewClientServed(uds, absl::Seconds(2))) << (*daemon)->Log();
  EXPECT_LT(absl::Now() - freed, absl::Seconds(2));
  EXPECT_TRUE(WaitFor([&] { return Health(held) == 1; }, absl::Seconds(2)));
  // Turned away at accept4 (EMFILE) or just after (fewer than 16 free).
  EXPECT_THAT((*daemon)->Log(),
              ::testing::AnyOf(HasSubstr("Too many open files"),
                               HasSubstr("short of file descriptors")));
  EXPECT_THAT((*daemon)->Log(), HasSubstr("accepting connections again"));
}

// Short of descriptors (fewer free than jobd keeps for itself), jobd takes
// no connection: the watchdog gets no pings, STATUS= and the health
// service say why, until descriptors are free again.
TEST(FdLimitTest, TheWatchdogAndHealthFailWhileJobdCannotAccept) {
  TempDir dir("jobd-edge-test");
  NotifySocket notify(dir.path() + "/notify");
  ASSERT_TRUE(notify.bound());
  auto daemon = Daemon::Start(
      {"--durability", "none"},
      {"NOTIFY_SOCKET=" + dir.path() + "/notify", "WATCHDOG_USEC=400000"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto held = FreshChannel((*daemon)->unix_address());
  ASSERT_TRUE(Stats(held, absl::Seconds(5)).ok());
  ASSERT_TRUE(WaitFor([&] { return AnyContains(notify.Drain(), "WATCHDOG=1"); },
                      absl::Seconds(2)));
  ASSERT_TRUE(LimitFds((*daemon)->pid(), 100));
  // Leaves about 10 free: enough to notify systemd, too few to accept.
  v1::JobSpec hog = Spec("hold_fds", {2000, 90});
  hog.set_executor(v1::EXECUTOR_THREAD);
  OneJob job(held, hog);
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_STARTED)) << job.last().DebugString();
  EXPECT_TRUE(WaitFor([&] { return Health(held) == 2; }, absl::Seconds(2)));
  ASSERT_TRUE(WaitFor(
      [&] {
        return AnyContains(notify.Drain(), "STATUS=not accepting connections");
      },
      absl::Seconds(2)))
      << (*daemon)->Log();
  // No ping for a watchdog period (400 ms) and more.
  const absl::Time quiet_until = absl::Now() + absl::Milliseconds(600);
  bool pinged = false;
  while (absl::Now() < quiet_until) {
    pinged |= AnyContains(notify.Drain(), "WATCHDOG=1");
    absl::SleepFor(absl::Milliseconds(50));  // Collecting datagrams.
  }
  EXPECT_FALSE(pinged);
  EXPECT_FALSE(
      Stats(FreshChannel((*daemon)->tcp_address()), absl::Milliseconds(300))
          .ok());
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_SUCCEEDED)) << job.last().DebugString();
  EXPECT_TRUE(job.Finish().ok());
  EXPECT_TRUE(WaitFor([&] { return AnyContains(notify.Drain(), "WATCHDOG=1"); },
                      absl::Seconds(2)));
  EXPECT_TRUE(WaitFor([&] { return Health(held) == 1; }, absl::Seconds(2)));
  EXPECT_TRUE(NewClientServed((*daemon)->tcp_address(), absl::Seconds(2)));
}

// More exec jobs at once than jobd has descriptors for: they wait for
// descriptors instead of failing, and new clients are served meanwhile.
TEST(FdLimitTest, ExecBacksOffBeforeDescriptorsRunOut) {
  auto daemon = Daemon::Start({"--exec-allow", "/bin/sleep", "--durability",
                               "none", "--reactor-max-jobs", "1000"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  // Room for ~10 programs at once beside what jobd keeps free.
  ASSERT_TRUE(LimitFds((*daemon)->pid(), 140));
  v1::JobSpec sleep;
  sleep.set_task("exec");
  sleep.set_kind(v1::JOB_KIND_IO_BOUND);
  auto* argv = sleep.add_args()->mutable_list_value();
  argv->add_values()->set_string_value("/bin/sleep");
  argv->add_values()->set_string_value("0.2");
  auto stub = (*daemon)->NewStub();
  testing::StreamResult result;
  std::thread submit([&] {
    result = testing::SubmitAll(*stub, std::vector<v1::JobSpec>(60, sleep));
  });
  EXPECT_TRUE(NewClientServed((*daemon)->tcp_address(), absl::Seconds(5)));
  submit.join();
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  const auto ends = result.Terminal();
  ASSERT_EQ(ends.size(), 60u);
  for (const v1::JobEvent& e : ends) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.DebugString();
  }
  EXPECT_TRUE(NewClientServed((*daemon)->unix_address(), absl::Seconds(2)));
}

// Per peer (a client address, a Unix socket user) and in total: the
// connections over the caps are closed; a closed one makes room again.
TEST(ConnectionLimitTest, ConnectionsAreCappedPerPeerAndInTotal) {
  auto daemon = Daemon::Start(
      {"--max-connections", "4", "--max-connections-per-peer", "3"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string tcp = (*daemon)->tcp_address();
  const std::string uds = (*daemon)->unix_address();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(RawConnect(tcp));
  for (int fd : held) ASSERT_GE(fd, 0);
  // A fourth from 127.0.0.1 is over its peer's cap...
  EXPECT_FALSE(Stats(FreshChannel(tcp), absl::Milliseconds(500)).ok());
  // ...the Unix socket's user is another peer: the fourth connection.
  auto fourth = FreshChannel(uds);
  EXPECT_TRUE(Stats(fourth, absl::Seconds(5)).ok());
  // The fifth is over the total.
  EXPECT_FALSE(Stats(FreshChannel(uds), absl::Milliseconds(500)).ok());
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max-connections-per-peer 3"));
  // One closes: room for one.
  close(held.back());
  held.pop_back();
  EXPECT_TRUE(NewClientServed(tcp, absl::Seconds(2)));
  for (int fd : held) close(fd);
}

TEST(ConnectionLimitTest, StreamsAreCappedInTotalForEveryCaller) {
  auto daemon = Daemon::Start({"--max-streams", "2"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>>>
      watches;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    Deadline(*contexts.back(), absl::Seconds(30));
    watches.push_back(
        stub->WatchJobs(contexts.back().get(), v1::WatchJobsRequest()));
    v1::WatchJobsResponse header;
    ASSERT_TRUE(watches.back()->Read(&header));  // Open.
  }
  // The caller is the (anonymous) administrator: only the total applies.
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  auto third = stub->WatchJobs(&ctx, v1::WatchJobsRequest());
  v1::WatchJobsResponse response;
  EXPECT_FALSE(third->Read(&response));
  const grpc::Status s = third->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("max-streams"));
  for (size_t i = 0; i < watches.size(); ++i) {
    contexts[i]->TryCancel();
    (void)watches[i]->Finish();
  }
  // Closed streams make room.
  EXPECT_TRUE(WaitFor([&] {
    grpc::ClientContext again;
    Deadline(again, absl::Seconds(5));
    auto w = stub->WatchJobs(&again, v1::WatchJobsRequest());
    v1::WatchJobsResponse header;
    const bool open = w->Read(&header);
    again.TryCancel();
    (void)w->Finish();
    return open;
  }));
}

// Connections that never send anything, or send their HTTP/2 preface a
// byte at a time and then nothing, are closed after --max-connection-idle.
TEST(TimeoutTest, IdleSilentAndSlowConnectionsAreClosed) {
  auto daemon = Daemon::Start({"--max-connection-idle", "500ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  for (const std::string& address :
       {(*daemon)->tcp_address(), (*daemon)->unix_address()}) {
    const int silent = RawConnect(address);
    ASSERT_GE(silent, 0);
    EXPECT_TRUE(ClosedWithin(silent, absl::Seconds(5))) << address;
    close(silent);
    const int slow = RawConnect(address);
    ASSERT_GE(slow, 0);
    const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (char c : preface) {
      // MSG_NOSIGNAL: on a loaded machine jobd may close it before the
      // last byte, which must fail the write, not kill the test (SIGPIPE).
      (void)!send(slow, &c, 1, MSG_NOSIGNAL);
      absl::SleepFor(absl::Milliseconds(20));  // Trickling, on purpose.
    }
    EXPECT_TRUE(ClosedWithin(slow, absl::Seconds(5))) << address;
    close(slow);
  }
  // A gRPC client simply reconnects.
  auto channel = FreshChannel((*daemon)->tcp_address());
  ASSERT_TRUE(Stats(channel, absl::Seconds(5)).ok());
  absl::SleepFor(absl::Seconds(2));  // Past the idle limit, on purpose.
  const grpc::Status again = Stats(channel, absl::Seconds(5));
  EXPECT_TRUE(again.ok()) << again.error_code() << " " << again.error_message();
}

// The TLS listener is gRPC's: a connection that does not complete its
// handshake is closed after --handshake-timeout.
TEST(TimeoutTest, SilentTlsConnectionsAreClosedAfterTheHandshakeTimeout) {
  TempDir dir("jobd-edge-test");
  const testing::CommandResult cert = testing::RunCommand(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
       "/CN=127.0.0.1", "-keyout", dir.path() + "/key.pem", "-out",
       dir.path() + "/cert.pem"});
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  auto daemon =
      Daemon::Start({"--tls-cert", dir.path() + "/cert.pem", "--tls-key",
                     dir.path() + "/key.pem", "--handshake-timeout", "500ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const int silent = RawConnect((*daemon)->tcp_address());
  ASSERT_GE(silent, 0);
  EXPECT_TRUE(ClosedWithin(silent, absl::Seconds(5)));
  close(silent);
}

// A TLS listener that gRPC gave up on (its accept failed with EMFILE) is
// found by jobd's probes: jobd drains and exits non-zero to be restarted.
TEST(FdLimitTest, ADeadTlsListenerMakesJobdExitToBeRestarted) {
  SKIP_WHEN_SANITIZED();
  TempDir dir("jobd-edge-test");
  const testing::CommandResult cert = testing::RunCommand(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
       "/CN=127.0.0.1", "-keyout", dir.path() + "/key.pem", "-out",
       dir.path() + "/cert.pem"});
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  auto daemon =
      Daemon::Start({"--tls-cert", dir.path() + "/cert.pem", "--tls-key",
                     dir.path() + "/key.pem", "--durability", "none"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto held = FreshChannel((*daemon)->unix_address());
  ASSERT_TRUE(Stats(held, absl::Seconds(5)).ok());
  ASSERT_TRUE(LimitFds((*daemon)->pid(), 100));
  v1::JobSpec hog = Spec("hold_fds", {3000});
  hog.set_executor(v1::EXECUTOR_THREAD);
  OneJob job(held, hog);
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_STARTED)) << job.last().DebugString();
  ASSERT_TRUE(WaitFor([&] { return Health(held) == 2; }, absl::Seconds(2)));
  // gRPC's accept4 fails with EMFILE on a connection now.
  ASSERT_TRUE(WaitFor([&] {
    const int knock = RawConnect((*daemon)->tcp_address());
    if (knock >= 0) close(knock);
    return absl::StrContains((*daemon)->Log(), "Too many open files");
  }));
  ASSERT_TRUE(job.Until(v1::EVENT_TYPE_SUCCEEDED)) << job.last().DebugString();
  (void)job.Finish();
  // Found within a few probes; then the drain and the exit.
  absl::StatusOr<int> status = (*daemon)->Stop(0, absl::Seconds(30));
  ASSERT_TRUE(status.ok()) << (*daemon)->Log();
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_THAT((*daemon)->Log(), HasSubstr("no longer accepts connections"));
}

// Requests that do not parse (invalid UTF-8 in a string field, nesting
// deeper than protobuf's limit, garbage bytes) get INVALID_ARGUMENT naming
// the message and, where protobuf says, the field; never OK or a bare
// UNIMPLEMENTED.
TEST(ParseErrorTest, UnaryAndWatchRequestsThatDoNotParse) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = FreshChannel((*daemon)->unix_address());
  // GetJobRequest.job_id (field 1) = "\xff\xfe".
  grpc::Status s =
      RawUnary(channel, "/jobd.v1.JobService/GetJob", "\x0a\x02\xff\xfe");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("jobd.v1.GetJobRequest.job_id"));
  EXPECT_THAT(s.error_message(), HasSubstr("invalid UTF-8"));
  s = RawUnary(channel, "/jobd.v1.JobService/CancelJob", "\xff\xff\xff");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("CancelJob: the request is not a valid "
                        "jobd.v1.CancelJobRequest"));
  // WatchJobs (server streaming): job_ids[0] with invalid UTF-8.
  auto stub = v1::JobService::NewStub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::WatchJobsRequest request;
  request.add_job_ids("\xc3\x28");  // Sent as is by the C++ serializer.
  auto watch = stub->WatchJobs(&ctx, request);
  v1::WatchJobsResponse response;
  EXPECT_FALSE(watch->Read(&response));
  s = watch->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("jobd.v1.WatchJobsRequest.job_ids"));
  // The daemon serves on.
  EXPECT_TRUE(Stats(channel, absl::Seconds(5)).ok());
}

// A Submit message that does not parse ends the stream with
// INVALID_ARGUMENT after the events of the jobs accepted before it.
TEST(ParseErrorTest, ASubmitMessageThatDoesNotParseEndsTheStream) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  v1::JobSpec deep = Spec("echo");
  google::protobuf::Value* v = deep.add_args();
  for (int i = 0; i < 60; ++i) {  // 120 message levels: past protobuf's 100.
    v = v->mutable_list_value()->add_values();
  }
  v->set_number_value(1);
  v1::JobSpec bad_utf8 = Spec("echo");
  bad_utf8.set_task("ech\xff");
  for (int which = 0; which < 2; ++which) {
    const v1::JobSpec& bad = which == 0 ? deep : bad_utf8;
    auto stub = (*daemon)->NewStub();
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(30));
    auto stream = stub->Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf({Spec("echo", {7})})));
    v1::SubmitResponse response;
    bool ended = false;
    while (!ended && stream->Read(&response)) {
      for (const v1::JobEvent& e : response.events()) {
        ended |= e.type() == v1::EVENT_TYPE_SUCCEEDED;
      }
    }
    ASSERT_TRUE(ended);
    v1::SubmitRequest second;
    *second.add_items()->mutable_spec() = bad;
    (void)stream->Write(second);
    while (stream->Read(&response)) {
    }
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(),
                HasSubstr("Submit: message 2 of the stream is not a valid "
                          "jobd.v1.SubmitRequest"));
    if (which == 1) {
      EXPECT_THAT(s.error_message(), HasSubstr("jobd.v1.JobSpec.task"));
    }
  }
}

}  // namespace
}  // namespace jobd
