// The config file's [[schedule]] tables (server/config/schedule_tables.h):
// what a table becomes, and refusals naming the table, key and line.
#include "server/config/schedule_tables.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

TEST(ScheduleTables, ATableBecomesASchedule) {
  auto parsed = ParseScheduleTables(R"toml(
log-level = "info"
[[schedule]]
id = "nightly"
cron = "30 2 * * *"
time_zone = "Europe/Berlin"
overlap = "cancel"
catch_up = "once"
paused = true
job = { task = "exec", kind = "cpu", priority = 5, timeout = "5m", kwargs = { argv = ["/bin/true", 1] }, labels = { team = "ops" } }

[[schedule]]
id = "tick"
every = "10m"
job = { task = "echo", args = [1, "two", { three = 3 }] }
)toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  const auto& n = (*parsed)[0];
  EXPECT_EQ(n.id, "nightly");
  EXPECT_TRUE(n.paused);
  EXPECT_EQ(n.spec.cron(), "30 2 * * *");
  EXPECT_EQ(n.spec.time_zone(), "Europe/Berlin");
  EXPECT_EQ(n.spec.overlap(), v1::OVERLAP_POLICY_CANCEL_PREVIOUS);
  EXPECT_EQ(n.spec.catch_up(), v1::CATCH_UP_POLICY_RUN_ONCE);
  EXPECT_EQ(n.spec.job().task(), "exec");
  EXPECT_EQ(n.spec.job().kind(), v1::JOB_KIND_CPU_BOUND);
  EXPECT_EQ(n.spec.job().priority(), 5);
  EXPECT_EQ(n.spec.job().timeout().seconds(), 300);
  EXPECT_EQ(n.spec.job().labels().at("team"), "ops");
  EXPECT_EQ(n.spec.job()
                .kwargs()
                .fields()
                .at("argv")
                .list_value()
                .values(1)
                .number_value(),
            1);
  const auto& t = (*parsed)[1];
  EXPECT_EQ(t.spec.interval().seconds(), 600);
  EXPECT_EQ(t.spec.job().kind(), v1::JOB_KIND_IO_BOUND);
  ASSERT_EQ(t.spec.job().args_size(), 3);
  EXPECT_EQ(
      t.spec.job().args(2).struct_value().fields().at("three").number_value(),
      3);
  auto none = ParseScheduleTables("log-level = \"info\"\n");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(ScheduleTables, RefusalsNameTheTableAndKey) {
  struct Case {
    const char* toml;
    const char* message;
  } cases[] = {
      {"[[schedule]]\nid = \"a\"\ncron = \"0 25 * * *\"\njob = { task = "
       "\"echo\" }\n",
       "schedule[0].cron: cron expression \"0 25 * * *\": field hour at "
       "position 3: 25 is out of range 0-23"},
      {"[[schedule]]\nid = \"a\"\ncron = \"0 2 * * *\"\ntime_zone = "
       "\"Nowhere/Land\"\njob = { task = \"echo\" }\n",
       "schedule[0].time_zone: unknown time zone \"Nowhere/Land\""},
      {"[[schedule]]\nid = \"a\"\nevery = \"90ms\"\njob = { task = \"echo\" "
       "}\n",
       "schedule[0].every (line 3): '90ms' is not a whole number of seconds"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\njob = { task = \"echo\", "
       "kind = \"fast\" }\n",
       "schedule[0].job.kind (line 4): 'fast' is not cpu, io or auto"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\njob = { tusk = \"echo\" }\n",
       "schedule[0].job.tusk (line 4): unknown key"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\njob = { args = [1] }\n",
       "schedule[0].job.task"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\n",
       "schedule[0].job (line 1): missing"},
      {"[[schedule]]\nevery = \"1s\"\njob = { task = \"echo\" }\n",
       "schedule[0].id (line 1): missing"},
      {"[[schedule]]\nid = \"a b\"\nevery = \"1s\"\njob = { task = \"echo\" "
       "}\n",
       "schedule[0].id: byte 2 is not a letter"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\ncron = \"* * * * *\"\njob "
       "= { task = \"echo\" }\n",
       "schedule[0]: give exactly one of cron and interval"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\nlater = 1\njob = { task = "
       "\"echo\" }\n",
       "schedule[0].later (line 4): unknown key"},
      {"[[schedule]]\nid = \"a\"\nevery = \"1s\"\njob = { task = \"echo\" "
       "}\n[[schedule]]\nid = \"a\"\nevery = \"2s\"\njob = { task = \"echo\" "
       "}\n",
       "schedule[1].id (line 5): 'a' is declared twice"},
      {"schedule = 3\n", "schedule (line 1): declare schedules as"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseScheduleTables(c.toml);
    ASSERT_FALSE(parsed.ok()) << c.toml;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.message))
        << c.toml;
  }
}

}  // namespace
}  // namespace jobd
