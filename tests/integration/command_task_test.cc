// Integration tests of command tasks ([[task]] tables in the config file)
// through the real daemon: arguments arrive as literal argv elements
// whatever they hold, stdin and the result forms, failures (exit code,
// signal, stderr), the timeout killing the whole tree, CPU-bound ones held
// to the process pool's slots, malformed tables refused at start and at
// SIGHUP, and reload (added, changed, removed; running jobs finish on
// their old definition).
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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

using testing::Daemon;
using ::testing::HasSubstr;
using testing::KwSpec;
using ::testing::Not;
using testing::Num;
using testing::RunOne;
using testing::Str;
using testing::SubmitAll;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTasks[] = R"(
[[task]]
name = "argv"
description = "Prints its arguments NUL-separated"
command = ["/usr/bin/printf", "%s\\000", "{a}", "pre-{b}-post", "{c}"]
params = { a = "string", b = "string", c = "string = '-n'" }
result = "bytes"

[[task]]
name = "upper"
command = ["/usr/bin/tr", "a-z", "A-Z"]

[[task]]
name = "json"
command = ["/bin/echo", "{{\"n\": {n}, \"ok\": {ok}}}"]
params = { n = "int", ok = "bool = true" }
result = "json"

[[task]]
name = "cat"
command = ["/bin/cat"]
params = { text = "string" }
stdin = "text"
result = "bytes"

[[task]]
name = "oops"
command = ["/bin/sh", "-c", "echo \"$1\" >&2; exit 3", "sh", "{msg}"]
params = { msg = "string" }

[[task]]
name = "segv"
command = ["/bin/sh", "-c", "kill -SEGV $$"]

[[task]]
name = "tree"
command = ["/bin/sh", "-c", "setsid /bin/sh -c ': > \"$0\"; sleep 300' \"$1\" & wait", "sh", "{marker}"]
params = { marker = "string" }
timeout = "1s"

[[task]]
name = "busy"
command = ["/bin/sh", "-c", "mkdir \"$1/run.$$\"; ls \"$1\" | grep -c '^run' > \"$1/seen.$$\"; sleep 0.05; rmdir \"$1/run.$$\"", "sh", "{dir}"]
params = { dir = "string" }
kind = "cpu"
)";

class CommandTaskTest : public ::testing::Test {
 protected:
  void Start(const std::string& toml, std::vector<std::string> args = {}) {
    config_ = dir_.path() + "/jobd.toml";
    std::ofstream(config_) << toml;
    args.insert(args.end(), {"--config", config_, "--log-level", "info"});
    auto d = Daemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }
  v1::JobEvent Run(v1::JobSpec spec) { return RunOne(*stub_, spec); }
  std::vector<std::string> TaskNames() {
    grpc::ClientContext ctx;
    testing::Deadline(ctx);
    v1::ListTasksResponse r;
    EXPECT_TRUE(stub_->ListTasks(&ctx, {}, &r).ok());
    std::vector<std::string> names;
    for (const v1::TaskInfo& t : r.tasks()) names.push_back(t.name());
    return names;
  }
  // Rewrites the config file, sends SIGHUP and waits for the log line
  // `marker` (its count-th appearance).
  void Reload(const std::string& toml, const std::string& marker, int count) {
    std::ofstream(config_) << toml;
    ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
    ASSERT_TRUE(WaitFor([&] {
      const std::string log = daemon_->Log();
      int n = 0;
      for (size_t at = log.find(marker); at != std::string::npos;
           at = log.find(marker, at + 1)) {
        ++n;
      }
      return n >= count;
    })) << daemon_->Log();
  }

  TempDir dir_{"jobd-command-test"};
  std::string config_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(CommandTaskTest, ArgumentsArriveAsLiteralArgvElements) {
  Start(kTasks);
  const std::string a = "two words 'single' \"double\" ; rm -rf / $(id) `id`";
  const std::string b = "line one\nline two\t$HOME";
  v1::JobEvent e =
      Run(KwSpec("argv", {{"a", Str(a)}, {"b", Str(b)}, {"c", Str("--help")}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().payload(),
            absl::StrCat(a, std::string(1, '\0'), "pre-", b, "-post",
                         std::string(1, '\0'), "--help", std::string(1, '\0')));
  // Positional binding in the declared order, and the default.
  v1::JobSpec positional = KwSpec("argv", {});
  positional.add_args()->set_string_value("-x");
  positional.add_args()->set_string_value("");
  e = Run(positional);
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().payload(), std::string("-x\0pre--post\0-n\0", 16));
  // The same field-naming errors as built-in tasks.
  e = Run(KwSpec("argv", {{"a", Num(1)}, {"b", Str("")}}));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_EQ(e.error().message(), "spec.kwargs.a: expected string, got number");
  e = Run(KwSpec("argv",
                 {{"a", Str(std::string("nul\0byte", 8))}, {"b", Str("")}}));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_THAT(e.error().message(), HasSubstr("a: holds a NUL byte"));
}

TEST_F(CommandTaskTest, StdinAndTheThreeResultForms) {
  Start(kTasks);
  v1::JobSpec upper = KwSpec("upper", {});
  upper.set_payload("from the payload");
  v1::JobEvent e = Run(upper);
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().value().string_value(), "FROM THE PAYLOAD");
  EXPECT_EQ(e.executor(), v1::EXECUTOR_REACTOR);

  e = Run(KwSpec("json", {{"n", Num(42)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  const auto& f = e.result().value().struct_value().fields();
  EXPECT_EQ(f.at("n").number_value(), 42);
  EXPECT_TRUE(f.at("ok").bool_value());

  const std::string text("raw\0 bytes \xc3\xa9", 13);
  e = Run(KwSpec("cat", {{"text", Str(text)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().payload(), text);
  EXPECT_EQ(e.result().value().kind_case(),
            google::protobuf::Value::kNullValue);
}

TEST_F(CommandTaskTest, FailuresReportExitCodeSignalAndStderr) {
  Start(kTasks);
  v1::JobEvent e = Run(KwSpec("oops", {{"msg", Str("it broke")}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_THAT(e.error().message(), HasSubstr("exited with code 3"));
  EXPECT_THAT(e.error().message(), HasSubstr("stderr: it broke"));
  // Only the tail of a long stderr.
  e = Run(KwSpec("oops", {{"msg", Str(std::string(100000, 'x') + "END")}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_THAT(e.error().message(), HasSubstr("xxxEND"));
  EXPECT_LT(e.error().message().size(), 4096u);
  e = Run(KwSpec("segv", {}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_THAT(e.error().message(), HasSubstr("killed by signal SIGSEGV"));
}

TEST_F(CommandTaskTest, TimeoutKillsTheWholeTree) {
  Start(kTasks);
  // The grandchild (in a session of its own, out of the program's process
  // group) has the marker in its argv and creates it when it runs.
  const std::string marker = dir_.path() + "/grandchild.61.0943";
  const v1::JobEvent e = Run(KwSpec("tree", {{"marker", Str(marker)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_THAT(e.error().message(), HasSubstr("timeout of 1s"));
  EXPECT_TRUE(std::filesystem::exists(marker)) << "the grandchild never ran";
  EXPECT_TRUE(WaitFor([&] { return testing::PidsWithArg(marker).empty(); },
                      absl::Seconds(5)))
      << "the grandchild still runs";
}

TEST_F(CommandTaskTest, CpuBoundRunsNeverExceedThePoolSlots) {
  Start(kTasks, {"--process-workers", "2"});
  const std::string runs = dir_.path() + "/runs";
  ASSERT_EQ(mkdir(runs.c_str(), 0700), 0);
  v1::JobSpec busy = KwSpec("busy", {{"dir", Str(runs)}});
  busy.set_kind(v1::JOB_KIND_AUTO);  // Its declared kind: cpu.
  const std::vector<v1::JobSpec> specs(200, busy);
  const testing::StreamResult r = SubmitAll(*stub_, specs);
  const std::vector<v1::JobEvent> ends = r.Terminal();
  ASSERT_EQ(ends.size(), 200u) << r.status.error_message();
  for (const v1::JobEvent& e : ends) {
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
    EXPECT_EQ(e.executor(), v1::EXECUTOR_PROCESS);
  }
  int seen = 0, most = 0;
  for (const auto& entry : std::filesystem::directory_iterator(runs)) {
    std::ifstream in(entry.path());
    int n = 0;
    ASSERT_TRUE(in >> n) << entry.path();
    most = std::max(most, n);
    ++seen;
  }
  EXPECT_EQ(seen, 200);
  EXPECT_EQ(most, 2);  // Both slots used, never more.
}

TEST_F(CommandTaskTest, CpuBoundNeedsAProcessPool) {
  Start(kTasks, {"--process-workers", "0"});
  v1::JobSpec busy = KwSpec("busy", {{"dir", Str(dir_.path())}});
  busy.set_kind(v1::JOB_KIND_CPU_BOUND);
  v1::JobEvent e = Run(busy);
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_THAT(e.error().message(), HasSubstr("no process pool"));
}

TEST_F(CommandTaskTest, ListedWithTheirParameters) {
  Start(kTasks);
  grpc::ClientContext ctx;
  testing::Deadline(ctx);
  v1::ListTasksResponse r;
  ASSERT_TRUE(stub_->ListTasks(&ctx, {}, &r).ok());
  const v1::TaskInfo* argv = nullptr;
  for (const v1::TaskInfo& t : r.tasks()) {
    if (t.name() == "argv") argv = &t;
  }
  ASSERT_NE(argv, nullptr);
  EXPECT_THAT(argv->description(),
              HasSubstr("Prints its arguments NUL-separated"));
  ASSERT_EQ(argv->params_size(), 3);
  EXPECT_EQ(argv->params(0).name(), "a");
  EXPECT_EQ(argv->params(2).name(), "c");
  EXPECT_FALSE(argv->params(2).required());
}

// A [[task]]'s `retries` is how often its jobs are retried after their
// first run: a spec asking for a number wins, and so does --task-retries.
TEST_F(CommandTaskTest, RetriesInTheTableAreTheTasksDefault) {
  const std::string ledger = dir_.path() + "/runs";
  Start(std::string(kTasks) + R"(
[[task]]
name = "flaky"
command = ["/bin/sh", "-c", "echo run >> \"$1\"; exit 3", "sh", "{ledger}"]
params = { ledger = "string" }
retries = 2
)",
        {"--retry-initial-backoff", "1ms", "--task-retries", "oops=1"});
  auto runs = [&] {
    std::ifstream in(ledger);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  v1::JobEvent e = Run(KwSpec("flaky", {{"ledger", Str(ledger)}}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(runs(), 3);
  v1::JobSpec once = KwSpec("flaky", {{"ledger", Str(ledger)}});
  once.mutable_retry()->set_max_attempts(1);
  e = Run(once);
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(runs(), 4);
  // A task without `retries` keeps --task-retries.
  grpc::ClientContext ctx;
  testing::Deadline(ctx);
  v1::GetJobRequest get;
  e = Run(KwSpec("oops", {{"msg", Str("x")}}));
  get.set_job_id(e.job_id());
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&ctx, get, &job).ok());
  EXPECT_EQ(job.attempts(), 2u);
}

TEST(CommandTaskStartTest, MalformedTablesAreRefusedNamingTheLine) {
  TempDir dir("jobd-command-test");
  const std::string config = dir.path() + "/jobd.toml";
  struct Case {
    std::string toml, error;
  } cases[] = {
      {"\n[[task]]\nname = \"x\"\ncommand = [\"/bin/echo\", \"{y}\"]\n",
       "task 'x' (line 2): command[1]: unknown placeholder {y}"},
      {"[[task]]\nname = \"x\"\ncommand = [\"/bin/echo\", \"{y}\"]\n"
       "params = { y = \"float\" }\n",
       "task 'x' (line 4): params.y: unknown type 'float'"},
      {"[[task]]\nname = \"x\"\ncommand = [\"echo\"]\n",
       "task 'x' (line 1): command[0]: 'echo' is not an absolute path"},
      {"[[task]]\nname = \"echo\"\ncommand = [\"/bin/echo\"]\n",
       "task 'echo' (line 1): the name is taken by a built-in"},
      {"[[task]]\nname = \"x\"\ncommand = [\"/bin/echo\"]\nretries = -1\n",
       "task 'x' (line 4): retries: must be an integer number of retries "
       "between 0 and 999"},
      {"[[task]]\nname = \"x\"\ncommand = [\"/bin/echo\"]\nretries = 10\n",
       "[[task]] 'x': retries = 10 makes more runs than "
       "--retry-max-attempts-limit (10)"},
  };
  for (const Case& c : cases) {
    std::ofstream(config) << c.toml;
    const testing::CommandResult r = testing::RunCommand(
        {testing::JobdPath(), "--config", config, "--unix-socket",
         dir.path() + "/s.sock", "--tcp", "none", "--durability", "none"});
    EXPECT_NE(r.exit_code, 0) << c.toml;
    EXPECT_THAT(r.err, HasSubstr(c.error)) << c.toml;
  }
}

TEST_F(CommandTaskTest, SighupAddsChangesAndRemovesKeepingRunningJobs) {
  const std::string v1_tasks = R"(
[[task]]
name = "version"
command = ["/bin/sh", "-c", "sleep \"$1\"; echo old", "sh", "{s}"]
params = { s = "string = '0'" }

[[task]]
name = "doomed"
command = ["/bin/echo", "doomed"]
)";
  Start(v1_tasks);
  EXPECT_THAT(TaskNames(), ::testing::IsSupersetOf({"version", "doomed"}));

  // A malformed table: refused with its line, the old set stays.
  Reload(v1_tasks +
             "\n[[task]]\nname = \"bad\"\ncommand = [\"/bin/echo\", "
             "\"{nope}\"]\n",
         "does not parse", 1);
  EXPECT_THAT(daemon_->Log(), HasSubstr("task 'bad' (line 11): command[1]: "
                                        "unknown placeholder {nope}"));
  EXPECT_THAT(TaskNames(), ::testing::IsSupersetOf({"version", "doomed"}));
  EXPECT_THAT(TaskNames(), Not(::testing::Contains("bad")));
  // A built-in's name: the other settings apply, the tasks stay as they were.
  Reload(v1_tasks + "\n[[task]]\nname = \"echo\"\ncommand = [\"/bin/echo\"]\n",
         "refused the [[task]] tables", 1);
  EXPECT_THAT(daemon_->Log(),
              HasSubstr("task 'echo' (line 11): the name is taken by a "
                        "built-in"));
  EXPECT_THAT(TaskNames(), ::testing::IsSupersetOf({"version", "doomed"}));

  // A job of the old definition, running across the reload.
  grpc::ClientContext ctx;
  testing::Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  v1::SubmitRequest req =
      testing::SubmitRequestOf({KwSpec("version", {{"s", Str("1.5")}})});
  ASSERT_TRUE(stream->Write(req));
  v1::SubmitResponse resp;
  bool started = false;
  while (!started && stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      started |= e.type() == v1::EVENT_TYPE_STARTED;
    }
  }
  ASSERT_TRUE(started);

  Reload(R"(
[[task]]
name = "version"
command = ["/bin/echo", "new"]

[[task]]
name = "fresh"
command = ["/bin/echo", "fresh"]
)",
         "command tasks added: fresh", 1);
  const std::string log = daemon_->Log();
  EXPECT_THAT(log, HasSubstr("command tasks changed: version"));
  EXPECT_THAT(log, HasSubstr("command tasks removed: doomed"));
  EXPECT_THAT(TaskNames(), ::testing::IsSupersetOf({"version", "fresh"}));
  EXPECT_THAT(TaskNames(), Not(::testing::Contains("doomed")));

  // The job admitted before ends on its old definition.
  stream->WritesDone();
  std::string result;
  while (result.empty() && stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_SUCCEEDED) {
        result = e.result().value().string_value();
      } else if (e.type() == v1::EVENT_TYPE_FAILED) {
        result = "FAILED: " + e.error().message();
      }
    }
  }
  EXPECT_EQ(result, "old\n");
  stream->Finish();
  // New jobs run the new one.
  const v1::JobEvent e = Run(KwSpec("version", {}));
  EXPECT_EQ(e.result().value().string_value(), "new\n");
  EXPECT_EQ(Run(KwSpec("fresh", {})).result().value().string_value(),
            "fresh\n");
  EXPECT_EQ(Run(KwSpec("doomed", {})).type(), v1::EVENT_TYPE_REJECTED);
}

}  // namespace
}  // namespace jobd
