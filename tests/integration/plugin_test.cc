// Task plugins in a whole daemon (in this process: in_process_daemon.h,
// whose process pool re-executes jobd as its fork server with the same
// --plugin flags): every form of the example plugin on every executor it
// allows, and a plugin task that crashes its worker failing only its job.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"
#include "tests/integration/test_plugins.h"

namespace jobd::testing {
namespace {

using ::testing::HasSubstr;

const std::string kPluginTest = TestPlugin("plugintest");

class PluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A text file of 3 lines, 6 words.
    text_ = dir_.path() + "/text.txt";
    std::ofstream(text_) << "alpha beta\ngamma delta\nepsilon zeta\n";
    auto d =
        InProcessDaemon::Start({"--plugin", JOBD_TEXTSTATS_PLUGIN, "--plugin",
                                kPluginTest, "--process-workers", "2"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }

  // The job's latest progress message as ListJobs shows it (one job of
  // `task` is expected).
  std::string ProgressOf(const std::string& task) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListJobsRequest req;
    req.set_task(task);
    v1::ListJobsResponse resp;
    if (!stub_->ListJobs(&ctx, req, &resp).ok() || resp.jobs_size() != 1) {
      return "";
    }
    return resp.jobs(0).progress().message();
  }

  TempDir dir_{"jobd-plugin-test"};
  std::string text_;
  std::unique_ptr<InProcessDaemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(PluginTest, SyncTaskRunsOnTheThreadPoolAndInTheProcessPool) {
  for (v1::Executor executor : {v1::EXECUTOR_THREAD, v1::EXECUTOR_PROCESS}) {
    const v1::JobEvent end =
        RunOne(*stub_, PluginSpec("textstats.count", {text_}, executor));
    ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED)
        << v1::Executor_Name(executor) << ": " << end.DebugString();
    EXPECT_EQ(end.executor(), executor);
    const auto& f = end.result().value().struct_value().fields();
    EXPECT_EQ(f.at("lines").number_value(), 3);
    EXPECT_EQ(f.at("words").number_value(), 6);
    EXPECT_EQ(f.at("bytes").number_value(), 36);
    EXPECT_EQ(f.at("longest_line").number_value(), 12);
  }
  // A missing file fails the job with the task's message, in either place.
  const v1::JobEvent missing =
      RunOne(*stub_, PluginSpec("textstats.count", {dir_.path() + "/none"},
                                v1::EXECUTOR_PROCESS));
  EXPECT_EQ(missing.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_THAT(missing.error().message(), HasSubstr("No such file"));
}

// The coroutine waits on a steady_timer of the reactor's own io_context:
// had the plugin its own copy of Asio's services, the timer would be served
// by a reactor nobody runs and the job would never end.
TEST_F(PluginTest, CoroutineTaskAwaitsOnTheReactor) {
  const std::string log = dir_.path() + "/app.log";
  std::ofstream(log) << "starting\n";
  v1::JobSpec spec =
      PluginSpec("textstats.wait_for", {log, "READY"}, v1::EXECUTOR_REACTOR);
  spec.set_kind(v1::JOB_KIND_IO_BOUND);
  (*spec.mutable_kwargs()->mutable_fields())["poll_ms"].set_number_value(20);
  v1::JobEvent end;
  std::thread client([&] { end = RunOne(*stub_, spec); });
  // Once it has looked and found nothing (its progress says so), the line
  // it waits for is written.
  const bool waiting = WaitFor([&] {
    return ProgressOf("textstats.wait_for").find("not yet") !=
           std::string::npos;
  });
  std::ofstream(log, std::ios::app) << "noise\nserver READY on :8080\n";
  client.join();
  ASSERT_TRUE(waiting);
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
  EXPECT_EQ(end.executor(), v1::EXECUTOR_REACTOR);
  const auto& f = end.result().value().struct_value().fields();
  EXPECT_EQ(f.at("line").number_value(), 3);
  EXPECT_EQ(f.at("text").string_value(), "server READY on :8080");
  EXPECT_GE(f.at("looks").number_value(), 2);  // It slept on the timer.
}

// Asio's thread-local state is jobd's: in the plugin, the reactor's
// io_context knows it runs on this thread (Asio's thread-local call stack,
// which the plugin's inline Asio code reads, is the one jobd's loop set).
TEST_F(PluginTest, PluginSharesAsioStateWithJobd) {
  v1::JobSpec spec = PluginSpec("plugintest.on_loop", {}, v1::EXECUTOR_REACTOR);
  spec.set_kind(v1::JOB_KIND_IO_BOUND);
  const v1::JobEvent end = RunOne(*stub_, spec);
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
  EXPECT_TRUE(end.result().value().bool_value());
}

TEST_F(PluginTest, CoroutineTaskEndsAtItsTimeoutWhileItWaits) {
  v1::JobSpec spec =
      PluginSpec("textstats.wait_for", {dir_.path() + "/never", "X"},
                 v1::EXECUTOR_REACTOR);
  spec.set_kind(v1::JOB_KIND_IO_BOUND);
  spec.mutable_timeout()->set_nanos(200000000);  // 200 ms.
  const v1::JobEvent end = RunOne(*stub_, spec);
  EXPECT_EQ(end.type(), v1::EVENT_TYPE_FAILED) << end.DebugString();
  EXPECT_EQ(end.error().reason(), v1::ERROR_REASON_TIMEOUT);
}

TEST_F(PluginTest, TimerTaskRunsOnTheReactor) {
  v1::JobSpec spec =
      PluginSpec("textstats.size_after", {text_}, v1::EXECUTOR_REACTOR);
  spec.set_kind(v1::JOB_KIND_IO_BOUND);
  spec.add_args()->set_number_value(50);
  const absl::Time start = absl::Now();
  const v1::JobEvent end = RunOne(*stub_, spec);
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_EQ(end.result().value().number_value(), 36);
}

TEST_F(PluginTest, CrashingPluginTaskFailsOnlyItsJob) {
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 6; ++i) {
    specs.push_back(
        PluginSpec("plugintest.echo", {"hi"}, v1::EXECUTOR_PROCESS));
  }
  specs[3] = PluginSpec("plugintest.crash", {}, v1::EXECUTOR_PROCESS);
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_EQ(r.Terminal().size(), specs.size());
  for (const v1::JobEvent& e : r.Terminal()) {
    if (e.client_tag() == 4) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
      EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
    } else {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.DebugString();
      EXPECT_EQ(e.result().value().string_value(), "hi");
    }
  }
  // The pool goes on: the next plugin job runs in a fresh worker.
  const v1::JobEvent after = RunOne(
      *stub_, PluginSpec("textstats.count", {text_}, v1::EXECUTOR_PROCESS));
  EXPECT_EQ(after.type(), v1::EVENT_TYPE_SUCCEEDED) << after.DebugString();
}

}  // namespace
}  // namespace jobd::testing
