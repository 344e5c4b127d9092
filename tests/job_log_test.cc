// Unit tests of job log lines (server/jobs/job_log.h): the JSON-lines
// formatter (every line one JSON object; job lines with their fields;
// escaping and UTF-8 repair) and the text form of job lines.
#include "server/jobs/job_log.h"

#include <memory>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

class JobLogTest : public ::testing::Test {
 protected:
  void Install(bool json, bool priority = false) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("job-log-test", sink);
    logger->set_level(spdlog::level::debug);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(logger);
    if (json) spdlog::set_formatter(MakeJsonLogFormatter(priority));
    SetJsonLogFormat(json);
  }
  void TearDown() override {
    SetJsonLogFormat(false);
    if (previous_ != nullptr) spdlog::set_default_logger(previous_);
  }
  // The one line logged, parsed.
  google::protobuf::Struct Parsed() {
    std::string line = out_.str();
    EXPECT_TRUE(line.ends_with("\n"));
    google::protobuf::Struct s;
    const auto status = google::protobuf::util::JsonStringToMessage(line, &s);
    EXPECT_TRUE(status.ok()) << status.ToString() << ": " << line;
    return s;
  }
  std::string Field(const google::protobuf::Struct& s, const std::string& k) {
    auto it = s.fields().find(k);
    return it == s.fields().end() ? "<absent>" : it->second.string_value();
  }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

const JobLogFields kFields{.job_id = 17,
                           .task = "exec",
                           .executor = v1::EXECUTOR_REACTOR,
                           .caller = "alice",
                           .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"};

TEST_F(JobLogTest, JsonJobLinesCarryTheJobsFields) {
  Install(/*json=*/true);
  LogJob(spdlog::level::info, kFields, "started");
  const google::protobuf::Struct s = Parsed();
  EXPECT_EQ(Field(s, "msg"), "started");
  EXPECT_EQ(Field(s, "level"), "info");
  EXPECT_EQ(Field(s, "job_id"), "17");
  EXPECT_EQ(Field(s, "task"), "exec");
  EXPECT_EQ(Field(s, "executor"), "reactor");
  EXPECT_EQ(Field(s, "caller"), "alice");
  EXPECT_EQ(Field(s, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_THAT(Field(s, "time"),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}"
                                      "\\.[0-9]{6}Z"));
}

TEST_F(JobLogTest, JsonOtherLinesAndOddTextStayOneValidObject) {
  Install(/*json=*/true);
  spdlog::warn(
      "quote \" backslash \\ newline \n tab \t bell \a bad \xff"
      " end");
  const google::protobuf::Struct s = Parsed();
  EXPECT_EQ(Field(s, "level"), "warning");
  EXPECT_EQ(Field(s, "msg"),
            "quote \" backslash \\ newline \n tab \t bell \a bad \xEF\xBF\xBD "
            "end");
  EXPECT_EQ(Field(s, "job_id"), "<absent>");
  // Not routed yet, no trace: those members are left out.
  out_.str("");
  LogJob(spdlog::level::debug, {.job_id = 3, .task = "echo", .caller = "local"},
         "accepted");
  const google::protobuf::Struct j = Parsed();
  EXPECT_EQ(Field(j, "executor"), "<absent>");
  EXPECT_EQ(Field(j, "trace_id"), "<absent>");
  EXPECT_EQ(Field(j, "job_id"), "3");
}

TEST_F(JobLogTest, JsonUnderJournaldKeepsThePriorityPrefix) {
  Install(/*json=*/true, /*priority=*/true);
  spdlog::error("boom");
  EXPECT_TRUE(out_.str().starts_with("<3>{\"time\":")) << out_.str();
}

TEST_F(JobLogTest, TextJobLinesPrefixTheFields) {
  Install(/*json=*/false);
  LogJob(spdlog::level::info, kFields, "started");
  EXPECT_THAT(out_.str(),
              HasSubstr("job 17 [task=exec executor=reactor caller=alice "
                        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736]: started"));
  // Below the level: nothing.
  out_.str("");
  spdlog::default_logger()->set_level(spdlog::level::info);
  LogJob(spdlog::level::debug, kFields, "hidden");
  EXPECT_EQ(out_.str(), "");
}

}  // namespace
}  // namespace jobd
