// Unit tests of jobctl's argument parsing (client/jobctl/args.h) and of its
// exit codes and error lines (client/jobctl/exit_codes.h).
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd::jobctl {
namespace {

using google::protobuf::Value;

TEST(JobctlArgsTest, Durations) {
  EXPECT_EQ(*ParseDurationArg("500ms", "--x"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseDurationArg("1h30m", "--x"), absl::Minutes(90));
  EXPECT_EQ(*ParseDurationArg("inf", "--x"), absl::InfiniteDuration());
  EXPECT_EQ(*ParseDurationArg("0", "--x"), absl::ZeroDuration());
  EXPECT_EQ(*ParseDurationArg("1.5", "--x"), absl::Milliseconds(1500));
  EXPECT_EQ(ParseDurationArg("-1s", "--timeout").status(),
            absl::InvalidArgumentError("--timeout: '-1s' is negative"));
  for (const char* bad : {"soon", "", "-2", "nan", "1x", "inf5"}) {
    EXPECT_EQ(ParseDurationArg(bad, "--wait").status(),
              absl::InvalidArgumentError(
                  "--wait: '" + std::string(bad) +
                  "' is not a duration (like 500ms, 2s, 1m, 1h30m)"))
        << bad;
  }
  EXPECT_EQ(*ParseOptionalDuration("", "--x", absl::Seconds(7)),
            absl::Seconds(7));
  EXPECT_EQ(*ParseOptionalDuration("2s", "--x", absl::Seconds(7)),
            absl::Seconds(2));
  EXPECT_FALSE(ParseOptionalDuration("x", "--x", absl::Seconds(7)).ok());
}

TEST(JobctlArgsTest, KindsAndExecutors) {
  EXPECT_EQ(ParseKind("cpu"), v1::JOB_KIND_CPU_BOUND);
  EXPECT_EQ(ParseKind("cpu-bound"), v1::JOB_KIND_CPU_BOUND);
  EXPECT_EQ(ParseKind("io-bound"), v1::JOB_KIND_IO_BOUND);
  EXPECT_EQ(ParseKind("auto"), v1::JOB_KIND_AUTO);
  EXPECT_EQ(ParseKind("CPU"), std::nullopt);
  EXPECT_EQ(ParseExecutor("thread"), v1::EXECUTOR_THREAD);
  EXPECT_EQ(ParseExecutor("any"), v1::EXECUTOR_UNSPECIFIED);
  EXPECT_EQ(ParseExecutor("warp"), std::nullopt);

  auto routing = ParseRouting("io", "");
  ASSERT_TRUE(routing.ok());
  EXPECT_EQ(routing->first, v1::JOB_KIND_IO_BOUND);
  EXPECT_EQ(routing->second, v1::EXECUTOR_UNSPECIFIED);
  routing = ParseRouting("cpu", "process");
  ASSERT_TRUE(routing.ok());
  EXPECT_EQ(routing->second, v1::EXECUTOR_PROCESS);
  EXPECT_EQ(ParseRouting("sideways", "").status(),
            absl::InvalidArgumentError(
                "--kind: 'sideways' is not one of cpu, io, auto"));
  EXPECT_EQ(ParseRouting("auto", "warp").status(),
            absl::InvalidArgumentError(
                "--executor: 'warp' is not one of process, thread, reactor"));
}

TEST(JobctlArgsTest, States) {
  EXPECT_EQ(ParseState("failed"), v1::JOB_STATE_FAILED);
  EXPECT_EQ(ParseState("Running"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ParseState("job_state_waiting"), v1::JOB_STATE_WAITING);
  EXPECT_EQ(ParseState("JOB_STATE_SUCCEEDED"), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(ParseState("unspecified"), std::nullopt);
  EXPECT_EQ(ParseState("bogus"), std::nullopt);
  EXPECT_EQ(ParseState(""), std::nullopt);
  EXPECT_EQ(ParseState("f\xC3\xA9iled"), std::nullopt);
}

TEST(JobctlArgsTest, KeyValuePairs) {
  auto kv = SplitKeyValue("a=b=c");
  ASSERT_TRUE(kv);
  EXPECT_EQ(kv->first, "a");
  EXPECT_EQ(kv->second, "b=c");
  kv = SplitKeyValue("k=");
  ASSERT_TRUE(kv);
  EXPECT_EQ(kv->first, "k");
  EXPECT_EQ(kv->second, "");
  EXPECT_FALSE(SplitKeyValue("=x"));
  EXPECT_FALSE(SplitKeyValue("novalue"));
  EXPECT_FALSE(SplitKeyValue(""));
}

std::string LineJson(std::string_view line) {
  Value v;
  LineToValue(line, &v);
  return client::ToJson(v);
}

TEST(JobctlArgsTest, LinesBecomeJsonValues) {
  Value v;
  LineToValue("", &v);
  EXPECT_EQ(v.kind_case(), Value::kStringValue);
  EXPECT_EQ(v.string_value(), "");
  LineToValue("42", &v);
  EXPECT_EQ(v.kind_case(), Value::kNumberValue);
  EXPECT_EQ(v.number_value(), 42);
  EXPECT_EQ(LineJson("-3"), "-3");
  EXPECT_EQ(LineJson("0.5"), "0.5");
  EXPECT_EQ(LineJson("1e3"), "1000");
  EXPECT_EQ(LineJson("0e1"), "0");
  EXPECT_EQ(LineJson("true"), "true");
  EXPECT_EQ(LineJson("false"), "false");
  EXPECT_EQ(LineJson("null"), "null");
  EXPECT_EQ(LineJson("[1,2]"), "[1,2]");
  EXPECT_EQ(LineJson("{\"x\":1}"), "{\"x\":1}");
  EXPECT_EQ(LineJson("\"q\""), "\"q\"");
  // Not JSON: the text itself.
  EXPECT_EQ(LineJson("007"), "\"007\"");
  EXPECT_EQ(LineJson("-"), "\"-\"");
  EXPECT_EQ(LineJson("plain words"), "\"plain words\"");
  EXPECT_EQ(LineJson("{bad"), "\"{bad\"");
  EXPECT_EQ(LineJson("1e999"), "\"1e999\"");
  EXPECT_EQ(LineJson("True"), "\"True\"");
}

TEST(JobctlArgsTest, BracketedArgumentsAreMarkedAndReversed) {
  const char* argv[] = {"jobctl", "submit", "[1,2]", "[", "[]", "x]"};
  const std::vector<std::string> args = MarkedArgs(6, argv);
  EXPECT_THAT(args, ::testing::ElementsAre(
                        "x]", std::string(1, kMarker) + "[]", "[",
                        std::string(1, kMarker) + "[1,2]", "submit"));
  std::string s = args[3];
  DropMarker(&s);
  EXPECT_EQ(s, "[1,2]");
  DropMarker(&s);  // Only a leading marker goes.
  EXPECT_EQ(s, "[1,2]");
  std::string empty;
  DropMarker(&empty);
  EXPECT_EQ(empty, "");
}

TEST(JobctlArgsTest, EveryOptionGetsABracketedArgumentWhole) {
  // Whatever the command and the option: a value, a list, a global option.
  CLI::App app;
  std::string address, task, quarantined;
  std::vector<std::string> args;
  app.add_option("--address", address);
  CLI::App* submit = app.add_subcommand("submit");
  submit->add_option("task", task);
  submit->add_option("args", args);
  CLI::App* unquarantine = app.add_subcommand("unquarantine");
  unquarantine->add_option("task", quarantined);
  DropMarkersWhileParsing(app);

  const char* submit_argv[] = {"jobctl", "--address", "[::1]", "submit",
                               "[t]",    "[1,2]",     "x",     "[]"};
  std::vector<std::string> marked = MarkedArgs(8, submit_argv);
  app.parse(marked);
  EXPECT_EQ(address, "[::1]");
  EXPECT_EQ(task, "[t]");
  EXPECT_THAT(args, ::testing::ElementsAre("[1,2]", "x", "[]"));

  CLI::App app2;
  CLI::App* unq = app2.add_subcommand("unquarantine");
  unq->add_option("task", quarantined);
  DropMarkersWhileParsing(app2);
  const char* unq_argv[] = {"jobctl", "unquarantine", "[x]"};
  marked = MarkedArgs(3, unq_argv);
  app2.parse(marked);
  EXPECT_EQ(quarantined, "[x]");  // Not "\x01[x]".
}

TEST(JobctlExitCodesTest, StatusCodesMapToExitCodes) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("")), kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("")), kExitTimeout);
  for (const absl::Status& s :
       {absl::InvalidArgumentError(""), absl::NotFoundError(""),
        absl::AlreadyExistsError(""), absl::PermissionDeniedError(""),
        absl::ResourceExhaustedError(""), absl::FailedPreconditionError(""),
        absl::OutOfRangeError(""), absl::UnimplementedError(""),
        absl::UnauthenticatedError("")}) {
    EXPECT_EQ(ExitCodeFor(s), kExitRejected) << s;
  }
  for (const absl::Status& s :
       {absl::CancelledError(""), absl::InternalError(""),
        absl::UnknownError(""), absl::AbortedError(""),
        absl::DataLossError("")}) {
    EXPECT_EQ(ExitCodeFor(s), kExitJobFailed) << s;
  }
  EXPECT_EQ(JobExitCode(v1::JOB_STATE_SUCCEEDED), kExitOk);
  EXPECT_EQ(JobExitCode(v1::JOB_STATE_FAILED), kExitJobFailed);
  EXPECT_EQ(JobExitCode(v1::JOB_STATE_CANCELLED), kExitJobFailed);
  EXPECT_EQ(JobExitCode(v1::JOB_STATE_RUNNING), kExitTimeout);
  EXPECT_EQ(JobExitCode(v1::JOB_STATE_QUEUED), kExitTimeout);
}

TEST(JobctlExitCodesTest, TheMostSevereWins) {
  // 3 > 5 > 4 > 1 > 0, in either order.
  const int order[] = {kExitOk, kExitJobFailed, kExitRejected, kExitTimeout,
                       kExitUnavailable};
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(Worst(order[i], order[j]), order[std::max(i, j)]) << i << j;
    }
  }
  EXPECT_EQ(Worst(kExitUnavailable, kExitUsage), kExitUsage);
  EXPECT_EQ(Worst(kExitInterrupted, kExitUnavailable), kExitInterrupted);
}

TEST(JobctlExitCodesTest, ErrorsGoToStderrWithTheProgramName) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Usage("--window: must be > 0"), kExitUsage);
  EXPECT_EQ(Fail(absl::NotFoundError("job 7 not found")), kExitRejected);
  PrintError("plain");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "jobctl: --window: must be > 0\n"
            "jobctl: job 7 not found\n"
            "jobctl: plain\n");
  EXPECT_EQ(Msg(absl::InternalError("why")), "why");
}

}  // namespace
}  // namespace jobd::jobctl
