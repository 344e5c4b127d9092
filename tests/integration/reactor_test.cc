// Integration tests of the coroutine reactor through the real daemon: mass
// concurrency of async sleeps, cancel and timeout of sleeping, and http.get
// against a local server (slow, 404, redirect, refused, oversized, address
// policy). exec's tests are in exec_test.cc.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/http_test_server.h"
#include "tests/integration/reactor_fixture.h"

namespace jobd {
namespace {

using testing::Bool;
using testing::Deadline;
using testing::Field;
using ::testing::HasSubstr;
using testing::HttpTestServer;
using testing::KwSpec;
using testing::Num;
using testing::ReactorTest;
using testing::Spec;
using testing::Str;
using testing::StreamResult;
using testing::SubmitAll;
using testing::WaitFor;

v1::JobSpec HttpGet(const std::string& url,
                    std::map<std::string, google::protobuf::Value> more = {}) {
  more["url"] = Str(url);
  return KwSpec("http.get", std::move(more));
}

// ---- sleep -------------------------------------------------------------

TEST_F(ReactorTest, TenThousandOneSecondSleepsEndTogetherOnFewThreads) {
  StartDaemon({"--max-jobs-per-request", "10000", "--max-window", "10000",
               "--log-level", "info"});
  std::vector<v1::JobSpec> specs(10000, Spec("sleep", {1000}));
  v1::SubmitOptions options;
  options.set_window(10000);
  options.set_terminal_only(true);
  int max_threads = 0;
  std::atomic<bool> done{false};
  std::thread sampler([&] {  // The daemon's threads while the jobs wait.
    for (int i = 0; i < 1000 && !done; ++i) {
      std::ifstream status("/proc/" + std::to_string(daemon_->pid()) +
                           "/status");
      for (std::string line; std::getline(status, line);) {
        int n = 0;
        if (line.starts_with("Threads:") &&
            absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &n)) {
          max_threads = std::max(max_threads, n);
        }
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  const absl::Time start = absl::Now();
  StreamResult r = SubmitAll(*stub_, specs, options);
  const absl::Duration wall = absl::Now() - start;
  done = true;
  sampler.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const std::vector<v1::JobEvent> ends = r.Terminal();
  ASSERT_EQ(ends.size(), 10000u);
  for (const v1::JobEvent& e : ends) {
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
    ASSERT_EQ(e.executor(), v1::EXECUTOR_REACTOR);
  }
  // gRPC's threads, the pools' and one reactor loop: no thread per job.
  EXPECT_LT(max_threads, 64);
  // They overlapped: fewer than 64 threads sleeping one job each would take
  // over 156 s. (A loose bound for a loaded or sanitized build; the speed
  // itself is measured in bench/reactor_bench.)
  EXPECT_LT(wall, absl::Seconds(30)) << "10,000 concurrent 1 s sleeps";
}

TEST_F(ReactorTest, TimeoutAndCancelInterruptASleepAtOnce) {
  StartDaemon();
  v1::JobSpec timed = Spec("sleep", {60000});
  timed.mutable_timeout()->set_nanos(200'000'000);
  const absl::Time start = absl::Now();
  const v1::JobEvent t = RunOne(timed);
  EXPECT_EQ(t.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(t.error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_EQ(t.executor(), v1::EXECUTOR_REACTOR);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  Running sleeping(*stub_, Spec("sleep", {60000}));
  const std::string id = sleeping.Started();
  ASSERT_FALSE(id.empty());
  CancelJob(id);
  const v1::JobEvent c = sleeping.End();
  EXPECT_EQ(c.type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_EQ(c.error().reason(), v1::ERROR_REASON_CANCELLED);
  // The coroutine really ended: its slot is free again.
  EXPECT_TRUE(WaitFor([&] { return ReactorBusy() == 0; }));
}

TEST_F(ReactorTest, WithoutAReactorSleepRunsOnThreadsAndAsyncOnlyIsRejected) {
  StartDaemon({"--reactor-threads", "0"});
  const v1::JobEvent s = RunOne(Spec("sleep", {10}));
  EXPECT_EQ(s.type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(s.executor(), v1::EXECUTOR_THREAD);
  const v1::JobEvent h = RunOne(HttpGet("http://127.0.0.1:1/"));
  EXPECT_EQ(h.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_EQ(h.error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(h.error().message(), HasSubstr("--reactor-threads 0"));
}

// ---- http.get ----------------------------------------------------------

class HttpGetTest : public ReactorTest {
 protected:
  void SetUp() override {
    auto server = HttpTestServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    StartDaemon();
  }
  std::unique_ptr<HttpTestServer> server_;
};

TEST_F(HttpGetTest, FetchesStatusHeadersAndBody) {
  const v1::JobEvent e = RunOne(HttpGet(server_->Url("/ok")));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.executor(), v1::EXECUTOR_REACTOR);
  EXPECT_EQ(Field(e, "status").number_value(), 200);
  EXPECT_EQ(Field(e, "body_bytes").number_value(), 5);
  EXPECT_EQ(e.result().payload(), "hello");
  EXPECT_EQ(Field(e, "headers")
                .struct_value()
                .fields()
                .at("content-length")
                .string_value(),
            "5");
  // Without the body.
  const v1::JobEvent nobody =
      RunOne(HttpGet(server_->Url("/ok"), {{"body", Bool(false)}}));
  EXPECT_EQ(nobody.result().payload(), "");
  EXPECT_EQ(Field(nobody, "body_bytes").number_value(), 5);
}

// A header that is not UTF-8 comes percent-encoded (name and value, named
// in escaped_headers); the body is bytes (the payload). Every reader of the
// job parses it: the submitter's stream, GetJob, ListJobs, a watch replay.
TEST_F(HttpGetTest, HeadersThatAreNotUtf8ArePercentEncoded) {
  const v1::JobEvent e = RunOne(HttpGet(server_->Url("/bad-utf8")));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  const auto& headers = Field(e, "headers").struct_value().fields();
  EXPECT_EQ(headers.at("x-bad").string_value(), "%FF%FE");
  EXPECT_EQ(headers.at("x-%E9t%E9").string_value(), "caf%E9");
  EXPECT_EQ(headers.at("x-good").string_value(), "caf\xC3\xA9 100%");
  std::vector<std::string> escaped;
  for (const auto& v : Field(e, "escaped_headers").list_value().values()) {
    escaped.push_back(v.string_value());
  }
  EXPECT_THAT(escaped, ::testing::UnorderedElementsAre("x-bad", "x-%E9t%E9"));
  EXPECT_EQ(e.result().payload(), "\xff\xfe body");

  grpc::ClientContext get_ctx;
  Deadline(get_ctx);
  v1::GetJobRequest get;
  get.set_job_id(e.job_id());
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&get_ctx, get, &job).ok());
  EXPECT_EQ(job.result().payload(), "\xff\xfe body");
  grpc::ClientContext list_ctx;
  Deadline(list_ctx);
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->ListJobs(&list_ctx, {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 1);
  grpc::ClientContext watch_ctx;
  Deadline(watch_ctx);
  v1::WatchJobsRequest watch;
  watch.add_job_ids(e.job_id());
  watch.set_after_sequence(1);
  auto reader = stub_->WatchJobs(&watch_ctx, watch);
  v1::WatchJobsResponse resp;
  bool ended = false;
  while (reader->Read(&resp)) {
    for (const v1::JobEvent& w : resp.events()) {
      ended |= w.type() == v1::EVENT_TYPE_SUCCEEDED;
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(ended);
}

TEST_F(HttpGetTest, FollowsRedirects) {
  const v1::JobEvent e = RunOne(HttpGet(server_->Url("/redirect")));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(Field(e, "status").number_value(), 200);
  EXPECT_EQ(Field(e, "url").string_value(), server_->Url("/ok"));
  const v1::JobEvent raw = RunOne(
      HttpGet(server_->Url("/redirect"), {{"follow_redirects", Bool(false)}}));
  EXPECT_EQ(Field(raw, "status").number_value(), 302);
}

TEST_F(HttpGetTest, NotFoundIsAResultUnlessAskedToFail) {
  const v1::JobEvent e = RunOne(HttpGet(server_->Url("/missing")));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(Field(e, "status").number_value(), 404);
  const v1::JobEvent f = RunOne(HttpGet(
      server_->Url("/missing"), {{"fail_on_error_status", Bool(true)}}));
  EXPECT_EQ(f.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(f.error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_THAT(f.error().message(), HasSubstr("HTTP 404"));
}

TEST_F(HttpGetTest, RefusedConnectionFailsTheJob) {
  // A port that was just free: nothing listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  const v1::JobEvent e = RunOne(
      HttpGet(absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/")));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TASK_ERROR);
  EXPECT_EQ(e.error().code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(e.error().message(), HasSubstr("connect"));
}

// Without --http-allow, http.get refuses loopback, unspecified, private
// and link-local addresses in every spelling, before sending a packet: the
// test server (on 127.0.0.1) sees no request.
TEST_F(HttpGetTest, RefusesAddressesThatAreNotPublicInEverySpelling) {
  StartDaemon({"--http-allow", ""});
  const std::string port = std::to_string(server_->port());
  for (const std::string& host :
       {std::string("127.0.0.1"), std::string("localhost"),
        std::string("LOCALHOST"), std::string("0x7f000001"),
        std::string("2130706433"), std::string("0177.0.0.1"),
        std::string("127.1"), std::string("[::ffff:127.0.0.1]"),
        std::string("[::1]"), std::string("user:pw@127.0.0.1"),
        std::string("0.0.0.0"), std::string("[::]")}) {
    const v1::JobEvent e =
        RunOne(HttpGet(absl::StrCat("http://", host, ":", port, "/ok")));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED) << host;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::PERMISSION_DENIED)
        << host << ": " << e.error().message();
    EXPECT_THAT(e.error().message(), HasSubstr("--http-allow")) << host;
  }
  for (const std::string& url :
       {std::string("http://169.254.169.254/latest/meta-data/"),
        std::string("http://10.0.0.1/"), std::string("http://192.168.0.1/"),
        std::string("http://[fe80::1]/"), std::string("http://[fd00::1]/")}) {
    const v1::JobEvent e = RunOne(HttpGet(url));
    EXPECT_EQ(e.error().code(), grpc::StatusCode::PERMISSION_DENIED) << url;
  }
  EXPECT_EQ(server_->requests(), 0);
}

// A refused address reads the same whatever the port and whether anything
// listens there: http.get is no port scanner.
TEST_F(HttpGetTest, ARefusalReadsTheSameForAnOpenAndAClosedPort) {
  StartDaemon({"--http-allow", ""});
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);  // Nothing listens there now.
  const v1::JobEvent open = RunOne(HttpGet(server_->Url("/ok")));
  const v1::JobEvent closed = RunOne(
      HttpGet(absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/ok")));
  EXPECT_EQ(open.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(open.error().code(), closed.error().code());
  EXPECT_EQ(open.error().reason(), closed.error().reason());
  EXPECT_EQ(open.error().message(), closed.error().message());
  EXPECT_EQ(server_->requests(), 0);
}

// An allowed host may not redirect to a refused address: every address is
// checked as it is connected.
TEST_F(HttpGetTest, ARedirectToARefusedAddressIsRefused) {
  StartDaemon({"--http-allow", "localhost"});
  const std::string port = std::to_string(server_->port());
  const v1::JobEvent allowed =
      RunOne(HttpGet(absl::StrCat("http://localhost:", port, "/ok")));
  ASSERT_EQ(allowed.type(), v1::EVENT_TYPE_SUCCEEDED)
      << allowed.error().message();
  const int before = server_->requests();
  const v1::JobEvent e = RunOne(
      HttpGet(absl::StrCat("http://localhost:", port,
                           "/redirect-to/http://127.0.0.1:", port, "/ok")));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().code(), grpc::StatusCode::PERMISSION_DENIED)
      << e.error().message();
  EXPECT_THAT(e.error().message(), HasSubstr("'127.0.0.1'"));
  EXPECT_EQ(server_->requests(), before + 1);  // The redirect only.
  // A network on the allowlist, whatever the spelling.
  StartDaemon({"--http-allow", "127.0.0.0/8"});
  const v1::JobEvent hex =
      RunOne(HttpGet(absl::StrCat("http://0x7f000001:", port, "/ok")));
  EXPECT_EQ(hex.type(), v1::EVENT_TYPE_SUCCEEDED) << hex.error().message();
}

TEST_F(HttpGetTest, OversizedBodyFailsTheJob) {
  const v1::JobEvent e = RunOne(
      HttpGet(server_->Url("/bytes/100000"), {{"max_bytes", Num(1000)}}));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(e.error().message(), HasSubstr("exceeds max_bytes (1000"));
  // Just under the limit is fine.
  const v1::JobEvent ok =
      RunOne(HttpGet(server_->Url("/bytes/1000"), {{"max_bytes", Num(1000)}}));
  EXPECT_EQ(ok.type(), v1::EVENT_TYPE_SUCCEEDED) << ok.error().message();
  EXPECT_EQ(ok.result().payload(), std::string(1000, 'x'));
}

TEST_F(HttpGetTest, SlowServerHitsTheRequestAndJobTimeouts) {
  const v1::JobEvent request_timeout =
      RunOne(HttpGet(server_->Url("/slow/30000"), {{"timeout_ms", Num(200)}}));
  EXPECT_EQ(request_timeout.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(request_timeout.error().code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(request_timeout.error().reason(), v1::ERROR_REASON_TASK_ERROR);

  v1::JobSpec timed = HttpGet(server_->Url("/slow/30000"));
  timed.mutable_timeout()->set_nanos(200'000'000);
  const v1::JobEvent job_timeout = RunOne(timed);
  EXPECT_EQ(job_timeout.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(job_timeout.error().reason(), v1::ERROR_REASON_TIMEOUT);
  // Both connections were dropped by jobd, not left waiting for 30 s.
  EXPECT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpGetTest, CancelAbortsTheTransfer) {
  Running fetch(*stub_, HttpGet(server_->Url("/slow/30000")));
  const std::string id = fetch.Started();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 1; }));
  CancelJob(id);
  EXPECT_EQ(fetch.End().type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
  EXPECT_TRUE(WaitFor([&] { return ReactorBusy() == 0; }));
}

TEST_F(HttpGetTest, RejectsOtherSchemesAndBadArguments) {
  for (const v1::JobSpec& spec :
       {HttpGet("file:///etc/passwd"), HttpGet("ftp://127.0.0.1/"),
        HttpGet(server_->Url("/ok"), {{"max_bytes", Num(1e9)}}),
        HttpGet(server_->Url("/ok"), {{"timeout_ms", Num(0)}})}) {
    const v1::JobEvent e = RunOne(spec);
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED) << spec.DebugString();
    EXPECT_EQ(e.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

}  // namespace
}  // namespace jobd
