// Integration tests of `jobctl top` against the real daemon: in a real
// terminal (a detached tmux session of fixed size, on a tmux server of the
// test's own), the frame shows the executors and the running jobs with
// GetStats' numbers, follows a resize, and `q` or Ctrl-C quit with exit
// code 0 and the main screen back; without a terminal it prints one plain
// frame.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::CommandResult;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTmux[] = "/usr/bin/tmux";

class JobctlTopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kTmux))
        << "tmux is needed (deploy/setup.sh installs it)";
    auto d = testing::Daemon::Start({"--thread-workers", "4"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
    socket_ = "jobd-top-test-" + std::to_string(getpid());
  }

  void TearDown() override {
    // What this test started: jobctl (under the pane's shell) and the tmux
    // server on the test's own socket, by pid.
    for (pid_t pid : {jobctl_pid_, server_pid_}) {
      if (pid > 0 && kill(pid, 0) == 0) kill(pid, SIGKILL);
    }
    if (server_pid_ > 0) Tmux({"kill-server"});
    // The sleeps would hold the daemon's stop for its grace period.
    for (const std::string& id : jobs_) Jobctl({"cancel", id});
  }

  CommandResult Jobctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::JobctlPath(), "--address",
                                     daemon_->unix_address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv, "", absl::Seconds(30));
  }

  CommandResult Tmux(std::vector<std::string> args) {
    std::vector<std::string> argv = {kTmux, "-L", socket_, "-f", "/dev/null"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv, "", absl::Seconds(10));
  }

  // A tmux format of the pane, e.g. "#{alternate_on}".
  std::string Pane(const std::string& format) {
    return std::string(absl::StripTrailingAsciiWhitespace(
        Tmux({"display-message", "-p", "-t", "top", format}).out));
  }
  std::string Screen() { return Tmux({"capture-pane", "-p", "-t", "top"}).out; }

  // Starts `jobctl top` in a detached session of `columns` x `rows`, under
  // a shell that writes its exit status to rc_path() once it exits; the
  // pane stays after that, for its screen.
  void StartTop(int columns, int rows, const std::string& interval = "200ms") {
    const std::string command = testing::JobctlPath() + " --address " +
                                daemon_->unix_address() + " top --interval " +
                                interval + "; echo $? > " + rc_path();
    CommandResult r =
        Tmux({"new-session", "-d", "-s", "top", "-x", std::to_string(columns),
              "-y", std::to_string(rows), command, ";", "set-option", "-g",
              "remain-on-exit", "on"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    server_pid_ = PaneNumber("#{pid}");
    // jobctl: the child of the pane's shell.
    const int shell = PaneNumber("#{pane_pid}");
    ASSERT_TRUE(testing::WaitFor([&] {
      const std::string children =
          testing::ReadProcFile("/proc/" + std::to_string(shell) + "/task/" +
                                std::to_string(shell) + "/children");
      return absl::SimpleAtoi(absl::StripAsciiWhitespace(children),
                              &jobctl_pid_);
    })) << "no jobctl under the pane's shell";
  }
  std::string rc_path() const { return dir_.path() + "/rc"; }

  // Waits (10 s at most) until the screen matches `pattern`; the screen.
  std::string WaitForScreen(const std::string& pattern) {
    const std::regex re(pattern);
    std::string screen;
    const bool seen = testing::WaitFor(
        [&] {
          screen = Screen();
          return std::regex_search(screen, re);
        },
        absl::Seconds(10));
    EXPECT_TRUE(seen) << "no /" << pattern << "/ on the screen:\n" << screen;
    return screen;
  }

  // Waits for jobctl to exit; its exit status. Then waits for the pane
  // to have left the alternate screen (tmux may read jobctl's last output
  // after the shell wrote the status).
  int WaitForExit() {
    std::string rc;
    EXPECT_TRUE(testing::WaitFor(
        [&] {
          rc = testing::ReadProcFile(rc_path());
          return !rc.empty() && rc.back() == '\n';
        },
        absl::Seconds(10)))
        << Screen();
    jobctl_pid_ = -1;
    EXPECT_TRUE(testing::WaitFor([&] { return Pane("#{alternate_on}") == "0"; },
                                 absl::Seconds(5)))
        << "still on the alternate screen:\n"
        << Screen();
    int status = -1;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(rc), &status))
        << rc;
    return status;
  }

  std::string SubmitSleep() {
    CommandResult r =
        Jobctl({"submit", "--executor", "thread", "sleep", "60000"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    jobs_.emplace_back(absl::StripTrailingAsciiWhitespace(r.out));
    return jobs_.back();
  }

  // A number of Pane(); -1 if it is not one.
  int PaneNumber(const std::string& format) {
    int n = -1;
    return absl::SimpleAtoi(Pane(format), &n) ? n : -1;
  }

  std::unique_ptr<testing::Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  std::string socket_;
  std::vector<std::string> jobs_;  // Submitted sleeps.
  pid_t server_pid_ = -1;
  pid_t jobctl_pid_ = -1;
  testing::TempDir dir_{"jobd-top-test"};
};

TEST_F(JobctlTopTest, ShowsExecutorsAndRunningJobsThenQuitsOnQ) {
  const std::string a = SubmitSleep();
  const std::string b = SubmitSleep();
  ASSERT_TRUE(testing::WaitFor([&] {
    const v1::GetStatsResponse stats = testing::GetStats(*stub_);
    for (const v1::ExecutorStats& e : stats.executors()) {
      if (e.executor() == v1::EXECUTOR_THREAD) return e.busy() == 2;
    }
    return false;
  }));
  StartTop(100, 30);
  // The thread executor's row: 4 workers, 2 busy, none queued.
  const std::string screen =
      WaitForScreen("\nthread +4 +2 +0 [\\s\\S]*q: quit");
  EXPECT_EQ(Pane("#{alternate_on}"), "1");
  EXPECT_THAT(screen, HasSubstr("jobs: 2 live"));
  // Each running job: id, task, executor, caller, run time.
  for (const std::string& id : {a, b}) {
    EXPECT_TRUE(std::regex_search(
        screen, std::regex("\n" + id + " +sleep +thread +anonymous +[0-9]")))
        << screen;
  }
  // Every executor row holds GetStats' workers, busy and queued.
  const v1::GetStatsResponse stats = testing::GetStats(*stub_);
  ASSERT_GT(stats.executors_size(), 0);
  for (const v1::ExecutorStats& e : stats.executors()) {
    if (!e.enabled()) continue;
    const std::string name = e.executor() == v1::EXECUTOR_THREAD    ? "thread"
                             : e.executor() == v1::EXECUTOR_PROCESS ? "process"
                                                                    : "reactor";
    EXPECT_TRUE(std::regex_search(
        screen, std::regex("\n" + name + " +" + std::to_string(e.workers()) +
                           " +" + std::to_string(e.busy()) + " +" +
                           std::to_string(e.queued()) + " ")))
        << name << "\n"
        << screen;
  }
  EXPECT_THAT(screen, HasSubstr("q: quit"));

  ASSERT_EQ(Tmux({"send-keys", "-t", "top", "q"}).exit_code, 0);
  EXPECT_EQ(WaitForExit(), 0);
  // The alternate screen was left: the main screen has no frame on it.
  EXPECT_THAT(Screen(), Not(HasSubstr("EXECUTOR")));
}

TEST_F(JobctlTopTest, FollowsAResizeAndQuitsOnCtrlC) {
  SubmitSleep();
  // No refresh for a minute: only SIGWINCH can redraw it.
  StartTop(100, 30, "60s");
  WaitForScreen("\nthread +4 +1 ");
  ASSERT_EQ(
      Tmux({"resize-window", "-t", "top", "-x", "40", "-y", "12"}).exit_code,
      0);
  // Redrawn at 40 columns at once (SIGWINCH): lines cut, the key hint on
  // the last of the 12 rows.
  const std::string screen =
      WaitForScreen("EXECUTOR  WORKERS  BUSY  QUEUED  ENDED/~");
  const std::vector<std::string> rows = absl::StrSplit(screen, '\n');
  ASSERT_GE(rows.size(), 12u) << screen;
  EXPECT_EQ(rows[11], "q: quit") << screen;
  for (const std::string& row : rows) EXPECT_LE(row.size(), 40u) << row;

  ASSERT_EQ(Tmux({"send-keys", "-t", "top", "C-c"}).exit_code, 0);
  EXPECT_EQ(WaitForExit(), 0);
}

TEST_F(JobctlTopTest, SigtermQuitsAndRestoresTheTerminal) {
  StartTop(80, 24);
  WaitForScreen("q: quit");
  ASSERT_GT(jobctl_pid_, 0);
  ASSERT_THAT(testing::ReadProcFile("/proc/" + std::to_string(jobctl_pid_) +
                                    "/cmdline"),
              HasSubstr("jobctl"));
  ASSERT_EQ(kill(jobctl_pid_, SIGTERM), 0);
  EXPECT_EQ(WaitForExit(), 0);
  EXPECT_THAT(Screen(), Not(HasSubstr("EXECUTOR")));
}

TEST_F(JobctlTopTest, WithoutATerminalPrintsOnePlainFrame) {
  const std::string id = SubmitSleep();
  ASSERT_TRUE(testing::WaitFor([&] {
    return testing::GetStats(*stub_).live() == 1 &&
           Jobctl({"top"}).out.find("\n" + id + "   sleep") !=
               std::string::npos;
  }));
  CommandResult r = Jobctl({"top"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("running jobs: 1\n"));
  EXPECT_THAT(r.out, HasSubstr("\nthread    4        1     0       -"));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b")));  // No escape sequences.
  EXPECT_THAT(r.out, Not(HasSubstr("q: quit")));

  r = Jobctl({"top", "--interval", "10ms"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--interval"));
  r = Jobctl({"--json", "top", "--once"});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace jobd
