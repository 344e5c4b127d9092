// The Prometheus metrics endpoint (--http-listen) of a whole daemon (in
// this process: in_process_daemon.h): the exposition counts jobs by task
// (accepted, started, ended), queue waits, journal commits and every RPC
// with its status code and open streams, and passes `promtool check
// metrics`; a real Prometheus scrapes it and
// answers a query; task label values stay bounded whatever names clients
// send; a client that connects and never sends holds up no job; a
// non-loopback address is refused at start, naming the option.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics_server.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"

namespace jobd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPromtool[] = "/usr/bin/promtool";
constexpr char kPrometheus[] = "/usr/bin/prometheus";

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = InProcessDaemon::Start({"--http-listen", "127.0.0.1:0"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
    port_ = daemon_->daemon().http_port();
    ASSERT_GT(port_, 0);
  }

  // GET /metrics; "" (and a test failure) if it fails.
  std::string Scrape() {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    httplib::Result r = c.Get("/metrics");
    EXPECT_TRUE(r) << "scrape failed: " << httplib::to_string(r.error());
    if (!r) return "";
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->get_header_value("Content-Type"),
                HasSubstr("version=0.0.4"));
    return r->body;
  }

  void RunEchoJobs(int n) {
    std::vector<v1::JobSpec> specs(n, Spec("echo", {1}));
    const StreamResult r = SubmitAll(*stub_, specs);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    int succeeded = 0;
    for (const v1::JobEvent& e : r.Terminal()) {
      succeeded += e.type() == v1::EVENT_TYPE_SUCCEEDED;
    }
    ASSERT_EQ(succeeded, n);
  }

  std::unique_ptr<InProcessDaemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  int port_ = -1;
};

// The sum of the samples of `name` whose labels contain every one of
// `labels` (each `key="value"`).
double SumOf(const std::string& body, const std::string& name,
             const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (!absl::StartsWith(line, name + "{") &&
        !absl::StartsWith(line, name + " ")) {
      continue;
    }
    bool all = true;
    for (const std::string& l : labels) all = all && absl::StrContains(line, l);
    if (all) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

TEST_F(MetricsTest, CountsJobsByTaskAndPassesPromtool) {
  RunEchoJobs(7);
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_jobs_ended_total",
                  {"task=\"echo\"", "state=\"succeeded\"", "reason=\"none\""}),
            7)
      << body;
  EXPECT_EQ(SumOf(body, "jobd_jobs_accepted_total", {}), 7);
  EXPECT_EQ(SumOf(body, "jobd_job_run_seconds_count", {"task=\"echo\""}), 7);
  EXPECT_EQ(
      SumOf(body, "jobd_executor_jobs_ended_total", {"state=\"succeeded\""}),
      7);
  EXPECT_THAT(body, HasSubstr("jobd_pool_worker_rss_bytes{slot=\"0\"}"));
  EXPECT_THAT(body, HasSubstr("jobd_journal_commits_total"));
  // Prometheus's own linter and parser accept it.
  const CommandResult check =
      RunCommand({kPromtool, "check", "metrics"}, body, absl::Seconds(20));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err << body;
}

TEST_F(MetricsTest, AcceptedAndStartedByTaskAndQueueWaitPerExecutor) {
  RunEchoJobs(7);
  std::vector<v1::JobSpec> sleeps(3, Spec("sleep", {1}));  // 1 ms.
  ASSERT_TRUE(SubmitAll(*stub_, sleeps).status.ok());
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_jobs_accepted_total", {"task=\"echo\""}), 7)
      << body;
  EXPECT_EQ(SumOf(body, "jobd_jobs_started_total", {"task=\"echo\""}), 7);
  EXPECT_EQ(SumOf(body, "jobd_jobs_accepted_total", {"task=\"sleep\""}), 3);
  EXPECT_EQ(SumOf(body, "jobd_jobs_started_total", {"task=\"sleep\""}), 3);
  // One queue wait per started job, on the executor that started it.
  const double started = SumOf(body, "jobd_jobs_started_total", {});
  EXPECT_EQ(started, 10);
  EXPECT_EQ(SumOf(body, "jobd_queue_wait_seconds_count", {}), started);
  for (const char* ex : {"thread", "process", "reactor"}) {
    const std::string label = absl::StrCat("executor=\"", ex, "\"");
    EXPECT_EQ(SumOf(body, "jobd_queue_wait_seconds_count", {label}),
              SumOf(body, "jobd_jobs_started_total", {label}))
        << ex;
  }
  EXPECT_EQ(SumOf(body, "jobd_queue_wait_seconds_bucket", {"le=\"+Inf\""}),
            started);
}

TEST_F(MetricsTest, JournalCommitsFillTheirHistograms) {
  RunEchoJobs(3);
  const std::string before = Scrape();
  const double commits = SumOf(before, "jobd_journal_commits_total", {});
  ASSERT_GT(commits, 0) << before;
  // The histograms are read after GetStats: at least as many commits.
  const double counted = SumOf(before, "jobd_journal_commit_seconds_count", {});
  EXPECT_GE(counted, commits);
  EXPECT_GE(SumOf(before, "jobd_journal_commit_records_count", {}), commits);
  EXPECT_GE(SumOf(before, "jobd_journal_commit_records_sum", {}),
            SumOf(before, "jobd_journal_records_total", {}));
  EXPECT_GT(SumOf(before, "jobd_journal_written_bytes_total", {}), 0);
  RunEchoJobs(3);
  const std::string after = Scrape();
  EXPECT_GT(SumOf(after, "jobd_journal_commit_seconds_count", {}), counted);
  EXPECT_GT(SumOf(after, "jobd_journal_written_bytes_total", {}),
            SumOf(before, "jobd_journal_written_bytes_total", {}));
}

TEST_F(MetricsTest, EveryRpcIsCountedWithItsStatusCodeAndDuration) {
  {
    grpc::ClientContext ctx;
    v1::GetJobRequest req;
    req.set_job_id("not-a-number");
    v1::Job job;
    EXPECT_EQ(stub_->GetJob(&ctx, req, &job).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::GetJobRequest req;
    req.set_job_id("999999");
    v1::Job job;
    EXPECT_EQ(stub_->GetJob(&ctx, req, &job).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::GetStatsResponse stats;
    EXPECT_TRUE(stub_->GetStats(&ctx, {}, &stats).ok());
  }
  RunEchoJobs(2);  // One Submit stream, ended OK.
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total",
                  {"method=\"GetJob\"", "code=\"INVALID_ARGUMENT\""}),
            1)
      << body;
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total",
                  {"method=\"GetJob\"", "code=\"NOT_FOUND\""}),
            1);
  EXPECT_EQ(
      SumOf(body, "jobd_rpcs_total", {"method=\"GetStats\"", "code=\"OK\""}),
      1);
  EXPECT_EQ(
      SumOf(body, "jobd_rpcs_total", {"method=\"Submit\"", "code=\"OK\""}), 1);
  EXPECT_EQ(
      SumOf(body, "jobd_rpc_duration_seconds_count", {"method=\"GetJob\""}), 2);
  EXPECT_EQ(
      SumOf(body, "jobd_rpc_duration_seconds_count", {"method=\"Submit\""}), 1);
  EXPECT_EQ(SumOf(body, "jobd_rpcs_in_flight", {"method=\"GetJob\""}), 0);
  EXPECT_EQ(SumOf(body, "jobd_streams_open", {"method=\"Submit\""}), 0);
  const CommandResult check =
      RunCommand({kPromtool, "check", "metrics"}, body, absl::Seconds(20));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err << body;
}

// A unary call of `method` with raw request bytes; its status.
grpc::Status RawUnary(const std::string& target, const std::string& method,
                      const std::string& request) {
  grpc::GenericStub stub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();  // Bounded by the deadline.
  return status;
}

TEST_F(MetricsTest, TheCodeCountedIsTheOneTheClientGets) {
  // A request that does not parse: the parse-error interceptor makes it
  // INVALID_ARGUMENT, and that is what is counted.
  const grpc::Status s = RawUnary(
      daemon_->unix_address(), "/jobd.v1.JobService/CancelJob", "\xff\xff\xff");
  ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Another service's method counts as "other", not under its own name.
  RawUnary(daemon_->unix_address(), "/grpc.health.v1.Health/Check", "");
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total",
                  {"method=\"CancelJob\"", "code=\"INVALID_ARGUMENT\""}),
            1)
      << body;
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total", {"method=\"CancelJob\""}), 1);
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total", {"method=\"other\""}), 1);
  EXPECT_THAT(body, Not(HasSubstr("Health")));
}

TEST_F(MetricsTest, OpenStreamsAndWatchersAreGauges) {
  grpc::ClientContext ctx;
  auto reader = stub_->WatchJobs(&ctx, {});  // Every job.
  v1::WatchJobsResponse header;
  ASSERT_TRUE(reader->Read(&header));  // The server has it open.
  std::string body;
  EXPECT_TRUE(WaitFor([&] {
    body = Scrape();
    return SumOf(body, "jobd_watchers", {}) == 1;
  })) << body;
  EXPECT_EQ(SumOf(body, "jobd_streams_open", {"method=\"WatchJobs\""}), 1);
  ctx.TryCancel();
  reader->Finish();
  // Closed once the server has seen it end; counted with its code.
  EXPECT_TRUE(WaitFor([&] {
    body = Scrape();
    return SumOf(body, "jobd_streams_open", {"method=\"WatchJobs\""}) == 0 &&
           SumOf(body, "jobd_watchers", {}) == 0;
  })) << body;
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total", {"method=\"WatchJobs\""}), 1);
  EXPECT_EQ(
      SumOf(body, "jobd_rpc_duration_seconds_count", {"method=\"WatchJobs\""}),
      1);
}

TEST_F(MetricsTest, UnknownTaskNamesNeverBecomeLabelValues) {
  // 10,000 distinct task names no registry has: all rejected, none a label.
  for (int batch = 0; batch < 10; ++batch) {
    std::vector<v1::JobSpec> specs;
    for (int i = 0; i < 1000; ++i) {
      specs.push_back(Spec(absl::StrCat("no-such-task-", batch * 1000 + i)));
    }
    const StreamResult r = SubmitAll(*stub_, specs);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.Terminal().size(), specs.size());
  }
  RunEchoJobs(1);
  const std::string body = Scrape();
  EXPECT_THAT(body, Not(HasSubstr("no-such-task")));
  EXPECT_EQ(SumOf(body, "jobd_jobs_rejected_total", {}), 10000);
  // Their Submit streams count under the method's own label.
  EXPECT_EQ(SumOf(body, "jobd_rpcs_total", {"method=\"Submit\""}), 11);
  EXPECT_LT(body.size(), 64u * 1024) << "the exposition grew with the names";
}

// A connected socket that never sends a byte (nor reads).
int StalledConnection(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_F(MetricsTest, StalledHttpClientsNeverHoldUpJobs) {
  // More stalled clients than the server has threads: every one of them
  // is taken, none of the daemon's.
  std::vector<int> stalled;
  for (int i = 0; i < MetricsServer::kThreads + 4; ++i) {
    const int fd = StalledConnection(port_);
    ASSERT_GE(fd, 0);
    stalled.push_back(fd);
  }
  const absl::Time start = absl::Now();
  RunEchoJobs(200);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4))
      << "jobs waited for the stalled HTTP clients";
  // They are cut off after the I/O timeout; scrapes work again.
  for (int fd : stalled) close(fd);
  EXPECT_EQ(SumOf(Scrape(), "jobd_jobs_accepted_total", {}), 200);
}

TEST(MetricsConfigTest, NonLoopbackAddressIsRefusedNamingTheOption) {
  for (const char* address : {"0.0.0.0:0", "[::]:0", "192.0.2.1:9464"}) {
    auto d = InProcessDaemon::Start({"--http-listen", address});
    ASSERT_FALSE(d.ok()) << address;
    EXPECT_THAT(d.status().message(), HasSubstr("--http-listen")) << address;
    EXPECT_THAT(d.status().message(), HasSubstr("loopback")) << address;
  }
  auto bad = InProcessDaemon::Start({"--http-listen", "9464"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--http-listen"));
}

TEST_F(MetricsTest, RealPrometheusScrapesAndAnswersAQuery) {
  RunEchoJobs(5);
  TempDir dir("jobd-prometheus");
  const std::string config = dir.path() + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n"
                        << "scrape_configs:\n  - job_name: jobd\n"
                        << "    static_configs:\n      - targets: ['127.0.0.1:"
                        << port_ << "']\n";
  const int web_port = FreeLoopbackPort();
  ASSERT_GT(web_port, 0);
  // Its log goes to a file (a pipe nobody reads would stop it); ready is
  // when its /-/ready answers 200.
  const std::string log = dir.path() + "/prometheus.log";
  const std::vector<std::string> args = {
      kPrometheus, "--config.file=" + config,
      "--storage.tsdb.path=" + dir.path() + "/data",
      absl::StrCat("--web.listen-address=127.0.0.1:", web_port)};
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (const std::string& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  struct Stopper {
    pid_t pid;
    ~Stopper() { (void)StopProcess(pid, SIGTERM, absl::Seconds(10)); }
  } stopper{pid};
  httplib::Client api("127.0.0.1", web_port);
  api.set_read_timeout(5);
  ASSERT_TRUE(WaitFor(
      [&] {
        httplib::Result r = api.Get("/-/ready");
        return r && r->status == 200;
      },
      absl::Seconds(20)))
      << "Prometheus did not become ready; its log: " << ReadProcFile(log);
  const std::string query =
      "sum(jobd_jobs_ended_total{task=\"echo\",state=\"succeeded\"})";
  std::string last;
  const bool answered = WaitFor(
      [&] {
        httplib::Result r =
            api.Get("/api/v1/query", {{"query", query}}, httplib::Headers{});
        if (!r || r->status != 200) return false;
        last = r->body;
        // {"status":"success","data":{"resultType":"vector","result":
        //  [{"metric":{},"value":[1712345678.9,"5"]}]}}
        return absl::StrContains(last, ",\"5\"]");
      },
      absl::Seconds(20));
  EXPECT_TRUE(answered) << "last answer: " << last;
}

}  // namespace
}  // namespace jobd::testing
