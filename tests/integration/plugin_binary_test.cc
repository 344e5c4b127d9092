// Task plugins and the jobd binary: a plugin jobd must refuse stops its
// start (exit status 1, the plugin's path and the reason in the log),
// plugins from --plugin-dir (here set in the config file) run in the
// process pool whose fork server main() forked, and the installed SDK
// builds the example plugin out of jobd's tree, which jobd then loads.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/test_plugins.h"
#include "workers/sdk/plugin.h"

namespace jobd::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

struct Refused {
  std::vector<std::string> plugins;  // In order; the last one is refused.
  std::string reason;
  friend void PrintTo(const Refused& r, std::ostream* os) { *os << r.reason; }
};

class RefusedPluginTest : public ::testing::TestWithParam<Refused> {};

// Both places that load plugins refuse it: main() before it forks the fork
// server (process workers), and the daemon's start (no process pool).
TEST_P(RefusedPluginTest, JobdDoesNotStart) {
  TempDir dir;
  std::string not_elf = dir.path() + "/not-elf.so";
  std::ofstream(not_elf) << "#!/bin/sh\n";
  for (const char* workers : {"2", "0"}) {
    std::vector<std::string> extra = {"--process-workers", workers};
    std::string refused;
    for (std::string p : GetParam().plugins) {
      if (p == "NOT_ELF") p = not_elf;
      extra.insert(extra.end(), {"--plugin", p});
      refused = p;
    }
    const CommandResult r = RunCommand(
        DaemonArgs(JobdPath(), dir.path(), extra), "", absl::Seconds(20));
    EXPECT_EQ(r.exit_code, 1) << workers << " workers: " << r.err;
    EXPECT_THAT(r.err, AllOf(HasSubstr("plugin " + refused + ": "),
                             HasSubstr(GetParam().reason)))
        << workers << " workers";
    EXPECT_THAT(r.out, Not(HasSubstr("ready")));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Each, RefusedPluginTest,
    ::testing::Values(
        Refused{{"/nonexistent/plugin.so"}, "No such file or directory"},
        Refused{{"NOT_ELF"}, "cannot load it"},
        Refused{{TestPlugin("bad_no_entry")}, "not a jobd plugin"},
        Refused{{TestPlugin("bad_fails")}, "the license server is unreachable"},
        Refused{{TestPlugin("bad_throws")}, "its registration threw"},
        Refused{{TestPlugin("bad_dup_builtin")},
                "task 'echo' is already registered"},
        Refused{{TestPlugin("plugintest"), TestPlugin("bad_dup_plugin")},
                "task 'plugintest.echo' is already registered"},
        Refused{
            {TestPlugin("bad_abi")},
            absl::StrCat("built for SDK 99.", kSdkVersionMinor, " (C++ ABI")}));

TEST(PluginBinaryTest, PluginDirectoryThatIsNoDirectoryIsAConfigError) {
  TempDir dir;
  const CommandResult r =
      RunCommand(DaemonArgs(JobdPath(), dir.path(),
                            {"--plugin-dir", dir.path() + "/missing"}),
                 "", absl::Seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(
      r.err, AllOf(HasSubstr("--plugin-dir"), HasSubstr("is not a directory")));
}

// The fork server main() forked (not re-executed) has the plugins too.
TEST(PluginBinaryTest, PluginDirectoryFromTheConfigFileRunsInTheProcessPool) {
  TempDir dir;
  const std::string plugins = dir.path() + "/plugins";
  std::filesystem::create_directory(plugins);
  std::filesystem::create_symlink(JOBD_TEXTSTATS_PLUGIN,
                                  plugins + "/10-textstats.so");
  std::filesystem::create_symlink(TestPlugin("plugintest"),
                                  plugins + "/20-plugintest.so");
  const std::string config = dir.path() + "/jobd.toml";
  std::ofstream(config) << "plugin-dir = \"" << plugins << "\"\n"
                        << "process-workers = 2\n";
  const std::string text = dir.path() + "/text.txt";
  std::ofstream(text) << "one two\nthree\n";

  auto d = Daemon::Start({"--config", config});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT((*d)->Log(),
              AllOf(HasSubstr("plugin " + plugins + "/10-textstats.so: 3 "),
                    HasSubstr("plugin " + plugins + "/20-plugintest.so: 3 ")));
  auto stub = (*d)->NewStub();
  v1::JobEvent end = RunOne(
      *stub, PluginSpec("textstats.count", {text}, v1::EXECUTOR_PROCESS));
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
  EXPECT_EQ(
      end.result().value().struct_value().fields().at("words").number_value(),
      3);
  end = RunOne(*stub, PluginSpec("plugintest.crash", {}, v1::EXECUTOR_PROCESS));
  EXPECT_EQ(end.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(end.error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
  end = RunOne(*stub, PluginSpec("plugintest.echo", {"still here"},
                                 v1::EXECUTOR_PROCESS));
  EXPECT_EQ(end.result().value().string_value(), "still here");
}

// What the README tells a plugin author to do, from an installed SDK: the
// build tree's SDK installed into a temp prefix, the example plugin
// configured and built there against it, and loaded into jobd.
TEST(PluginBinaryTest, ExampleBuildsOutOfTreeAgainstTheInstalledSdk) {
  TempDir dir;
  const std::string prefix = dir.path() + "/prefix";
  const std::string build = dir.path() + "/build";
  // ccache hits across runs: paths in the temp dir are rewritten relative.
  const std::vector<std::string> env = {"CCACHE_BASEDIR=" + dir.path(),
                                        "CCACHE_NOHASHDIR=1"};
  CommandResult r =
      RunCommand({JOBD_TEST_CMAKE, "--install", JOBD_TEST_BINARY_DIR,
                  "--prefix", prefix, "--component", "sdk"},
                 "", absl::Seconds(60), env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(
      std::filesystem::exists(prefix + "/include/jobd/workers/sdk/plugin.h"));
  EXPECT_TRUE(
      std::filesystem::exists(prefix + "/include/jobd/jobd/v1/jobd.pb.h"));
  EXPECT_FALSE(std::filesystem::exists(prefix + "/bin/jobd"));  // SDK only.

  std::vector<std::string> configure = {
      JOBD_TEST_CMAKE,
      "-S",
      std::string(JOBD_TEST_SOURCE_DIR) + "/examples/plugins/textstats",
      "-B",
      build,
      "-G",
      JOBD_TEST_CMAKE_GENERATOR,
      "-DCMAKE_PREFIX_PATH=" + prefix,
      "-DCMAKE_CXX_COMPILER=" JOBD_TEST_CXX,
      "-DCMAKE_CXX_FLAGS=-Wall -Werror"};
  if (std::filesystem::exists("/usr/bin/ccache")) {
    configure.push_back("-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/ccache");
  }
  r = RunCommand(configure, "", absl::Seconds(60), env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = RunCommand({JOBD_TEST_CMAKE, "--build", build, "-j2"}, "",
                 absl::Seconds(150), env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string plugin = build + "/libtextstats.so";
  ASSERT_TRUE(std::filesystem::exists(plugin));

  const std::string text = dir.path() + "/text.txt";
  std::ofstream(text) << "a b c\n";
  auto d = Daemon::Start({"--plugin", plugin, "--process-workers", "1"});
  ASSERT_TRUE(d.ok()) << d.status();
  auto stub = (*d)->NewStub();
  for (v1::Executor e : {v1::EXECUTOR_PROCESS, v1::EXECUTOR_THREAD}) {
    const v1::JobEvent end =
        RunOne(*stub, PluginSpec("textstats.count", {text}, e));
    ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
    EXPECT_EQ(
        end.result().value().struct_value().fields().at("words").number_value(),
        3);
  }
  v1::JobSpec timer =
      PluginSpec("textstats.size_after", {text}, v1::EXECUTOR_REACTOR);
  timer.set_kind(v1::JOB_KIND_IO_BOUND);
  timer.add_args()->set_number_value(1);
  const v1::JobEvent end = RunOne(*stub, timer);
  ASSERT_EQ(end.type(), v1::EVENT_TYPE_SUCCEEDED) << end.DebugString();
  EXPECT_EQ(end.result().value().number_value(), 6);
}

}  // namespace
}  // namespace jobd::testing
