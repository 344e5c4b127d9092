// Unit tests of `jobctl top`'s frames (client/jobctl/top_format.h): the
// throughput between samples, cutting lines to the width (UTF-8 kept
// whole), fitting the tables to the height, the order of tasks and jobs.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/jobctl/top_format.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace jobd::jobctl {
namespace {

using google::protobuf::util::TimeUtil;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

v1::ExecutorStats Exec(v1::Executor e, uint32_t workers, uint32_t busy,
                       uint64_t queued, uint64_t completed, uint64_t failed,
                       uint64_t cancelled) {
  v1::ExecutorStats s;
  s.set_executor(e);
  s.set_enabled(true);
  s.set_workers(workers);
  s.set_busy(busy);
  s.set_queued(queued);
  s.set_completed(completed);
  s.set_failed(failed);
  s.set_cancelled(cancelled);
  return s;
}

TopSample Sample(absl::Duration at, uint64_t succeeded, uint64_t failed,
                 uint64_t cancelled) {
  TopSample s;
  s.at = kT0 + at;
  s.stats.set_version("9.9");
  s.stats.set_succeeded(succeeded);
  s.stats.set_failed(failed);
  s.stats.set_cancelled(cancelled);
  *s.stats.add_executors() =
      Exec(v1::EXECUTOR_THREAD, 4, 2, 7, succeeded, failed, cancelled);
  return s;
}

v1::Job Running(const std::string& id, const std::string& task,
                absl::Duration ran, absl::Time now) {
  v1::Job j;
  j.set_id(id);
  j.mutable_spec()->set_task(task);
  j.set_state(v1::JOB_STATE_RUNNING);
  j.set_executor(v1::EXECUTOR_THREAD);
  j.set_owner("alice");
  *j.mutable_start_time() =
      TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(now - ran));
  return j;
}

TEST(TopFormatTest, ThroughputIsEndedJobsOverTheTimeBetweenSamples) {
  const TopSample a = Sample(absl::ZeroDuration(), 10, 1, 0);
  const TopSample b = Sample(absl::Seconds(2), 30, 4, 2);
  // (30 + 4 + 2) - (10 + 1 + 0) = 25 jobs in 2 s.
  EXPECT_DOUBLE_EQ(*EndedPerSecond(a, b), 12.5);
  EXPECT_DOUBLE_EQ(*EndedPerSecond(a, b, v1::EXECUTOR_THREAD), 12.5);
  // Unknown: an executor missing, no time between, counters going down
  // (the daemon restarted).
  EXPECT_FALSE(EndedPerSecond(a, b, v1::EXECUTOR_PROCESS));
  EXPECT_FALSE(EndedPerSecond(a, a));
  EXPECT_FALSE(EndedPerSecond(b, Sample(absl::Seconds(4), 0, 0, 0)));
  EXPECT_EQ(RateText(12.5), "12.5");
  EXPECT_EQ(RateText(0.4), "0.40");
  EXPECT_EQ(RateText(1234.4), "1234");
  EXPECT_EQ(RateText(std::nullopt), "-");
}

TEST(TopFormatTest, ThroughputSpansTheSamplesKept) {
  TopHistory h(3);
  for (int i = 0; i < 5; ++i) {
    h.Add(Sample(absl::Seconds(i), static_cast<uint64_t>(i * i), 0, 0));
  }
  // Kept: the samples at 2, 3, 4 s; (16 - 4) jobs in 2 s.
  ASSERT_EQ(h.size(), 3u);
  EXPECT_DOUBLE_EQ(*EndedPerSecond(h.oldest(), h.newest()), 6.0);
  const std::vector<std::string> lines = RenderTopFrame(h, {.width = 0});
  EXPECT_THAT(lines[1], HasSubstr("ended/s: 6.00 (last 2s)"));
  EXPECT_THAT(lines, Contains("thread    4        2     7       6.00     16"
                              "         0       0"));
}

TEST(TopFormatTest, OneSampleHasNoThroughputYet) {
  TopHistory h;
  h.Add(Sample(absl::ZeroDuration(), 5, 0, 0));
  const std::vector<std::string> lines = RenderTopFrame(h, {.width = 0});
  EXPECT_THAT(lines[1], HasSubstr("ended/s: -"));
  EXPECT_THAT(lines, Contains(HasSubstr("thread    4        2     7       -")));
}

TEST(TopFormatTest, FitWidthCutsOnCodePoints) {
  EXPECT_EQ(FitWidth("abcdef", 6), "abcdef");
  EXPECT_EQ(FitWidth("abcdef", 4), "abc~");
  EXPECT_EQ(FitWidth("abcdef", 0), "");
  // "é" is two bytes, "€" three: columns count code points.
  EXPECT_EQ(FitWidth("h\xC3\xA9llo", 5), "h\xC3\xA9llo");
  EXPECT_EQ(FitWidth("\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC", 2),
            "\xE2\x82\xAC~");
}

TEST(TopFormatTest, ControlCharactersFromTheDaemonArePrintedAsQuestionMarks) {
  EXPECT_EQ(Printable("evil\x1b[2J\tx\x7f\u0085y \u00e9"),
            "evil?[2J?x??y \u00e9");
  TopSample s = Sample(absl::ZeroDuration(), 0, 0, 0);
  s.running = {Running("7", "ev\x1b[2Jil", absl::Seconds(1), s.at)};
  TopHistory h;
  h.Add(std::move(s));
  for (const std::string& line :
       RenderTopFrame(h, {.address = "unix:/x", .width = 0})) {
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  }
}

TEST(TopFormatTest, RunningJobsLongestFirstWithTheirCallerAndTasksRanked) {
  TopSample s = Sample(absl::ZeroDuration(), 0, 0, 0);
  s.running = {Running("7", "echo", absl::Seconds(1), s.at),
               Running("8", "sleep", absl::Seconds(90), s.at),
               Running("9", "sleep", absl::Milliseconds(250), s.at)};
  v1::Job queued;
  queued.mutable_spec()->set_task("primes.count");
  s.queued = {queued, queued, queued};
  TopHistory h;
  h.Add(std::move(s));
  const std::vector<std::string> lines =
      RenderTopFrame(h, {.address = "unix:/x", .width = 0});
  EXPECT_THAT(lines[0], HasSubstr("jobd 9.9 at unix:/x"));
  const auto at = [&](const std::string& text) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i] == text) return static_cast<int>(i);
    }
    ADD_FAILURE() << "no line \"" << text << "\" in:\n"
                  << ::testing::PrintToString(lines);
    return -1;
  };
  // Tasks: most running first, then most queued.
  const int tasks = at("TASK          RUNNING  QUEUED  LONGEST");
  EXPECT_EQ(at("sleep         2        0       1m30s"), tasks + 1);
  EXPECT_EQ(at("echo          1        0       1.00s"), tasks + 2);
  EXPECT_EQ(at("primes.count  0        3       -"), tasks + 3);
  const int jobs = at("ID  TASK   EXECUTOR  CALLER  RUN TIME");
  EXPECT_EQ(at("8   sleep  thread    alice   1m30s"), jobs + 1);
  EXPECT_EQ(at("7   echo   thread    alice   1.00s"), jobs + 2);
  EXPECT_EQ(at("9   sleep  thread    alice   250.0ms"), jobs + 3);
  EXPECT_EQ(at("running jobs: 3"), jobs - 1);
}

TEST(TopFormatTest, FrameFitsTheTerminal) {
  TopSample s = Sample(absl::ZeroDuration(), 0, 0, 0);
  for (int i = 0; i < 40; ++i) {
    s.running.push_back(Running(std::to_string(100 + i),
                                "sleep.with.a.long.name", absl::Seconds(40 - i),
                                s.at));
  }
  s.running_truncated = true;
  TopHistory h;
  h.Add(std::move(s));
  for (size_t height : {24u, 12u, 5u}) {
    const std::vector<std::string> lines = RenderTopFrame(
        h, {.address = "a", .width = 30, .height = height, .show_keys = true});
    ASSERT_EQ(lines.size(), height) << height;
    for (const std::string& l : lines) EXPECT_LE(l.size(), 30u) << l;
    EXPECT_EQ(lines.back(), "q: quit");
  }
  const std::vector<std::string> lines = RenderTopFrame(
      h, {.address = "a", .width = 60, .height = 24, .show_keys = true});
  // 24 rows: title, totals, blank, 2 executor lines, blank, "busiest", 2
  // task lines, blank, "running jobs", header, 10 rows, "... 30 more",
  // keys.
  EXPECT_EQ(lines[10], "running jobs: 40+");
  EXPECT_EQ(lines[12], "100  sleep.with.a.long.name  thread    alice   40.00s");
  EXPECT_EQ(lines[21], "109  sleep.with.a.long.name  thread    alice   31.00s");
  EXPECT_EQ(lines[22], "... 30 more");
  // Cut lines end in '~'.
  const std::vector<std::string> narrow = RenderTopFrame(
      h, {.address = "a", .width = 20, .height = 24, .show_keys = true});
  EXPECT_EQ(narrow[12], "100  sleep.with.a.l~");
}

}  // namespace
}  // namespace jobd::jobctl
