// Integration tests of the exec task on the coroutine reactor through the
// real daemon: the program allowlist, stdin, environment (allowlisted names
// only, nothing of jobd's) and directory, exit codes, the output limit, and
// killing the process group and whatever the program started, on cancel,
// timeout and its own end.
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/reactor_fixture.h"

namespace jobd {
namespace {

using testing::Bool;
using testing::Deadline;
using testing::Field;
using ::testing::HasSubstr;
using testing::KwSpec;
using testing::List;
using testing::Num;
using testing::PidsWithArg;
using testing::ReactorTest;
using testing::Str;
using testing::WaitFor;

v1::JobSpec Exec(const std::vector<std::string>& argv,
                 std::map<std::string, google::protobuf::Value> more = {}) {
  more["argv"] = List(argv);
  return KwSpec("exec", std::move(more));
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

TEST_F(ExecTest, AProgramWithoutInputStartsAtEndOfInputWithDefaultSignals) {
  // No stdin argument, no payload: cat ends at once, with nothing read.
  const v1::JobEvent empty = RunOne(Exec({"cat"}));
  ASSERT_EQ(empty.type(), v1::EVENT_TYPE_SUCCEEDED) << empty.error().message();
  EXPECT_EQ(Field(empty, "stdout").string_value(), "");
  // jobd ignores SIGPIPE and blocks SIGTERM and friends; its programs
  // start with no signal ignored, blocked or caught.
  const v1::JobEvent e = RunOne(Exec({"cat", "/proc/self/status"}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  const std::string status = Field(e, "stdout").string_value();
  for (const char* line :
       {"SigBlk:\t0000000000000000\n", "SigIgn:\t0000000000000000\n",
        "SigCgt:\t0000000000000000\n"}) {
    EXPECT_THAT(status, HasSubstr(line)) << status;
  }
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
