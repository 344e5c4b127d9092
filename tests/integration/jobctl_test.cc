// Integration tests: the jobctl CLI (a subprocess) against the real daemon:
// output, JSON mode, exit codes, map ordering, bad input.
#include <signal.h>

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::CommandResult;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class JobctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = testing::Daemon::Start({"--thread-workers", "4"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }
  CommandResult Jobctl(std::vector<std::string> args,
                       const std::string& input = "") {
    std::vector<std::string> argv = {testing::JobctlPath(), "--address",
                                     daemon_->unix_address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv, input, absl::Seconds(30));
  }
  std::unique_ptr<testing::Daemon> daemon_;
};

TEST_F(JobctlTest, SubmitWaitPrintsTheResult) {
  CommandResult r = Jobctl({"submit", "echo", "hello", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "\"hello\"\n");
  // Arguments parse as JSON when they can: 5 is a number for sleep's ms.
  r = Jobctl({"submit", "sleep", "5", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "5\n");
}

TEST_F(JobctlTest, SubmitWithoutWaitPrintsTheIdAndGetFindsIt) {
  CommandResult r = Jobctl({"submit", "sleep", "20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = r.out.substr(0, r.out.find('\n'));
  ASSERT_FALSE(id.empty());
  r = Jobctl({"wait", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SUCCEEDED"));
  r = Jobctl({"get", id});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("state:     SUCCEEDED"));
  r = Jobctl({"--json", "get", id});
  EXPECT_THAT(r.out, HasSubstr("\"state\":\"JOB_STATE_SUCCEEDED\""));
}

TEST_F(JobctlTest, ExitCodesSayWhatHappened) {
  CommandResult r = Jobctl({"submit", "fail", "--wait"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("TASK_ERROR"));
  r = Jobctl({"submit", "no.such.task"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("unknown task 'no.such.task'"));
  r = Jobctl({"submit", "sleep", "soon", "--wait"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("expected int, got string"));
  r = Jobctl({"cancel", "424242"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("not found"));
  r = Jobctl({"submit", "--kind", "sideways", "echo"});
  EXPECT_EQ(r.exit_code, 2);
  r = Jobctl({"submit", "sleep", "10000", "--timeout", "100ms", "--wait"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("TIMEOUT"));
  r = testing::RunCommand({testing::JobctlPath(), "--address",
                           "unix:/tmp/no-such-jobd.sock", "stats"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("cannot connect"));
}

// A task name whose quote in the error is cut inside a character: the
// rejection arrives (it used to be a message the client could not parse,
// and jobctl waited for good).
TEST_F(JobctlTest, ARejectionQuotingACutCharacterArrives) {
  const CommandResult r =
      Jobctl({"submit", std::string(127, 'a') + "\xC3\xA9", "--wait"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("unknown task 'aaaa"));
}

TEST_F(JobctlTest, AddressFromTheEnvironment) {
  CommandResult r = testing::RunCommand(
      {testing::JobctlPath(), "submit", "echo", "env", "--wait"}, "",
      absl::Seconds(30), {"JOBD_ADDRESS=" + daemon_->unix_address()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "\"env\"\n");
}

TEST_F(JobctlTest, HelpOnEverySubcommand) {
  for (const char* sub : {"submit", "map", "get", "wait", "watch", "cancel",
                          "ls", "tasks", "stats"}) {
    CommandResult r = Jobctl({sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_THAT(r.out, HasSubstr("Usage")) << sub;
  }
  CommandResult r = Jobctl({"--help"});
  EXPECT_THAT(r.out, HasSubstr("xit"));  // The exit-code table.
}

TEST_F(JobctlTest, MapOrderedAndUnordered) {
  CommandResult r = Jobctl({"map", "sleep", "--ordered"}, "300\n10\n100\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "300\n10\n100\n");
  r = Jobctl({"map", "sleep"}, "300\n10\n100\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Completion order, each line prefixed by the input's index.
  EXPECT_EQ(r.out, "1\t10\n2\t100\n0\t300\n");
}

TEST_F(JobctlTest, MapFitsADaemonWithSmallLimits) {
  // Smaller than the client's default batch (1024) and window: the client
  // learns the limits at connect time instead of having its stream ended.
  auto d =
      testing::Daemon::Start({"--max-jobs-per-request", "100", "--max-window",
                              "200", "--default-window", "200"});
  ASSERT_TRUE(d.ok()) << d.status();
  daemon_ = *std::move(d);
  std::string input, expected;
  for (int i = 0; i < 2500; ++i) {
    input += std::to_string(i) + "\n";
    expected += std::to_string(i) + "\n";
  }
  CommandResult r = Jobctl({"map", "echo", "--ordered"}, input);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected);
  r = Jobctl({"--json", "stats"});
  EXPECT_THAT(r.out, HasSubstr("\"max_jobs_per_request\":100"));
}

TEST_F(JobctlTest, MapJsonReportsBadLinesAndFails) {
  CommandResult r = Jobctl({"--json", "map", "sleep", "--ordered"},
                           "1\n\"not a number\"\n2\n");
  EXPECT_EQ(r.exit_code, 4);
  std::vector<std::string> lines;
  for (size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos;
       at = nl + 1) {
    lines.push_back(r.out.substr(at, nl - at));
  }
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_THAT(lines[0], HasSubstr("\"index\":0"));
  EXPECT_THAT(lines[1], HasSubstr("\"state\":\"REJECTED\""));
  EXPECT_THAT(lines[1], HasSubstr("spec.args[0]"));
  EXPECT_THAT(lines[2], HasSubstr("\"index\":2"));
}

TEST_F(JobctlTest, ListingsAndStats) {
  ASSERT_EQ(Jobctl({"submit", "echo", "x", "--wait"}).exit_code, 0);
  ASSERT_EQ(Jobctl({"submit", "fail", "--wait"}).exit_code, 1);
  CommandResult r = Jobctl({"ls"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, StartsWith("ID"));
  EXPECT_THAT(r.out, HasSubstr("FAILED"));
  r = Jobctl({"ls", "--state", "failed"});
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("SUCCEEDED")));
  // Without cluster mode every node's jobs are this node's.
  EXPECT_EQ(Jobctl({"ls", "--all-nodes"}).out, Jobctl({"ls"}).out);
  r = Jobctl({"tasks"});
  EXPECT_THAT(r.out, HasSubstr("primes.count"));
  r = Jobctl({"stats"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("succeeded:      1"));
  EXPECT_THAT(r.out, HasSubstr("failed:         1"));
}

TEST_F(JobctlTest, IdempotencyKeyAndCancel) {
  CommandResult a =
      Jobctl({"submit", "sleep", "20000", "--idempotency-key", "k1"});
  CommandResult b =
      Jobctl({"submit", "sleep", "20000", "--idempotency-key", "k1"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const std::string id = a.out.substr(0, a.out.find('\n'));
  CommandResult c = Jobctl({"cancel", id});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  CommandResult w = Jobctl({"wait", id});
  EXPECT_EQ(w.exit_code, 1);
  EXPECT_THAT(w.out + w.err, HasSubstr("CANCELLED"));
}

TEST_F(JobctlTest, LogsPrintsAndFollowsAJobsOutputUntilItEnds) {
  auto d = testing::Daemon::Start({"--exec-allow", "/bin/sh"});
  ASSERT_TRUE(d.ok()) << d.status();
  daemon_ = *std::move(d);
  auto submit = [&](const std::string& script) {
    CommandResult r = Jobctl({"submit", "exec", "--kwarg",
                              "argv=[\"sh\",\"-c\",\"" + script + "\"]"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  };
  // Still running when jobctl starts following: it prints as the job
  // writes and returns once the job has ended, with its exit code.
  std::string id = submit("echo hi; sleep 0.5; echo bye >&2");
  CommandResult r = Jobctl({"logs", "-f", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.err, "bye\n");
  // Without -f: what is kept.
  r = Jobctl({"logs", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  // A job that fails: exit 1 once it has ended.
  id = submit("sleep 0.3; echo oops >&2; exit 3");
  r = Jobctl({"logs", "--follow", id});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err, "oops\n");
  r = Jobctl({"logs", "424242"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("not found"));
}

// jobd killed (-9) while `jobctl submit --wait` waits for a running job,
// then started again on the same socket and journal: jobctl asks again
// until jobd answers and prints the job's end as the journal had it.
class JobctlRestartTest : public ::testing::Test {
 protected:
  void StartDaemon() {
    auto d = testing::Daemon::Start(
        {"--unix-socket", dir_.path() + "/jobd.sock", "--state-dir",
         dir_.path() + "/state", "--thread-workers", "1"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }
  // Runs `jobctl submit ARGS --wait` on a thread; returns once its job runs
  // (jobctl is then waiting on its stream: it had the job accepted).
  void SubmitWaitingFor(std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::JobctlPath(), "--address",
                                     Address(), "submit"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--wait");
    jobctl_ = std::thread([this, argv] {
      result_ = testing::RunCommand(argv, "", absl::Seconds(60));
    });
    auto stub = daemon_->NewStub();
    EXPECT_TRUE(testing::WaitFor([&] {
      grpc::ClientContext ctx;
      v1::ListJobsRequest req;
      req.add_states(v1::JOB_STATE_RUNNING);
      v1::ListJobsResponse resp;
      return stub->ListJobs(&ctx, req, &resp).ok() && resp.jobs_size() == 1;
    })) << "the job never ran";
  }
  // Kills jobd and starts it again on the same socket and journal.
  void Restart() {
    ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
    daemon_.reset();
    StartDaemon();
  }
  std::string Address() const { return "unix:" + dir_.path() + "/jobd.sock"; }
  testing::CommandResult Finished() {
    jobctl_.join();
    return result_;
  }
  void TearDown() override {
    if (jobctl_.joinable()) jobctl_.join();  // A test that stopped early.
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::Daemon> daemon_;
  std::thread jobctl_;
  testing::CommandResult result_;
};

TEST_F(JobctlRestartTest, SubmitWaitGetsTheResultOfAJobRunAgainAfterARestart) {
  StartDaemon();
  SubmitWaitingFor(
      {"--at-least-once", "--executor", "thread", "sleep", "1500"});
  Restart();
  const testing::CommandResult r = Finished();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1500\n");
}

TEST_F(JobctlRestartTest, SubmitWaitReportsAnAtMostOnceJobLostInARestart) {
  StartDaemon();
  SubmitWaitingFor({"--executor", "thread", "sleep", "20000"});
  Restart();
  const testing::CommandResult r = Finished();
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("LOST_ON_RESTART"));
}

TEST_F(JobctlRestartTest, SubmitWaitSaysAnInMemoryJobIsGoneAfterARestart) {
  StartDaemon();
  SubmitWaitingFor({"--in-memory", "--executor", "thread", "sleep", "20000"});
  Restart();
  const testing::CommandResult r = Finished();
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("no longer knows"));
}

}  // namespace
}  // namespace jobd
