// Integration tests of the coroutine reactor through the real daemon: mass
// concurrency of async sleeps, cancel and timeout of sleeping, HTTP and exec
// jobs, http.get against a local server (slow, 404, redirect, refused,
// oversized), and exec's allowlist, environment, output limit and process
// group killing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/http_test_server.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::HttpTestServer;
using testing::PidsWithArg;
using testing::Spec;
using testing::StreamResult;
using testing::SubmitAll;
using testing::WaitFor;

// A spec of `task` with keyword arguments.
v1::JobSpec KwSpec(const std::string& task,
                   std::map<std::string, google::protobuf::Value> kwargs) {
  v1::JobSpec s;
  s.set_task(task);
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  for (auto& [k, v] : kwargs) (*s.mutable_kwargs()->mutable_fields())[k] = v;
  return s;
}

google::protobuf::Value Str(const std::string& s) {
  google::protobuf::Value v;
  v.set_string_value(s);
  return v;
}
google::protobuf::Value Num(double d) {
  google::protobuf::Value v;
  v.set_number_value(d);
  return v;
}
google::protobuf::Value Bool(bool b) {
  google::protobuf::Value v;
  v.set_bool_value(b);
  return v;
}
google::protobuf::Value List(const std::vector<std::string>& items) {
  google::protobuf::Value v;
  for (const std::string& i : items) {
    v.mutable_list_value()->add_values()->set_string_value(i);
  }
  return v;
}

v1::JobSpec HttpGet(const std::string& url,
                    std::map<std::string, google::protobuf::Value> more = {}) {
  more["url"] = Str(url);
  return KwSpec("http.get", std::move(more));
}

v1::JobSpec Exec(const std::vector<std::string>& argv,
                 std::map<std::string, google::protobuf::Value> more = {}) {
  more["argv"] = List(argv);
  return KwSpec("exec", std::move(more));
}

const google::protobuf::Value& Field(const v1::JobEvent& e,
                                     const std::string& name) {
  return e.result().value().struct_value().fields().at(name);
}

class ReactorTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args = {},
                   std::vector<std::string> env = {}) {
    auto d = Daemon::Start(std::move(args), std::move(env));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }

  v1::JobEvent RunOne(const v1::JobSpec& spec) {
    StreamResult r = SubmitAll(*stub_, {spec});
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    std::vector<v1::JobEvent> t = r.Terminal();
    EXPECT_EQ(t.size(), 1u);
    return t.empty() ? v1::JobEvent() : t.back();
  }

  v1::GetStatsResponse Stats() {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetStatsResponse stats;
    EXPECT_TRUE(stub_->GetStats(&ctx, {}, &stats).ok());
    return stats;
  }

  uint32_t ReactorBusy() {
    const v1::GetStatsResponse stats = Stats();
    for (const v1::ExecutorStats& e : stats.executors()) {
      if (e.executor() == v1::EXECUTOR_REACTOR) return e.busy();
    }
    return ~0u;
  }

  // A job submitted on its own stream; Started() returns once it runs.
  class Running {
   public:
    Running(v1::JobService::Stub& stub, const v1::JobSpec& spec) {
      Deadline(ctx_, absl::Seconds(60));
      stream_ = stub.Submit(&ctx_);
      v1::SubmitRequest req;
      auto* item = req.add_items();
      item->set_client_tag(1);
      *item->mutable_spec() = spec;
      stream_->Write(req);
    }
    ~Running() {
      ctx_.TryCancel();
      stream_->Finish();
    }
    // The job's id once it is RUNNING, or "" if it ended or was rejected.
    std::string Started() {
      v1::SubmitResponse resp;
      while (stream_->Read(&resp)) {
        for (const v1::JobEvent& e : resp.events()) {
          if (e.type() == v1::EVENT_TYPE_STARTED) return e.job_id();
          if (e.type() >= v1::EVENT_TYPE_SUCCEEDED) return "";
        }
      }
      return "";
    }
    // Its terminal event.
    v1::JobEvent End() {
      v1::SubmitResponse resp;
      while (stream_->Read(&resp)) {
        for (const v1::JobEvent& e : resp.events()) {
          if (e.type() >= v1::EVENT_TYPE_SUCCEEDED) return e;
        }
      }
      return {};
    }

   private:
    grpc::ClientContext ctx_;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
        stream_;
  };

  void CancelJob(const std::string& id) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::CancelJobResponse resp;
    ASSERT_TRUE(stub_->CancelJob(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.state(), v1::JOB_STATE_CANCELLED);
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

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

// ---- exec --------------------------------------------------------------

class ExecTest : public ReactorTest {
 protected:
  void SetUp() override {
    StartDaemon({"--exec-allow", "/bin/sh,/bin/echo,/bin/cat,/usr/bin/env",
                 "--exec-kill-grace", "300ms", "--exec-env-allow",
                 "GREETING,lower_case"},
                {"JOBD_SECRET=not-for-jobs"});
    char dir[] = "/tmp/jobd-exec-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(ExecTest, RunsAnAllowlistedProgramByPathOrName) {
  const v1::JobEvent e = RunOne(Exec({"echo", "hello", "world"}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.executor(), v1::EXECUTOR_REACTOR);
  EXPECT_EQ(Field(e, "exit_code").number_value(), 0);
  EXPECT_EQ(Field(e, "stdout").string_value(), "hello world\n");
  EXPECT_EQ(e.result().payload(), "hello world\n");
  const v1::JobEvent p = RunOne(Exec({"/bin/echo", "x"}));
  EXPECT_EQ(Field(p, "stdout").string_value(), "x\n");
}

TEST_F(ExecTest, FeedsStdinAndSetsEnvironmentAndDirectory) {
  v1::JobSpec cat = Exec({"cat"});
  cat.set_payload("from the payload");
  EXPECT_EQ(Field(RunOne(cat), "stdout").string_value(), "from the payload");
  EXPECT_EQ(
      Field(RunOne(Exec({"cat"}, {{"stdin", Str("from stdin")}})), "stdout")
          .string_value(),
      "from stdin");
  google::protobuf::Value env;
  (*env.mutable_struct_value()->mutable_fields())["GREETING"] = Str("hi");
  const v1::JobEvent e =
      RunOne(Exec({"sh", "-c", "echo $GREETING; pwd; echo ${HOME:-no home}"},
                  {{"env", env}, {"cwd", Str(dir_)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(Field(e, "stdout").string_value(),
            absl::StrCat("hi\n", dir_, "\nno home\n"));
}

TEST_F(ExecTest, OnlyAllowlistedVariablesPassAndNothingOfJobds) {
  // A name off --exec-env-allow is refused before the job is queued, naming
  // the variable and the option: TAR_OPTIONS would make an allowlisted tar
  // run any command (--checkpoint-action=exec=...).
  for (const char* name :
       {"TAR_OPTIONS", "LD_PRELOAD", "BASH_ENV", "HOME", "LANG", "greeting"}) {
    google::protobuf::Value env;
    (*env.mutable_struct_value()->mutable_fields())[name] =
        Str("--checkpoint=1 --checkpoint-action=exec=id");
    const v1::JobEvent e = RunOne(Exec({"echo"}, {{"env", env}}));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED) << name;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::PERMISSION_DENIED) << name;
    EXPECT_THAT(e.error().message(), HasSubstr(absl::StrCat("env.", name)));
    EXPECT_THAT(e.error().message(), HasSubstr("--exec-env-allow"));
  }
  // Names jobd sets itself, and names that are not names.
  for (const char* name :
       {"PATH", "JOBD_INSTANCE", "BASH_FUNC_x%%", "1ABC", "A=B", ""}) {
    google::protobuf::Value env;
    (*env.mutable_struct_value()->mutable_fields())[name] = Str("x");
    const v1::JobEvent e = RunOne(Exec({"echo"}, {{"env", env}}));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED) << name;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_THAT(e.error().message(), HasSubstr("env.")) << name;
  }
  // The allowlisted names pass through; the rest is the fixed base, never
  // jobd's own environment (JOBD_SECRET).
  google::protobuf::Value env;
  (*env.mutable_struct_value()->mutable_fields())["GREETING"] = Str("hi");
  (*env.mutable_struct_value()->mutable_fields())["lower_case"] = Str("ok");
  const v1::JobEvent e = RunOne(Exec({"/usr/bin/env"}, {{"env", env}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  std::vector<std::string> lines = absl::StrSplit(
      Field(e, "stdout").string_value(), '\n', absl::SkipEmpty());
  std::sort(lines.begin(), lines.end());
  ASSERT_EQ(lines.size(), 4u) << Field(e, "stdout").string_value();
  EXPECT_EQ(lines[0], "GREETING=hi");
  EXPECT_THAT(lines[1], ::testing::MatchesRegex("JOBD_INSTANCE=[0-9a-f]{32}"));
  EXPECT_EQ(lines[2], "PATH=/usr/local/bin:/usr/bin:/bin");
  EXPECT_EQ(lines[3], "lower_case=ok");
}

TEST_F(ExecTest, RejectsProgramsOffTheAllowlist) {
  for (const char* program : {"/bin/ls", "ls", "/tmp/../bin/sh"}) {
    const v1::JobEvent e = RunOne(Exec({program}));
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED) << program;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(e.error().message(), HasSubstr("not on this daemon's exec"));
  }
  const v1::JobEvent empty = RunOne(Exec({}));
  EXPECT_EQ(empty.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ExecTest, DisabledWithoutAnAllowlist) {
  StartDaemon();  // A second daemon, no --exec-allow.
  const v1::JobEvent e = RunOne(Exec({"/bin/echo", "x"}));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_EQ(e.error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(e.error().message(), HasSubstr("exec is disabled"));
}

TEST_F(ExecTest, NonZeroExitFailsUnlessCheckIsOff) {
  const std::vector<std::string> argv = {"sh", "-c", "echo oops >&2; exit 3"};
  const v1::JobEvent f = RunOne(Exec(argv));
  EXPECT_EQ(f.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_THAT(f.error().message(), HasSubstr("exited with code 3"));
  EXPECT_THAT(f.error().message(), HasSubstr("oops"));
  const v1::JobEvent ok = RunOne(Exec(argv, {{"check", Bool(false)}}));
  ASSERT_EQ(ok.type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(Field(ok, "exit_code").number_value(), 3);
  EXPECT_EQ(Field(ok, "stderr").string_value(), "oops\n");
  const v1::JobEvent sig =
      RunOne(Exec({"sh", "-c", "kill -USR1 $$"}, {{"check", Bool(false)}}));
  EXPECT_EQ(Field(sig, "signal").string_value(), "SIGUSR1");
}

TEST_F(ExecTest, OutputOverTheLimitIsTruncatedAndDrained) {
  const v1::JobEvent e =
      RunOne(Exec({"sh", "-c",
                   "i=0; while [ $i -lt 2000 ]; do echo "
                   "0123456789012345678901234567890123456789; "
                   "i=$((i+1)); done"},
                  {{"max_output_bytes", Num(1000)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(Field(e, "stdout").string_value().size(), 1000u);
  EXPECT_TRUE(Field(e, "stdout_truncated").bool_value());
  EXPECT_FALSE(Field(e, "stderr_truncated").bool_value());
  const v1::JobEvent over =
      RunOne(Exec({"echo"}, {{"max_output_bytes", Num(1e9)}}));
  EXPECT_EQ(over.type(), v1::EVENT_TYPE_REJECTED);
}

// max_output_bytes cannot exceed what fits one message: stdout comes back
// twice (text and payload) and stderr once. At the largest allowed, with
// output that triples as text (every byte invalid UTF-8, so U+FFFD), the
// result still fits: the job succeeds and every reader gets it.
TEST_F(ExecTest, OutputLimitsKeepTheResultWithinAMessage) {
  // Bytes that are not UTF-8 on stdout and stderr, `n` of each.
  auto script = [](int64_t n) {
    return absl::StrCat("head -c ", n,
                        " /dev/zero | tr '\\0' '\\377'; head -c ", n,
                        " /dev/zero | tr '\\0' '\\376' >&2");
  };
  // The reported case (8 MiB each: a 24 MiB result) is refused, naming the
  // largest that fits this spec (its size counts).
  const v1::JobEvent over = RunOne(Exec({"sh", "-c", script(9999999)},
                                        {{"max_output_bytes", Num(8 << 20)}}));
  ASSERT_EQ(over.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_EQ(over.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(over.error().message(), HasSubstr("max_output_bytes"));
  const std::string& m = over.error().message();
  const size_t at = m.find("at most ");
  ASSERT_NE(at, std::string::npos) << m;
  int64_t largest = 0;
  ASSERT_TRUE(absl::SimpleAtoi(m.substr(at + 8, m.find(' ', at + 8) - at - 8),
                               &largest))
      << m;
  ASSERT_GT(largest, 4 << 20);
  ASSERT_LT(largest + 1000, 9999999);  // The same spec size below.
  const v1::JobEvent e = RunOne(Exec({"sh", "-c", script(largest + 1000)},
                                     {{"max_output_bytes", Num(largest)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().payload(), std::string(largest, '\xff'));
  EXPECT_LE(Field(e, "stdout").string_value().size(),
            static_cast<size_t>(largest));
  EXPECT_LE(Field(e, "stderr").string_value().size(),
            static_cast<size_t>(largest));
  EXPECT_TRUE(Field(e, "stdout_truncated").bool_value());
  EXPECT_TRUE(Field(e, "stderr_truncated").bool_value());

  grpc::ClientContext get_ctx;
  Deadline(get_ctx);
  v1::GetJobRequest get;
  get.set_job_id(e.job_id());
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&get_ctx, get, &job).ok());
  EXPECT_EQ(job.result().payload().size(), static_cast<size_t>(largest));
  grpc::ClientContext list_ctx;
  Deadline(list_ctx);
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->ListJobs(&list_ctx, {}, &list).ok());
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

TEST_F(ExecTest, CancelKillsAProgramThatIgnoresSigterm) {
  // The shell and its background child ignore SIGTERM: only SIGKILL, after
  // the grace, stops them.
  const std::string token = "61.0217";
  Running job(*stub_,
              Exec({"sh", "-c",
                    absl::StrCat("trap '' TERM; sleep ", token, " & wait")}));
  const std::string id = job.Started();
  ASSERT_FALSE(id.empty());
  // The shell (its -c script names the token) and the sleep.
  ASSERT_TRUE(WaitFor([&] { return PidsWithArg(token).size() == 2; }));
  CancelJob(id);
  EXPECT_EQ(job.End().type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_TRUE(
      WaitFor([&] { return PidsWithArg(token).empty(); }, absl::Seconds(5)));
  EXPECT_TRUE(WaitFor([&] { return ReactorBusy() == 0; }));
}

TEST_F(ExecTest, TimeoutKillsTheProcessGroup) {
  const std::string token = "62.0217";
  v1::JobSpec spec = Exec({"sh", "-c", absl::StrCat("sleep ", token)});
  spec.mutable_timeout()->set_nanos(300'000'000);
  const v1::JobEvent e = RunOne(spec);
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_TRUE(
      WaitFor([&] { return PidsWithArg(token).empty(); }, absl::Seconds(5)));
}

// A program that starts a daemon of its own (a new session, so out of its
// process group, and, with setsid -f, reparented as its parent exits).
std::vector<std::string> Daemonizing(const std::string& token,
                                     const std::string& then) {
  return {"sh", "-c",
          absl::StrCat("setsid -f sleep ", token,
                       " </dev/null >/dev/null "
                       "2>&1; setsid sleep ",
                       token,
                       "5 </dev/null "
                       ">/dev/null 2>&1 & ",
                       then)};
}

TEST_F(ExecTest, TimeoutKillsWhatTheProgramStartedInAnotherSession) {
  const std::string token = "63.0217";
  v1::JobSpec spec = Exec(Daemonizing(token, "sleep 64"));
  spec.mutable_timeout()->set_nanos(500'000'000);
  const v1::JobEvent e = RunOne(spec);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_TRUE(
      WaitFor([&] { return PidsWithArg(token).empty(); }, absl::Seconds(5)))
      << PidsWithArg(token).size() << " left";
}

TEST_F(ExecTest, CancelKillsWhatTheProgramStartedInAnotherSession) {
  const std::string token = "65.0217";
  Running job(*stub_, Exec(Daemonizing(token, "sleep 66")));
  const std::string id = job.Started();
  ASSERT_FALSE(id.empty());
  // The shell, and the two sleeps in sessions of their own.
  ASSERT_TRUE(WaitFor([&] { return PidsWithArg(token).size() == 3; }));
  CancelJob(id);
  EXPECT_EQ(job.End().type(), v1::EVENT_TYPE_CANCELLED);
  EXPECT_TRUE(
      WaitFor([&] { return PidsWithArg(token).empty(); }, absl::Seconds(5)))
      << PidsWithArg(token).size() << " left";
}

TEST_F(ExecTest, WhatAProgramLeavesRunningDiesWhenItEnds) {
  const std::string token = "67.0217";
  const v1::JobEvent e = RunOne(Exec(Daemonizing(token, "exit 0")));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_TRUE(
      WaitFor([&] { return PidsWithArg(token).empty(); }, absl::Seconds(5)))
      << PidsWithArg(token).size() << " left";
}

}  // namespace
}  // namespace jobd
