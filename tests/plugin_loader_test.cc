// The plugin loader (workers/plugins/plugin_loader.h) on real shared
// objects: the example plugin and the test plugins of tests/plugins/,
// loaded into this executable, which exports the SDK as jobd does.
#include "workers/plugins/plugin_loader.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/sdk/plugin.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TestPlugin(const std::string& name) {
  return std::string(JOBD_TEST_PLUGIN_DIR) + "/" + name + ".so";
}

// A scratch directory, removed with its files.
class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/plugin-loader-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content) {
    const std::string file = path_ + "/" + name;
    std::ofstream(file) << content;
    return file;
  }

 private:
  std::string path_;
};

class PluginLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(registry_, {}).ok());
  }
  // The refusal of `path`, which must be FailedPrecondition naming it.
  std::string Refusal(const std::string& path) {
    absl::StatusOr<std::vector<std::string>> r = LoadPlugin(path, registry_);
    EXPECT_FALSE(r.ok()) << path;
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("plugin " + path + ": "));
    return std::string(r.status().message());
  }
  TaskRegistry registry_;
};

TEST_F(PluginLoaderTest, LoadsTheExampleWithEveryForm) {
  absl::StatusOr<std::vector<std::string>> added =
      LoadPlugin(JOBD_TEXTSTATS_PLUGIN, registry_);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_THAT(*added, ElementsAre("textstats.count", "textstats.size_after",
                                  "textstats.wait_for"));
  const TaskDef* count = registry_.Find("textstats.count");
  ASSERT_NE(count, nullptr);
  EXPECT_TRUE(count->has_sync());
  EXPECT_FALSE(count->has_async());
  EXPECT_EQ(count->default_kind, v1::JOB_KIND_CPU_BOUND);
  EXPECT_THAT(count->description, HasSubstr("lines, words"));
  ASSERT_EQ(count->params.size(), 1u);
  EXPECT_EQ(count->params[0].name, "path");
  const TaskDef* wait_for = registry_.Find("textstats.wait_for");
  ASSERT_NE(wait_for, nullptr);
  ASSERT_TRUE(wait_for->has_async());
  EXPECT_TRUE(static_cast<bool>(wait_for->async->run));  // A coroutine.
  const TaskDef* size_after = registry_.Find("textstats.size_after");
  ASSERT_NE(size_after, nullptr);
  ASSERT_TRUE(size_after->has_async());
  EXPECT_FALSE(static_cast<bool>(size_after->async->run));  // A timer.
  EXPECT_TRUE(size_after->async->valid());
}

// Runs textstats.count on `file`, recording its progress.
absl::StatusOr<TaskOutput> RunCount(const TaskDef& task,
                                    const std::string& file,
                                    CancelToken& cancel,
                                    std::vector<double>& progress) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task(task.name);
  spec->add_args()->set_string_value(file);
  absl::StatusOr<TaskArgs> args = TaskRegistry::Bind(task, spec);
  if (!args.ok()) return args.status();
  TaskContext ctx(*args, cancel, absl::InfiniteFuture(),
                  [&](double f, std::string_view) { progress.push_back(f); });
  return task.run(ctx);
}

TEST_F(PluginLoaderTest, SyncTaskReportsProgressAndStopsWhenCancelled) {
  ASSERT_TRUE(LoadPlugin(JOBD_TEXTSTATS_PLUGIN, registry_).ok());
  const TaskDef& count = *registry_.Find("textstats.count");
  ScratchDir dir;
  std::string text;
  for (int i = 0; i < 100000; ++i) text += "one two three\n";  // 1.4 MB.
  const std::string file = dir.Write("text.txt", text);

  CancelToken live;
  std::vector<double> progress;
  absl::StatusOr<TaskOutput> out = RunCount(count, file, live, progress);
  ASSERT_TRUE(out.ok()) << out.status();
  const auto& f = out->value.struct_value().fields();
  EXPECT_EQ(f.at("lines").number_value(), 100000);
  EXPECT_EQ(f.at("words").number_value(), 300000);
  EXPECT_EQ(f.at("bytes").number_value(), 1400000);
  EXPECT_EQ(f.at("longest_line").number_value(), 13);
  ASSERT_GE(progress.size(), 5u);  // One per 256 KiB chunk.
  EXPECT_EQ(progress.back(), 1.0);
  EXPECT_LT(progress.front(), 0.5);

  CancelToken cancelled;
  cancelled.Cancel(CancelReason::kCancelled);
  progress.clear();
  out = RunCount(count, file, cancelled, progress);
  EXPECT_TRUE(absl::IsCancelled(out.status())) << out.status();
  EXPECT_TRUE(progress.empty());
}

TEST_F(PluginLoaderTest, MissingFileIsRefused) {
  EXPECT_THAT(Refusal("/nonexistent/plugin.so"),
              HasSubstr("No such file or directory"));
}

TEST_F(PluginLoaderTest, FileThatIsNotASharedObjectIsRefused) {
  ScratchDir dir;
  const std::string file = dir.Write("text.so", "this is not ELF\n");
  EXPECT_THAT(Refusal(file), HasSubstr("cannot load it"));
}

TEST_F(PluginLoaderTest, SharedObjectWithoutEntryPointIsRefused) {
  EXPECT_THAT(Refusal(TestPlugin("bad_no_entry")),
              AllOf(HasSubstr("not a jobd plugin"), HasSubstr("JOBD_PLUGIN")));
}

TEST_F(PluginLoaderTest, FailingRegistrationIsRefused) {
  EXPECT_THAT(Refusal(TestPlugin("bad_fails")),
              AllOf(HasSubstr("its registration failed"),
                    HasSubstr("the license server is unreachable")));
}

TEST_F(PluginLoaderTest, ThrowingRegistrationIsRefused) {
  EXPECT_THAT(Refusal(TestPlugin("bad_throws")),
              AllOf(HasSubstr("its registration threw"),
                    HasSubstr("/etc/badplugin.conf is bad")));
}

TEST_F(PluginLoaderTest, TaskNameOfABuiltinIsRefused) {
  EXPECT_THAT(Refusal(TestPlugin("bad_dup_builtin")),
              HasSubstr("task 'echo' is already registered"));
}

TEST_F(PluginLoaderTest, TaskNameOfAnotherPluginIsRefused) {
  ASSERT_TRUE(LoadPlugin(TestPlugin("plugintest"), registry_).ok());
  EXPECT_THAT(Refusal(TestPlugin("bad_dup_plugin")),
              HasSubstr("task 'plugintest.echo' is already registered"));
}

TEST_F(PluginLoaderTest, OtherAbiIsRefusedNamingBothVersions) {
  const std::string why = Refusal(TestPlugin("bad_abi"));
  EXPECT_THAT(
      why, AllOf(HasSubstr(absl::StrCat("built for SDK 99.", kSdkVersionMinor)),
                 HasSubstr("protobuf 3.0.0"),
                 HasSubstr(absl::StrCat("this jobd is SDK ", kSdkVersionMajor,
                                        ".", kSdkVersionMinor)),
                 HasSubstr("protobuf 3.21.12"),
                 HasSubstr("SDK major version, protobuf")));
  // Refused before its code ran: it registered nothing.
  EXPECT_EQ(registry_.Find("badplugin.abi"), nullptr);
}

TEST_F(PluginLoaderTest, LoadPluginsStopsAtTheFirstRefusal) {
  absl::Status s = LoadPlugins({TestPlugin("plugintest"),
                                TestPlugin("bad_fails"), JOBD_TEXTSTATS_PLUGIN},
                               registry_, /*log=*/false);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad_fails.so"));
  EXPECT_NE(registry_.Find("plugintest.echo"), nullptr);
  EXPECT_EQ(registry_.Find("textstats.count"), nullptr);
}

TEST(PluginAbiTest, ThisBuildMatchesItself) {
  EXPECT_EQ(AbiDifferences(ThisBuildAbi(), ThisBuildAbi()), "");
  PluginAbi other = ThisBuildAbi();
  other.sizeof_task_def += 8;
  EXPECT_EQ(AbiDifferences(other, ThisBuildAbi()), "sizeof TaskDef");
  other = ThisBuildAbi();
  other.size = 12;  // An older, shorter stamp: only its version is read.
  EXPECT_THAT(DescribeAbi(other), HasSubstr("a stamp of 12 bytes"));
  EXPECT_EQ(AbiDifferences(other, ThisBuildAbi()), "size of PluginAbi");
}

TEST(PluginDirectoryTest, ListsSharedObjectsInNameOrder) {
  ScratchDir dir;
  dir.Write("b.so", "");
  dir.Write("a.so", "");
  dir.Write("notes.txt", "");
  std::filesystem::create_directory(dir.path() + "/c.so");  // Not a file.
  absl::StatusOr<std::vector<std::string>> found =
      ListPluginDirectory(dir.path());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_THAT(*found, ElementsAre(dir.path() + "/a.so", dir.path() + "/b.so"));
  EXPECT_THAT(
      std::string(ListPluginDirectory(dir.path() + "/a.so").status().message()),
      HasSubstr("is not a directory"));
}

}  // namespace
}  // namespace jobd
