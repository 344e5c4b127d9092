// Unit tests: what the process pool reads about a worker process and how
// it words a worker's end (workers/process/internal/process_info.h), on
// real child processes: stopped, running, exiting and gone; killed by a
// signal jobd did or did not send; exited with a code.
#include "workers/process/internal/process_info.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

// A child that waits for a signal; killed (by pid) when the test ends.
class Child {
 public:
  Child() {
    pid_ = fork();
    if (pid_ == 0) {
      for (;;) pause();
    }
  }
  ~Child() {
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Waits until it ended (or, with WUNTRACED / WCONTINUED, stopped or
  // resumed); its wait status.
  int Wait(int options = 0) {
    int status = 0;
    EXPECT_EQ(waitpid(pid_, &status, options), pid_);
    reaped_ = WIFEXITED(status) || WIFSIGNALED(status);
    return status;
  }
  // Waits until it ended, leaving it a zombie (not reaped).
  bool WaitUntilExited() {
    siginfo_t info{};
    return waitid(P_PID, pid_, &info, WEXITED | WNOWAIT) == 0;
  }

 private:
  pid_t pid_ = 0;
  bool reaped_ = false;
};

TEST(ProcessInfoTest, ReadsTheResidentMemoryOfALiveProcessOnly) {
  EXPECT_GT(ReadRssBytes(getpid()), 1u << 20);
  Child child;
  ASSERT_GT(child.pid(), 0);
  EXPECT_GT(ReadRssBytes(child.pid()), 0u);
  kill(child.pid(), SIGKILL);
  child.Wait();
  EXPECT_EQ(ReadRssBytes(child.pid()), 0u);  // Gone: unknown.
}

TEST(ProcessInfoTest, TellsAStoppedARunningAnExitingAndAGoneProcess) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  kill(child.pid(), SIGSTOP);
  ASSERT_TRUE(WIFSTOPPED(child.Wait(WUNTRACED)));
  EXPECT_EQ(ProcessStateText(child.pid()),
            "was stopped (by SIGSTOP or another stop signal)");
  kill(child.pid(), SIGCONT);
  ASSERT_TRUE(WIFCONTINUED(child.Wait(WCONTINUED)));
  // Running or sleeping in pause(): "was running (state S)" or "(state R)".
  EXPECT_THAT(ProcessStateText(child.pid()), HasSubstr("was running (state "));
  kill(child.pid(), SIGKILL);
  ASSERT_TRUE(child.WaitUntilExited());
  EXPECT_EQ(ProcessStateText(child.pid()), "was exiting");  // A zombie.
  child.Wait();
  EXPECT_EQ(ProcessStateText(child.pid()), "");
}

TEST(ProcessInfoTest, ASigkillJobdDidNotSendIsTakenForTheOomKiller) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  kill(child.pid(), SIGKILL);
  const int status = child.Wait();

  const WorkerExit not_ours = DescribeWorkerExit(status, false);
  EXPECT_EQ(not_ours.reason, v1::ERROR_REASON_OUT_OF_MEMORY);
  EXPECT_EQ(not_ours.how,
            "was killed by signal SIGKILL (Killed), which jobd did not send: "
            "most likely the kernel's OOM killer");

  const WorkerExit ours = DescribeWorkerExit(status, true);
  EXPECT_EQ(ours.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(ours.how, "was killed by signal SIGKILL (Killed)");
}

TEST(ProcessInfoTest, OtherEnds) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  kill(child.pid(), SIGTERM);
  const WorkerExit term = DescribeWorkerExit(child.Wait(), false);
  EXPECT_EQ(term.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(term.how, "was killed by signal SIGTERM (Terminated)");

  const pid_t exits = fork();
  if (exits == 0) _exit(3);
  ASSERT_GT(exits, 0);
  int status = 0;
  ASSERT_EQ(waitpid(exits, &status, 0), exits);
  const WorkerExit code = DescribeWorkerExit(status, false);
  EXPECT_EQ(code.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(code.how, "exited with code 3");

  // The wait status of a process killed by SIGXCPU (its CPU time limit),
  // without a core dump.
  EXPECT_EQ(DescribeWorkerExit(SIGXCPU, false).how,
            "was killed by signal SIGXCPU (CPU time limit exceeded): it used "
            "up its CPU time limit (max_worker_cpu_seconds)");
  const WorkerExit unknown = DescribeWorkerExit(-1, false);
  EXPECT_EQ(unknown.reason, v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(unknown.how,
            "ended (its exit status is unknown: its fork server was "
            "replaced)");
}

TEST(ProcessInfoTest, NamesSignalsAndSizes) {
  EXPECT_EQ(SignalName(SIGSEGV), "SIGSEGV (Segmentation fault)");
  EXPECT_EQ(MiB(3 << 19), "1.5 MiB");
  EXPECT_EQ(MiB(0), "0.0 MiB");
}

}  // namespace
}  // namespace jobd
