// Unit tests: EventLog numbers events, keeps the last ones for resume
// (replaying what they carry from their job), carries on after a restored
// log, and fans each event out to the job's subscribers and to the
// watchers of all jobs by owner and event type. No journal: every event
// is durable at once (ticket 0).
#include "server/scheduler/event_log.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/job_records.h"
#include "tests/fakes/recording_sink.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

Event MakeEvent(EventLog& log, const JobRecord& job, v1::EventType type) {
  Event e;
  e.sequence = log.NextSequence();
  e.job_id = job.id;
  e.type = type;
  return e;
}

std::vector<uint64_t> SequencesAfter(const EventLog& log, uint64_t after) {
  std::vector<uint64_t> out;
  log.ForEachAfter(after,
                   [&](const LoggedEvent& e) { out.push_back(e.sequence); });
  return out;
}

TEST(EventLogTest, KeepsTheLastEventsForResume) {
  EventLog log(3, nullptr);
  const std::string owner;
  auto job = MakeRecord(1, &owner);
  EXPECT_EQ(log.oldest(), 1u);  // Empty: the next one.
  for (int i = 0; i < 5; ++i) {
    log.Append(MakeEvent(log, *job, v1::EVENT_TYPE_PROGRESS));
  }
  EXPECT_EQ(log.last_sequence(), 5u);
  EXPECT_EQ(log.oldest(), 3u);
  EXPECT_THAT(SequencesAfter(log, 0), ElementsAre(3, 4, 5));
  EXPECT_THAT(SequencesAfter(log, 4), ElementsAre(5));
  EXPECT_TRUE(SequencesAfter(log, 5).empty());
  EXPECT_EQ(log.TicketOf(4), 0u);  // No journal: durable.
}

TEST(EventLogTest, AReplayCarriesWhatItsJobHoldsNow) {
  EventLog log(10, nullptr);
  const std::string owner;
  TaskDef task{.name = "ok"};
  auto job = MakeRecord(1, &owner, {.state = v1::JOB_STATE_SUCCEEDED});
  job->spec.set_task(&task);
  job->last_sequence = 3;
  log.Append(MakeEvent(log, *job, v1::EVENT_TYPE_ACCEPTED));
  log.Append(MakeEvent(log, *job, v1::EVENT_TYPE_STARTED));
  log.Append(MakeEvent(log, *job, v1::EVENT_TYPE_SUCCEEDED));
  std::vector<Event> replayed;
  log.ForEachAfter(0, [&](const LoggedEvent& e) {
    replayed.push_back(log.Replay(e, *job));
  });
  ASSERT_EQ(replayed.size(), 3u);
  ASSERT_NE(replayed[0].task(), nullptr);
  EXPECT_EQ(replayed[0].task()->name, "ok");
  EXPECT_EQ(replayed[2].end(), job->end.get());
  const Event end = log.EndOf(*job);  // For a caller that joins late.
  EXPECT_EQ(end.sequence, 3u);
  EXPECT_EQ(end.type, v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(end.end(), job->end.get());
}

TEST(EventLogTest, ARestoredLogMayHaveGapsAndSequencesCarryOn) {
  EventLog log(2, nullptr);
  log.Restore({{.sequence = 9, .job_id = 2},
               {.sequence = 4, .job_id = 1},
               {.sequence = 7, .job_id = 1}},
              /*last_sequence=*/12);
  EXPECT_THAT(SequencesAfter(log, 0), ElementsAre(7, 9));  // Sorted, last 2.
  EXPECT_THAT(SequencesAfter(log, 7), ElementsAre(9));
  EXPECT_EQ(log.NextSequence(), 13u);
}

TEST(EventLogTest, FanOutReachesSubscribersAndMatchingWatchers) {
  EventLog log(10, nullptr);
  const std::string alice = "alice";
  auto job = MakeRecord(1, &alice);
  auto own = std::make_shared<RecordingSink>();
  auto all = std::make_shared<RecordingSink>();
  auto alices = std::make_shared<RecordingSink>();
  auto bobs = std::make_shared<RecordingSink>();
  auto ends = std::make_shared<RecordingSink>();
  job->subscribers.push_back({.sink = own, .tag = 7});
  log.AddWatcher({all, 1, kAllEvents});
  log.AddWatcher(Subscriber{alices, 2, kAllEvents, "alice"});
  log.AddWatcher(Subscriber{bobs, 3, kAllEvents, "bob"});
  log.AddWatcher({ends, 4, kTerminalEvents});
  SinksToFlush flush;
  log.FanOut(MakeEvent(log, *job, v1::EVENT_TYPE_STARTED), *job, flush);
  EXPECT_THAT(own->Tags(), ElementsAre(7));
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(alices->size(), 1u);
  EXPECT_EQ(bobs->size(), 0u);  // Not bob's job.
  EXPECT_EQ(ends->size(), 0u);  // Not an end.
  EXPECT_TRUE(flush.empty());   // RecordingSink asks for no flush.
  log.RemoveWatcher(all.get());
  log.FanOut(MakeEvent(log, *job, v1::EVENT_TYPE_FAILED), *job, flush);
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(ends->size(), 1u);
  EXPECT_EQ(own->size(), 2u);
}

}  // namespace
}  // namespace jobd
