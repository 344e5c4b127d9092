// The dashboard's JSON API (server/dashboard) on a whole daemon in this
// process (in_process_daemon.h), over real HTTP: its numbers are
// GetStats's; the job lists and a job's page show a running job, which a
// cancel (with the request header) ends; tokens and roles are the
// daemon's (401 without a token, read views, only admin or the owner
// cancels, others' jobs are not found); without tokens a request for a
// foreign host name is refused (DNS rebinding); the page is served from
// the binary with a policy that allows nothing from elsewhere; slow and
// stalled HTTP clients hold up no job. (dashboard_browser_test.py drives
// the page itself in Chromium.)
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics_server.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"
#include "tests/integration/test_tokens.h"

namespace jobd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A JSON answer parsed into `M` (ignoring fields it does not know).
template <typename M>
M Parse(const std::string& json) {
  M m;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(json, &m, options).ok())
      << json;
  return m;
}

class DashboardTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args = {}) {
    args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
    auto d = InProcessDaemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    // Over TCP (127.0.0.1): on the Unix socket (--unix-socket-auth
    // trusted) every caller would be the local admin.
    stub_ = v1::JobService::NewStub(grpc::CreateChannel(
        daemon_->tcp_address(), grpc::InsecureChannelCredentials()));
    port_ = daemon_->daemon().http_port();
    ASSERT_GT(port_, 0);
  }

  httplib::Result Get(const std::string& path, const std::string& token = "",
                      httplib::Headers headers = {}) {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    return c.Get(path.c_str(), headers);
  }
  httplib::Result Post(const std::string& path, const std::string& token = "",
                       bool request_header = true) {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    if (request_header) headers.emplace("X-Jobd-Request", "cancel");
    return c.Post(path.c_str(), headers, "", "text/plain");
  }
  // GET `path`, expecting 200; its body.
  std::string Body(const std::string& path, const std::string& token = "") {
    httplib::Result r = Get(path, token);
    EXPECT_TRUE(r) << path << ": " << httplib::to_string(r.error());
    if (!r) return "";
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    EXPECT_EQ(r->get_header_value("Connection"), "close") << path;
    return r->body;
  }

  // Submits a job that runs until cancelled (as `token`'s caller); its id.
  std::string SubmitSleeper(const std::string& token = "") {
    v1::SubmitRequest req = SubmitRequestOf({Spec("sleep", {600000})});
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    auto stream = stub_->Submit(&ctx);
    EXPECT_TRUE(stream->Write(req));
    v1::SubmitResponse resp;
    std::string id;
    while (id.empty() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_STARTED) id = e.job_id();
      }
    }
    ctx.TryCancel();  // The job runs on (no cancel_on_disconnect).
    return id;
  }

  v1::Job GetJob(const std::string& id, const std::string& token = "") {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
    return job;
  }

  std::unique_ptr<InProcessDaemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  int port_ = -1;
};

TEST_F(DashboardTest, StatsAreGetStats) {
  Start();
  std::vector<v1::JobSpec> specs(40, Spec("echo", {1}));
  specs.push_back(Spec("fail"));
  specs.push_back(Spec("no-such-task"));
  ASSERT_TRUE(SubmitAll(*stub_, specs).status.ok());
  const v1::GetStatsResponse want = GetStats(*stub_);
  // The page's numbers come from a sample at most an interval old.
  v1::GetStatsResponse got;
  ASSERT_TRUE(WaitFor(
      [&] {
        got = Parse<v1::GetStatsResponse>(Body("/api/stats"));
        return got.accepted() == want.accepted() &&
               got.succeeded() == want.succeeded() &&
               got.failed() == want.failed();
      },
      absl::Seconds(5)))
      << got.DebugString();
  EXPECT_EQ(got.accepted(), 41u);
  EXPECT_EQ(got.rejected(), want.rejected());
  EXPECT_EQ(got.succeeded(), 40u);
  EXPECT_EQ(got.failed(), 1u);
  EXPECT_EQ(got.version(), want.version());
  ASSERT_EQ(got.executors_size(), want.executors_size());
  for (int i = 0; i < got.executors_size(); ++i) {
    EXPECT_EQ(got.executors(i).workers(), want.executors(i).workers());
    EXPECT_EQ(got.executors(i).completed(), want.executors(i).completed());
  }
  // The chart's samples: taken each second, the latest count among them.
  const std::string t = Body("/api/throughput?after=0");
  EXPECT_THAT(t, HasSubstr("\"intervalMs\":1000"));
  EXPECT_THAT(t, HasSubstr(",41,40,1,"));
  EXPECT_EQ(Get("/api/throughput?after=x")->status, 400);
}

TEST_F(DashboardTest, JobListsJobPageAndCancel) {
  Start();
  const std::string id = SubmitSleeper();
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(RunOne(*stub_, Spec("echo", {7})).type(), v1::EVENT_TYPE_SUCCEEDED);
  std::string lists;
  ASSERT_TRUE(WaitFor(
      [&] {
        lists = Body("/api/jobs");
        return absl::StrContains(lists, "SUCCEEDED");
      },
      absl::Seconds(5)));
  EXPECT_THAT(lists, HasSubstr(absl::StrCat("\"running\":{\"jobs\":[{\"id\":\"",
                                            id, "\"")));
  EXPECT_THAT(lists, HasSubstr("\"task\":\"sleep\""));

  const std::string page = Body("/api/jobs/" + id);
  EXPECT_THAT(page, HasSubstr("\"state\":\"JOB_STATE_RUNNING\""));
  EXPECT_THAT(page, HasSubstr("\"args\":[600000]"));
  EXPECT_THAT(page, HasSubstr("\"attempts\":1"));
  EXPECT_THAT(page, HasSubstr("\"type\":\"EVENT_TYPE_ACCEPTED\""));
  EXPECT_THAT(page, HasSubstr("\"type\":\"EVENT_TYPE_STARTED\""));
  EXPECT_EQ(Get("/api/jobs/999999")->status, 404);
  EXPECT_EQ(Get("/api/jobs/0")->status, 400);

  // A cancel without the request header (what a cross-site form sends) is
  // refused; with it the job ends CANCELLED.
  httplib::Result r = Post("/api/jobs/" + id + "/cancel", "", false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_RUNNING);
  r = Post("/api/jobs/" + id + "/cancel");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->body, HasSubstr("JOB_STATE_CANCELLED"));
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(Body("/api/jobs/" + id),
              HasSubstr("\"type\":\"EVENT_TYPE_CANCELLED\""));
  // Cancelling by GET is no route.
  EXPECT_EQ(Get("/api/jobs/" + id + "/cancel")->status, 404);
}

TEST_F(DashboardTest, TokensAndRolesAreTheDaemons) {
  std::vector<std::string> args = TokenFlags();
  Start(args);
  // No token, or an unknown one: 401, and nothing shown.
  for (const std::string& token : {std::string(), std::string("nope")}) {
    for (const char* path : {"/api/me", "/api/stats", "/api/jobs",
                             "/api/throughput", "/api/jobs/1"}) {
      httplib::Result r = Get(path, token);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 401) << path << " " << r->body;
      EXPECT_THAT(r->body, Not(HasSubstr("executors")));
    }
  }
  // The page itself needs no token (it asks for one).
  EXPECT_THAT(Body("/"), HasSubstr("login-form"));
  // read views.
  EXPECT_THAT(Body("/api/me", kBob), HasSubstr("\"name\":\"bob\""));
  EXPECT_THAT(Body("/api/stats", kBob), HasSubstr("executors"));
  // alice's job: bob (read) cannot cancel it, carol (another submitter)
  // does not see it, alice and root do.
  const std::string id = SubmitSleeper(kAlice);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Get("/api/jobs/" + id, kCarol)->status, 404);
  EXPECT_EQ(Get("/api/jobs/" + id, kAlice)->status, 200);
  EXPECT_EQ(Get("/api/jobs/" + id, kRoot)->status, 200);
  EXPECT_THAT(Body("/api/jobs", kCarol), Not(HasSubstr("\"id\":\"" + id)));
  EXPECT_EQ(Post("/api/jobs/" + id + "/cancel", kBob)->status, 403);
  EXPECT_EQ(Post("/api/jobs/" + id + "/cancel", kCarol)->status, 404);
  EXPECT_EQ(GetJob(id, kRoot).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Post("/api/jobs/" + id + "/cancel", kAlice)->status, 200);
  EXPECT_EQ(GetJob(id, kRoot).state(), v1::JOB_STATE_CANCELLED);
  const std::string other = SubmitSleeper(kCarol);
  EXPECT_EQ(Post("/api/jobs/" + other + "/cancel", kRoot)->status, 200);
  EXPECT_EQ(GetJob(other, kRoot).state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(DashboardTest, WithoutTokensOnlyLoopbackHostNamesAreAnswered) {
  Start();
  httplib::Result r = Get("/api/stats", "", {{"Host", "attacker.example"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403) << r->body;
  for (const char* host : {"localhost", "127.0.0.1", "[::1]"}) {
    r = Get("/api/stats", "", {{"Host", absl::StrCat(host, ":", port_)}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << host;
  }
}

TEST_F(DashboardTest, PageIsServedFromTheBinaryAndLoadsNothingElsewhere) {
  Start();
  httplib::Result r = Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(r->get_header_value("Content-Security-Policy"),
              HasSubstr("default-src 'none'; script-src 'self'"));
  for (const char* path : {"/", "/app.js", "/style.css"}) {
    const std::string body = Body(path);
    EXPECT_GT(body.size(), 500u) << path;
    for (const char* remote :
         {"src=\"http", "href=\"http", "url(http", "import(", "cdn"}) {
      EXPECT_THAT(body, Not(HasSubstr(remote))) << path;
    }
  }
  EXPECT_THAT(Body("/app.js"), HasSubstr("sessionStorage"));
  // /metrics is still there.
  EXPECT_THAT(Body("/metrics"), HasSubstr("jobd_up 1"));
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

TEST_F(DashboardTest, SlowAndStalledHttpClientsNeverHoldUpJobs) {
  Start();
  // Clients that ask for the page and the API and never read the answer,
  // and clients that connect and never send: more than the listener has
  // threads, each takes one of those, none of the daemon's.
  std::vector<int> fds;
  for (int i = 0; i < MetricsServer::kThreads + 4; ++i) {
    const int fd = StalledConnection(port_);
    ASSERT_GE(fd, 0);
    if (i % 2 == 0) {
      int small = 1;  // A receive window of almost nothing.
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
      const std::string req =
          absl::StrCat("GET ", i % 4 == 0 ? "/app.js" : "/api/jobs",
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      ASSERT_EQ(write(fd, req.data(), req.size()),
                static_cast<ssize_t>(req.size()));
    }
    fds.push_back(fd);
  }
  const absl::Time start = absl::Now();
  std::vector<v1::JobSpec> specs(300, Spec("echo", {1}));
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.Terminal().size(), 300u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4))
      << "jobs waited for the stalled HTTP clients";
  for (int fd : fds) close(fd);
  // Once they are gone (or cut off after the I/O timeout), it answers.
  EXPECT_TRUE(WaitFor(
      [&] {
        httplib::Result g = Get("/api/stats");
        return g && g->status == 200 &&
               Parse<v1::GetStatsResponse>(g->body).succeeded() == 300;
      },
      absl::Seconds(15)));
}

}  // namespace
}  // namespace jobd::testing
