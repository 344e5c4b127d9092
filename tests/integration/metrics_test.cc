// The Prometheus metrics endpoint (--http-listen) of a whole daemon (in
// this process: in_process_daemon.h): the exposition counts jobs by task
// (accepted, started, ended), queue waits, journal commits and every RPC
// with its status code and open streams, and passes `promtool check
// metrics`; a real Prometheus scrapes it and
// answers a query; task label values stay bounded whatever names clients
// send; a client that connects and never sends holds up no job; a
// non-loopback address is refused at start, naming the option, unless TLS
// and authentication are configured. With --tls-cert the listener serves
// HTTPS (certificates from test_pki.h), with callers configured /metrics
// needs the read role (401 without a known token, 403 without the role),
// and a real Prometheus scrapes it with a CA file and a bearer token file.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/metrics/metrics_server.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"
#include "tests/integration/test_pki.h"
#include "tests/integration/test_tokens.h"

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

// Waiting jobs, retries and keyed jobs are on the endpoint, as totals.
TEST_F(MetricsTest, WaitingRetriesCallbacksAndKeysAreExported) {
  v1::JobSpec later = Spec("echo", {1});
  later.mutable_delay()->set_seconds(3600);
  v1::JobSpec flaky = Spec("fail");
  flaky.mutable_retry()->set_max_attempts(3);
  flaky.mutable_retry()->mutable_initial_backoff()->set_nanos(1000000);
  v1::JobSpec keyed = Spec("echo", {2});
  keyed.set_concurrency_key("db");
  // The delayed job does not end in the test: on a stream of its own,
  // accepted before the others run.
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  ASSERT_TRUE(stream->Write(SubmitRequestOf({later})));
  v1::SubmitResponse accepted;
  ASSERT_TRUE(stream->Read(&accepted));
  ASSERT_EQ(accepted.events(0).type(), v1::EVENT_TYPE_ACCEPTED);
  const StreamResult r = SubmitAll(*stub_, {flaky, keyed});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), 2u);
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_jobs_waiting", {}), 1) << body;
  EXPECT_THAT(body, HasSubstr("jobd_jobs_waiting_on_dependencies 0"));
  EXPECT_EQ(SumOf(body, "jobd_job_retries_total", {}), 2) << body;
  EXPECT_THAT(body, HasSubstr("jobd_key_jobs_parked 0"));
  EXPECT_THAT(body, HasSubstr("jobd_schedules 0"));
  EXPECT_EQ(SumOf(body, "jobd_callbacks_ended_total", {}), 0);
  ctx.TryCancel();
  stream->Finish();
}

// Job output held for StreamJobOutput is on the endpoint: here one job's
// three log lines, nothing dropped.
TEST_F(MetricsTest, JobOutputHeldIsExported) {
  std::string body = Scrape();
  EXPECT_THAT(body, HasSubstr("jobd_output_jobs 0")) << body;
  v1::JobSpec log;
  log.set_task("log");
  log.set_kind(v1::JOB_KIND_IO_BOUND);
  google::protobuf::Value lines;
  lines.set_number_value(3);
  (*log.mutable_kwargs()->mutable_fields())["lines"] = lines;
  const StreamResult r = SubmitAll(*stub_, {log});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), 1u);
  ASSERT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_output_jobs", {}), 1) << body;
  // "log line 1 of 3\n" x 3, and the pieces' overhead.
  EXPECT_GE(SumOf(body, "jobd_output_bytes", {}), 48) << body;
  EXPECT_EQ(SumOf(body, "jobd_output_dropped_bytes_total", {}), 0) << body;
}

// A delayed job's queue wait counts from when it fell due, not from its
// acceptance: its delay is not time spent waiting for a worker.
TEST_F(MetricsTest, QueueWaitOfADelayedJobCountsFromItsDueTime) {
  v1::JobSpec later = Spec("echo", {1});
  later.mutable_delay()->set_nanos(600'000'000);
  ASSERT_TRUE(SubmitAll(*stub_, {later}).status.ok());
  const std::string body = Scrape();
  EXPECT_EQ(SumOf(body, "jobd_queue_wait_seconds_count", {}), 1) << body;
  EXPECT_EQ(SumOf(body, "jobd_queue_wait_seconds_bucket", {"le=\"0.5\""}), 1)
      << body;
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
  // No fold of the log yet (32 MiB of it are far off): none counted.
  EXPECT_THAT(after, HasSubstr("jobd_journal_compaction_seconds_count 0"));
  EXPECT_EQ(SumOf(after, "jobd_journal_compaction_errors_total", {}), 0);
}

// A smaller journal folds its log sooner (once it holds a quarter of the
// cap): each fold is counted.
TEST_F(MetricsTest, FoldsOfTheJournalsLogAreCounted) {
  daemon_.reset();
  auto d = InProcessDaemon::Start(
      {"--http-listen", "127.0.0.1:0", "--journal-max-bytes", "32M"});
  ASSERT_TRUE(d.ok()) << d.status();
  daemon_ = *std::move(d);
  stub_ = daemon_->NewStub();
  port_ = daemon_->daemon().http_port();
  std::vector<v1::JobSpec> specs(200, Spec("echo", {1}));
  for (v1::JobSpec& spec : specs) spec.set_payload(std::string(64 << 10, 'x'));
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  int succeeded = 0;
  for (const v1::JobEvent& e : r.Terminal()) {
    succeeded += e.type() == v1::EVENT_TYPE_SUCCEEDED;
  }
  EXPECT_EQ(succeeded, 200);
  const std::string body = Scrape();
  // 200 specs of 64 KiB: 12.5 MiB of log, folded at 8 MiB.
  EXPECT_GE(SumOf(body, "jobd_journal_compaction_seconds_count", {}), 1)
      << body;
  EXPECT_EQ(SumOf(body, "jobd_journal_compaction_errors_total", {}), 0);
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

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "jobd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseConfig(static_cast<int>(argv.size()), argv.data());
}

// Beyond loopback, the gRPC listener's rule: TLS and authentication, each
// refusal naming --http-listen and what is missing.
TEST(MetricsConfigTest, BeyondLoopbackNeedsTlsAndAuthentication) {
  TempDir dir("jobd-metrics-config");
  const std::string cert = dir.path() + "/cert.pem",
                    key = dir.path() + "/key.pem";
  std::ofstream(cert) << "not read while parsing\n";
  std::ofstream(key) << "not read while parsing\n";
  const std::vector<std::string> tls = {"--tls-cert", cert, "--tls-key", key};
  const std::vector<std::string> tokens = TokenFlags();
  auto with = [](std::vector<std::string> a,
                 const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::vector<std::string> listen = {"--http-listen", "0.0.0.0:9464"};

  absl::StatusOr<ParsedArgs> no_auth = Parse(with(listen, tls));
  ASSERT_FALSE(no_auth.ok());
  EXPECT_THAT(no_auth.status().message(),
              HasSubstr("--http-listen: refusing to listen on non-loopback "
                        "address '0.0.0.0:9464' without authentication "
                        "(--auth-token or --tls-identity)"));
  absl::StatusOr<ParsedArgs> no_tls = Parse(with(listen, tokens));
  ASSERT_FALSE(no_tls.ok());
  EXPECT_THAT(no_tls.status().message(),
              HasSubstr("--http-listen: refusing to listen on non-loopback "
                        "address '0.0.0.0:9464' without TLS (--tls-cert, "
                        "--tls-key)"));
  absl::StatusOr<ParsedArgs> neither = Parse(listen);
  ASSERT_FALSE(neither.ok());
  EXPECT_THAT(neither.status().message(),
              HasSubstr("without TLS (--tls-cert, --tls-key) and "
                        "authentication"));
  // Both: accepted (parsed only; nothing listens beyond loopback here).
  absl::StatusOr<ParsedArgs> both = Parse(with(with(listen, tls), tokens));
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->config.http_listen, "0.0.0.0:9464");
}

// A certificate the listener cannot use is refused at start, naming the
// option.
TEST(MetricsConfigTest, AnUnusableCertificateIsRefusedNamingTheOption) {
  TempDir dir("jobd-metrics-badcert");
  const std::string junk = dir.path() + "/junk.pem";
  std::ofstream(junk) << "not a certificate\n";
  auto d = InProcessDaemon::Start(
      {"--http-listen", "127.0.0.1:0", "--tls-cert", junk, "--tls-key", junk});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("--tls-cert"));
}

// Runs a real Prometheus that scrapes `port` every second with the
// scrape_config lines `scrape` (indented under the job) and asks it for
// the echo jobs that succeeded until it answers `expected` (20 s at most).
void ExpectPrometheusAnswers(int port, const std::string& scrape,
                             const std::string& expected) {
  TempDir dir("jobd-prometheus");
  const std::string config = dir.path() + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n"
                        << "scrape_configs:\n  - job_name: jobd\n"
                        << scrape
                        << "    static_configs:\n      - targets: ['127.0.0.1:"
                        << port << "']\n";
  const int web_port = FreeLoopbackPort();
  ASSERT_GT(web_port, 0);
  // Its log goes to a file (a pipe nobody reads would stop it); ready is
  // when its /-/ready answers 200.
  const std::string log = dir.path() + "/prometheus.log";
  const std::vector<std::string> args = {
      kPrometheus, "--config.file=" + config,
      "--storage.tsdb.path=" + dir.path() + "/data",
      absl::StrCat("--web.listen-address=127.0.0.1:", web_port)};
  // Everything the child needs is made before the fork: this process has
  // threads (the in-process daemon's), so the child may call only
  // async-signal-safe functions until exec (an allocation could wait for
  // good on a malloc lock some other thread held at the fork).
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int log_fd =
      open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0) << log << ": " << strerror(errno);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  ASSERT_GE(pid, 0);
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
        return absl::StrContains(last, ",\"" + expected + "\"]");
      },
      absl::Seconds(20));
  EXPECT_TRUE(answered) << "last answer: " << last
                        << "\nits log: " << ReadProcFile(log);
}

TEST_F(MetricsTest, RealPrometheusScrapesAndAnswersAQuery) {
  RunEchoJobs(5);
  ExpectPrometheusAnswers(port_, "", "5");
}

// The metrics listener on HTTPS (the gRPC listener's --tls-cert and
// --tls-key) with callers configured: /metrics answers the read role
// only, the dashboard's API checks the same way. On 127.0.0.1, as
// beyond loopback (where nothing may listen in a test).
class MetricsTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok());
    std::vector<std::string> flags = TokenFlags();
    flags.insert(flags.end(), {"--http-listen", "127.0.0.1:0", "--tls-cert",
                               pki_.Path("server.pem"), "--tls-key",
                               pki_.Path("server.key")});
    auto d = InProcessDaemon::Start(flags);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    port_ = daemon_->daemon().http_port();
    ASSERT_GT(port_, 0);
  }

  // GET `path` over HTTPS, the server's certificate checked against the
  // test CA; with `token`, as a bearer token.
  httplib::Result Get(const std::string& path, const std::string& token = "",
                      const std::string& authorization = "") {
    httplib::SSLClient c("127.0.0.1", port_);
    c.set_ca_cert_path(pki_.Path("ca.pem").c_str());
    c.enable_server_certificate_verification(true);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    httplib::Headers headers;
    if (!token.empty()) {
      headers.emplace("Authorization", "Bearer " + token);
    } else if (!authorization.empty()) {
      headers.emplace("Authorization", authorization);
    }
    return c.Get(path, headers);
  }

  TempDir dir_{"jobd-metrics-tls"};
  Pki pki_{dir_.path()};
  std::unique_ptr<InProcessDaemon> daemon_;
  int port_ = -1;
};

TEST_F(MetricsTlsTest, HttpsScrapeNeedsATokenWithTheReadRole) {
  // bob (read) and root (admin) scrape; the exposition parses.
  for (const char* token : {kBob, kRoot}) {
    httplib::Result r = Get("/metrics", token);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_THAT(r->body, HasSubstr("jobd_up 1"));
    const CommandResult check =
        RunCommand({kPromtool, "check", "metrics"}, r->body, absl::Seconds(20));
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  }
  // No token, an unknown one, not a bearer token: 401, asking for one.
  for (const auto& [token, authorization, says] :
       {std::tuple{"", "", "authentication required"},
        std::tuple{"not-a-known-token", "", "unknown or revoked token"},
        std::tuple{"", "Basic Ym9iOmJvYg==", "not 'Bearer TOKEN'"}}) {
    httplib::Result r = Get("/metrics", token, authorization);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 401) << r->body;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
    EXPECT_THAT(r->body, HasSubstr(says));
    EXPECT_THAT(r->body, Not(HasSubstr("jobd_up")));
  }
  // alice has the submit role only: 403, naming what she lacks.
  httplib::Result submit_only = Get("/metrics", kAlice);
  ASSERT_TRUE(submit_only);
  EXPECT_EQ(submit_only->status, 403);
  EXPECT_THAT(submit_only->body, HasSubstr("needs the read role"));
  // The dashboard's API answers on the same listener, checked the same way.
  httplib::Result me = Get("/api/me", kBob);
  ASSERT_TRUE(me);
  EXPECT_EQ(me->status, 200) << me->body;
  EXPECT_THAT(me->body, HasSubstr("\"bob\""));
  httplib::Result anonymous = Get("/api/me");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  // Plain HTTP to the HTTPS port gets no answer.
  httplib::Client plain("127.0.0.1", port_);
  plain.set_connection_timeout(5);
  plain.set_read_timeout(5);
  httplib::Result r = plain.Get("/metrics");
  EXPECT_FALSE(r && r->status == 200);
}

TEST_F(MetricsTlsTest, RealPrometheusScrapesOverTlsWithABearerTokenFile) {
  std::unique_ptr<v1::JobService::Stub> stub = daemon_->NewStub();
  std::vector<v1::JobSpec> specs(3, Spec("echo", {1}));
  ASSERT_TRUE(SubmitAll(*stub, specs).status.ok());
  std::ofstream(dir_.path() + "/token") << kBob;
  ExpectPrometheusAnswers(port_,
                          "    scheme: https\n"
                          "    tls_config:\n"
                          "      ca_file: " +
                              pki_.Path("ca.pem") +
                              "\n"
                              "    authorization:\n"
                              "      credentials_file: " +
                              dir_.path() + "/token\n",
                          "3");
}

// A rotated certificate is served without a restart, as on the gRPC
// listener: new files in place, and the next connections get them.
TEST(MetricsTlsRotationTest, ANewCertificateIsServedWithoutARestart) {
  TempDir dir("jobd-metrics-rotate");
  Pki old_pki(dir.path() + "/old"), new_pki(dir.path() + "/new");
  ASSERT_TRUE(old_pki.ok() && new_pki.ok());
  const std::string cert = dir.path() + "/live.pem",
                    key = dir.path() + "/live.key";
  // Each file replaced whole (a rename), as a deployment tool does.
  auto install = [&](const Pki& pki) {
    for (const auto& [from, to] : {std::pair{pki.Path("server.pem"), cert},
                                   std::pair{pki.Path("server.key"), key}}) {
      std::filesystem::copy_file(
          from, to + ".tmp", std::filesystem::copy_options::overwrite_existing);
      std::filesystem::rename(to + ".tmp", to);
    }
  };
  install(old_pki);
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--http-listen", "127.0.0.1:0", "--tls-cert", cert,
                             "--tls-key", key});
  auto d = InProcessDaemon::Start(flags);
  ASSERT_TRUE(d.ok()) << d.status();
  const int port = (*d)->daemon().http_port();
  // 200 to a client that trusts `pki`'s CA only.
  auto scrapes = [&](const Pki& pki) {
    httplib::SSLClient c("127.0.0.1", port);
    c.set_ca_cert_path(pki.Path("ca.pem").c_str());
    c.enable_server_certificate_verification(true);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    httplib::Result r = c.Get(
        "/metrics",
        httplib::Headers{{"Authorization", std::string("Bearer ") + kBob}});
    return r && r->status == 200;
  };
  EXPECT_TRUE(scrapes(old_pki));
  EXPECT_FALSE(scrapes(new_pki));
  install(new_pki);
  EXPECT_TRUE(WaitFor([&] { return scrapes(new_pki); }, absl::Seconds(10)))
      << (*d)->Log();
  EXPECT_FALSE(scrapes(old_pki));
}

// With --tls-client-ca the listener requires a client certificate, as the
// gRPC listener does, and a --tls-identity's certificate is a caller.
TEST(MetricsMutualTlsTest, AClientCertificateIsRequiredAndIdentifies) {
  TempDir dir("jobd-metrics-mtls");
  Pki pki(dir.path());
  ASSERT_TRUE(pki.ok());
  auto d = InProcessDaemon::Start(
      {"--http-listen", "127.0.0.1:0", "--tls-cert", pki.Path("server.pem"),
       "--tls-key", pki.Path("server.key"), "--tls-client-ca",
       pki.Path("ca.pem"), "--tls-identity", "alice-cert:read"});
  ASSERT_TRUE(d.ok()) << d.status();
  const int port = (*d)->daemon().http_port();
  auto get = [&](bool client_cert) {
    std::unique_ptr<httplib::SSLClient> c =
        client_cert ? std::make_unique<httplib::SSLClient>(
                          "127.0.0.1", port, pki.Path("client.pem"),
                          pki.Path("client.key"))
                    : std::make_unique<httplib::SSLClient>("127.0.0.1", port);
    c->set_ca_cert_path(pki.Path("ca.pem").c_str());
    c->enable_server_certificate_verification(true);
    c->set_connection_timeout(5);
    c->set_read_timeout(10);
    return c->Get("/metrics");
  };
  httplib::Result with_cert = get(true);
  ASSERT_TRUE(with_cert) << httplib::to_string(with_cert.error());
  EXPECT_EQ(with_cert->status, 200) << with_cert->body;
  EXPECT_THAT(with_cert->body, HasSubstr("jobd_up 1"));
  httplib::Result without = get(false);
  EXPECT_FALSE(without && without->status == 200);
}

// Without TLS, a token is still needed once callers are configured.
TEST(MetricsAuthTest, OnPlainLoopbackHttpCallersStillAuthenticate) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--http-listen", "127.0.0.1:0"});
  auto d = InProcessDaemon::Start(flags);
  ASSERT_TRUE(d.ok()) << d.status();
  httplib::Client c("127.0.0.1", (*d)->daemon().http_port());
  c.set_connection_timeout(5);
  c.set_read_timeout(10);
  httplib::Result none = c.Get("/metrics");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  httplib::Result bob =
      c.Get("/metrics",
            httplib::Headers{{"Authorization", std::string("Bearer ") + kBob}});
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->status, 200);
}

}  // namespace
}  // namespace jobd::testing
