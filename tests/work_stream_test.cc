// WorkStream (server/cluster/work_stream.h) against a real redis-server:
// publish (jobs packed in one entry, each once), take through the consumer
// group on the blocking connection, the fencing that XACK lacks (once
// another node reclaimed an entry, its first owner can neither renew nor
// complete it, while the new owner completes it exactly once), and a
// pack's done set through completion, reclaim, give-back and withdrawal,
// and its begun marks.
#include "server/cluster/work_stream.h"

#include <algorithm>
#include <future>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/redis/redis_call.h"
#include "tests/redis/redis_server.h"

namespace jobd::cluster {
namespace {

using testing::Call;
using testing::IoThread;
using testing::RedisServer;

// Waits (bounded) for one asynchronous answer.
template <typename T>
absl::StatusOr<T> Wait(const std::function<void(WorkStream::Done<T>)>& start) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  auto future = promise->get_future();
  start([promise](absl::StatusOr<T> r) { promise->set_value(std::move(r)); });
  if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    return absl::DeadlineExceededError("no answer within the test's bound");
  }
  return future.get();
}

class WorkStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    RedisConnectionOptions o;
    o.endpoint.unix_path = redis_->socket_path();
    o.name = "commands";
    commands_ = RedisConnection::Create(io_.io(), o);
    o.name = "blocking";
    blocking_ = RedisConnection::Create(io_.io(), o);
    commands_->Start();
    blocking_->Start();
    stream_ = std::make_unique<WorkStream>(commands_, blocking_);
  }
  void TearDown() override {
    commands_->Stop();
    blocking_->Stop();
    io_.Join();
  }

  void Group(int partition) {
    auto r = Wait<bool>([&](WorkStream::Done<bool> done) {
      stream_->EnsureGroup(partition, std::move(done));
    });
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // Jobs `ids` of origin "a" (create ns 5, spec "spec-<id>"), in one entry.
  absl::StatusOr<std::string> Publish(int partition,
                                      const std::vector<uint64_t>& ids) {
    std::vector<JobEntry> jobs;
    for (uint64_t id : ids) {
      jobs.push_back(JobEntry{.origin = "a",
                              .id = id,
                              .create_ns = 5,
                              .owner = "alice",
                              .spec = "spec-" + std::to_string(id)});
    }
    return Wait<std::string>([&](WorkStream::Done<std::string> done) {
      stream_->PublishJobs(partition, jobs, absl::Minutes(1), std::move(done));
    });
  }
  absl::StatusOr<std::vector<StreamEntry>> Take(int partition,
                                                const std::string& consumer) {
    return Wait<std::vector<StreamEntry>>(
        [&](WorkStream::Done<std::vector<StreamEntry>> done) {
          stream_->TakeAny({partition}, consumer, 10, absl::Seconds(1),
                           std::move(done));
        });
  }
  absl::StatusOr<std::vector<StreamEntry>> Reclaim(
      int partition, const std::string& consumer) {
    auto r = Wait<Reclaimed>([&](WorkStream::Done<Reclaimed> done) {
      stream_->ReclaimCounted(partition, consumer, absl::ZeroDuration(), 10,
                              "0-0", std::move(done));
    });
    if (!r.ok()) return r.status();
    return std::move(r->entries);
  }
  // Completes jobs `indexes` of `entry` (of `count` jobs) for origin "a".
  absl::StatusOr<std::vector<Fence>> Complete(
      int partition, const std::string& consumer, const std::string& entry,
      int count, const std::vector<int>& indexes, bool dead_letter = false) {
    std::vector<Completion> ends;
    for (int index : indexes) {
      ends.push_back(Completion{.entry = entry,
                                .index = index,
                                .count = count,
                                .origin = "a",
                                .result = "end of " + std::to_string(index),
                                .dead_letter = dead_letter});
    }
    return Wait<std::vector<Fence>>(
        [&](WorkStream::Done<std::vector<Fence>> done) {
          stream_->CompleteJobs(partition, consumer, ends, std::move(done));
        });
  }
  absl::StatusOr<Fence> Renew(int partition, const std::string& consumer,
                              const std::string& id,
                              std::vector<int>* withdrawn = nullptr) {
    auto r = Wait<Renewal>([&](WorkStream::Done<Renewal> done) {
      stream_->Renew(partition, consumer, id, std::move(done));
    });
    if (!r.ok()) return r.status();
    if (withdrawn != nullptr) *withdrawn = r->withdrawn;
    return r->fence;
  }
  int64_t Len(const std::string& key) {
    auto r = Call(*commands_, {"XLEN", key});
    return r.ok() ? r->integer : -1;
  }
  std::string Get(const std::string& key) {
    auto r = Call(*commands_, {"GET", key});
    return r.ok() ? r->str : "(error)";
  }
  static std::vector<std::string> Ids(const StreamEntry& e) {
    std::vector<std::string> out;
    for (const PackedJob& j : e.jobs) out.push_back(j.id);
    return out;
  }

  // Declared first, so destroyed last: the connections' timers and
  // descriptors belong to its io_context (TearDown joins its thread).
  IoThread io_;
  std::unique_ptr<RedisServer> redis_;
  std::shared_ptr<RedisConnection> commands_, blocking_;
  std::unique_ptr<WorkStream> stream_;
};

TEST_F(WorkStreamTest, AReclaimedEntryCanOnlyBeCompletedByItsNewOwner) {
  EXPECT_EQ(WorkStream::JobsKey(3), "{jobd:p3}:jobs");
  auto created = Wait<bool>([&](WorkStream::Done<bool> done) {
    stream_->EnsureGroup(3, std::move(done));
  });
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(*created);
  auto again = Wait<bool>([&](WorkStream::Done<bool> done) {
    stream_->EnsureGroup(3, std::move(done));
  });
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(*again);  // Already there: fine.

  auto id = Publish(3, {1});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string a = WorkStream::Consumer("node-a", 7);
  const std::string b = WorkStream::Consumer("node-b", 9);
  auto taken = Take(3, a);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ((*taken)[0].id, *id);
  ASSERT_EQ((*taken)[0].jobs.size(), 1u);
  EXPECT_EQ((*taken)[0].jobs[0].spec, "spec-1");
  auto renewed = Renew(3, a, *id);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed, Fence::kDone);

  // node-a is found dead: node-b reclaims what it held.
  auto reclaimed = Reclaim(3, b);
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 1u);
  EXPECT_EQ((*reclaimed)[0].deliveries, 2);
  EXPECT_EQ(Ids((*reclaimed)[0]), std::vector<std::string>{"1"});

  // node-a comes back: a plain XACK would succeed, the fenced steps refuse.
  auto stale_renew = Renew(3, a, *id);
  ASSERT_TRUE(stale_renew.ok());
  EXPECT_EQ(*stale_renew, Fence::kOwnedByAnother);
  auto stale = Complete(3, a, *id, 1, {0});
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(*stale, std::vector<Fence>{Fence::kOwnedByAnother});
  // The entry is still pending under node-b, and no result was written.
  auto pending =
      Call(*commands_, {"XPENDING", "{jobd:p3}:jobs", "jobd", "-", "+", "10"});
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->elements.size(), 1u);
  EXPECT_EQ(pending->elements[0].elements[1].str, b);
  EXPECT_EQ(Len(WorkStream::ResultsKey(3, "a")), 0);

  auto done = Complete(3, b, *id, 1, {0});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(*done, std::vector<Fence>{Fence::kDone});
  auto twice = Complete(3, b, *id, 1, {0});
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*twice, std::vector<Fence>{Fence::kNotPending});
  auto range =
      Call(*commands_, {"XRANGE", WorkStream::ResultsKey(3, "a"), "-", "+"});
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->elements.size(), 1u);
  EXPECT_THAT(
      range->elements[0].elements[1].elements,
      ::testing::Contains(::testing::Field(&RedisValue::str, "end of 0")));
  // Nothing is pending any more, and the entry is gone.
  auto left = Call(*commands_, {"XPENDING", "{jobd:p3}:jobs", "jobd"});
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->elements[0].integer, 0);
  EXPECT_EQ(Len(WorkStream::JobsKey(3)), 0);
}

// TakeAny waits on the blocking connection: commands go on meanwhile, and
// an entry published while it waits is delivered.
TEST_F(WorkStreamTest, TakeBlocksOnItsOwnConnection) {
  Group(0);
  auto promise = std::make_shared<
      std::promise<absl::StatusOr<std::vector<StreamEntry>>>>();
  auto future = promise->get_future();
  stream_->TakeAny({0}, WorkStream::Consumer("n", 1), 1, absl::Seconds(10),
                   [promise](absl::StatusOr<std::vector<StreamEntry>> r) {
                     promise->set_value(std::move(r));
                   });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Call(*commands_, {"PING"}).ok());
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(0)),
            std::future_status::timeout);
  ASSERT_TRUE(Publish(0, {42}).ok());
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  auto got = future.get();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  ASSERT_EQ((*got)[0].jobs.size(), 1u);
  EXPECT_EQ((*got)[0].jobs[0].spec, "spec-42");
}

// A shared job published twice (a lost reply, a restart before the
// journal said "published") is in one entry only: a pack published again
// appends only its jobs not published before; TakeAny reads an entry from
// any partition with each job's fields.
TEST_F(WorkStreamTest, PublishingAJobTwiceMakesOneEntry) {
  Group(1);
  Group(2);
  auto first = Publish(2, {7});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Publish(2, {7});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, "");  // Nothing new.
  EXPECT_EQ(Len(WorkStream::JobsKey(2)), 1);
  EXPECT_EQ(Get(WorkStream::MarkerKey(2, "a", 7, 5)), *first);
  auto pack = Publish(2, {7, 8, 9});
  ASSERT_TRUE(pack.ok()) << pack.status();
  EXPECT_EQ(Len(WorkStream::JobsKey(2)), 2);
  EXPECT_EQ(Get(WorkStream::MarkerKey(2, "a", 8, 5)), *pack);
  auto taken = Take(2, WorkStream::Consumer("b", 1));
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 2u);
  const StreamEntry& e = (*taken)[1];
  EXPECT_EQ(e.id, *pack);
  EXPECT_EQ(e.partition, 2);
  EXPECT_EQ(e.origin, "a");
  EXPECT_EQ(e.count, 2);
  ASSERT_EQ(e.jobs.size(), 2u);
  EXPECT_EQ(e.jobs[1].index, 1);
  EXPECT_EQ(e.jobs[1].spec, "spec-9");
  EXPECT_EQ(e.jobs[1].id, "9");
  EXPECT_EQ(e.jobs[1].create_ns, "5");
  EXPECT_EQ(e.jobs[1].owner, "alice");
  // A job given twice in one pack (the outbox read again while its first
  // publication was on its way) is packed once.
  auto twice = Publish(1, {10, 10});
  ASSERT_TRUE(twice.ok()) << twice.status();
  auto one = Take(1, WorkStream::Consumer("b", 1));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].count, 1);
  EXPECT_EQ(Ids((*one)[0]), std::vector<std::string>{"10"});
}

// CompleteJobs is fenced per job, writes the origin's results stream,
// dead-letters a job when asked, and acknowledges and deletes an entry
// only once each of its jobs is done; a reclaim leaves out the jobs done.
TEST_F(WorkStreamTest, APackIsDoneWhenEachOfItsJobsIs) {
  Group(0);
  auto id = Publish(0, {1, 2, 3});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string b = WorkStream::Consumer("b", 1);
  const std::string c = WorkStream::Consumer("c", 2);
  auto taken = Take(0, b);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ(Ids((*taken)[0]), (std::vector<std::string>{"1", "2", "3"}));
  auto one = Complete(0, b, *id, 3, {1});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, std::vector<Fence>{Fence::kDone});
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 1);  // Two jobs to go.

  // b is found dead: c reclaims the entry without its job done.
  auto reclaimed = Reclaim(0, c);
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 1u);
  EXPECT_EQ((*reclaimed)[0].count, 3);
  EXPECT_EQ(Ids((*reclaimed)[0]), (std::vector<std::string>{"1", "3"}));
  auto stale = Complete(0, b, *id, 3, {0});
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(*stale, std::vector<Fence>{Fence::kOwnedByAnother});

  auto rest = Complete(0, c, *id, 3, {0, 2}, /*dead_letter=*/true);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, (std::vector<Fence>{Fence::kDone, Fence::kDone}));
  auto again = Complete(0, c, *id, 3, {2});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, std::vector<Fence>{Fence::kNotPending});
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 0);
  auto exists = Call(*commands_, {"EXISTS", WorkStream::DoneKey(0, *id)});
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->integer, 0);
  // Three results for a; two dead letters, each with its own job.
  EXPECT_EQ(Len(WorkStream::ResultsKey(0, "a")), 3);
  auto letters =
      Call(*commands_, {"XRANGE", WorkStream::DeadLetterKey(0), "-", "+"});
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->elements.size(), 2u);
  std::vector<std::string> fields;
  for (const RedisValue& f : letters->elements[1].elements[1].elements) {
    fields.push_back(f.str);
  }
  EXPECT_THAT(fields,
              ::testing::ElementsAre("entry", *id, "index", "2", "origin", "a",
                                     "job.2", "spec-3", "id.2", "3", "create.2",
                                     "5", "owner.2", "alice"));
  auto read = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        WorkStream::ReadResults(*blocking_, {0}, "a", {"0"}, 10,
                                absl::Milliseconds(100), std::move(done));
      });
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 3u);
  EXPECT_EQ((*read)[0].payload, "end of 1");
}

// A pack's begun marks: added only by the entry's holder, returned by a
// reclaim (with the jobs not done), deleted with the entry.
TEST_F(WorkStreamTest, BegunMarksAreFencedReclaimedAndGoWithTheEntry) {
  Group(0);
  auto id = Publish(0, {1, 2, 3});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string b = WorkStream::Consumer("b", 1);
  const std::string c = WorkStream::Consumer("c", 2);
  auto taken = Take(0, b);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  auto mark = [&](const std::string& consumer, std::vector<int> indexes) {
    return Wait<Fence>([&](WorkStream::Done<Fence> done) {
      stream_->MarkBegun(0, consumer, *id, indexes, std::move(done));
    });
  };
  auto marked = mark(b, {0, 2});
  ASSERT_TRUE(marked.ok()) << marked.status();
  EXPECT_EQ(*marked, Fence::kDone);
  auto foreign = mark(c, {1});
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  EXPECT_EQ(*foreign, Fence::kOwnedByAnother);
  auto one = Complete(0, b, *id, 3, {0});
  ASSERT_TRUE(one.ok()) << one.status();

  // b is found dead: c learns which of the jobs left b had begun.
  auto reclaimed = Reclaim(0, c);
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 1u);
  EXPECT_EQ(Ids((*reclaimed)[0]), (std::vector<std::string>{"2", "3"}));
  std::vector<int> begun = (*reclaimed)[0].begun;
  std::sort(begun.begin(), begun.end());
  EXPECT_EQ(begun, (std::vector<int>{0, 2}));
  auto stale = mark(b, {1});
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(*stale, Fence::kOwnedByAnother);

  auto rest = Complete(0, c, *id, 3, {1, 2});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, (std::vector<Fence>{Fence::kDone, Fence::kDone}));
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 0);
  auto exists = Call(*commands_, {"EXISTS", WorkStream::BegunKey(0, *id),
                                  WorkStream::DoneKey(0, *id)});
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->integer, 0);
  auto gone = mark(c, {1});
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, Fence::kNotPending);
}

// XAUTOCLAIM looks at 10 x COUNT pending entries per call: a dead
// consumer's entries behind many of live ones are reached by going on
// from the cursor it answers.
TEST_F(WorkStreamTest, AReclaimGoesOnFromItsCursor) {
  Group(0);
  const std::string live = WorkStream::Consumer("live", 1);
  const std::string dead = WorkStream::Consumer("dead", 2);
  std::vector<std::string> live_ids;
  for (uint64_t job = 1; job <= 25; ++job) {
    auto id = Publish(0, {job});
    ASSERT_TRUE(id.ok()) << id.status();
    live_ids.push_back(*id);
  }
  auto taken = Take(0, live);  // 10 at a time.
  ASSERT_TRUE(taken.ok());
  ASSERT_TRUE(Take(0, live).ok());
  ASSERT_TRUE(Take(0, live).ok());
  for (uint64_t job = 26; job <= 30; ++job) ASSERT_TRUE(Publish(0, {job}).ok());
  auto theirs = Take(0, dead);
  ASSERT_TRUE(theirs.ok());
  ASSERT_EQ(theirs->size(), 5u);
  absl::SleepFor(absl::Milliseconds(300));
  for (const std::string& id : live_ids) {
    ASSERT_TRUE(Renew(0, live, id).ok());  // Live: not idle.
  }
  std::vector<std::string> got;
  std::string cursor = "0-0";
  int calls = 0;
  do {
    auto r = Wait<Reclaimed>([&](WorkStream::Done<Reclaimed> done) {
      stream_->ReclaimCounted(0, WorkStream::Consumer("c", 3),
                              absl::Milliseconds(200), 1, cursor,
                              std::move(done));
    });
    ASSERT_TRUE(r.ok()) << r.status();
    if (calls == 0) {
      EXPECT_TRUE(r->entries.empty());  // Ten live ones looked at.
    }
    for (const StreamEntry& e : r->entries) got.push_back(Ids(e)[0]);
    cursor = r->next;
  } while (++calls < 20 && got.size() < 5);
  EXPECT_EQ(got, (std::vector<std::string>{"26", "27", "28", "29", "30"}));
}

// Results are trimmed by age; a stream its node read empty is kept while
// its last entry is young (deleted and written to again, its ids would
// start over below its reader's cursor), deleted once that is old.
TEST_F(WorkStreamTest, TrimResultsKeepsAYoungStreamReadEmpty) {
  Group(0);
  auto id = Publish(0, {1});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string b = WorkStream::Consumer("b", 1);
  ASSERT_TRUE(Take(0, b).ok());
  ASSERT_TRUE(Complete(0, b, *id, 1, {0}).ok());
  const std::string results = WorkStream::ResultsKey(0, "a");
  auto range = Call(*commands_, {"XRANGE", results, "-", "+"});
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->elements.size(), 1u);
  // Its node read it and deleted what it read.
  ASSERT_TRUE(
      Call(*commands_, {"XDEL", results, range->elements[0].elements[0].str})
          .ok());
  auto trim = [&](absl::Duration ttl) {
    return Wait<int64_t>([&](WorkStream::Done<int64_t> done) {
      stream_->TrimResults(0, ttl, std::move(done));
    });
  };
  auto exists = [&] {
    auto r = Call(*commands_, {"EXISTS", results});
    return r.ok() ? r->integer : -1;
  };
  auto kept = trim(absl::Hours(1));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(*kept, 0);
  EXPECT_EQ(exists(), 1);
  absl::SleepFor(absl::Milliseconds(20));
  auto gone = trim(absl::Milliseconds(10));
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(exists(), 0);
  auto member =
      Call(*commands_, {"SISMEMBER", WorkStream::ResultsNodesKey(0), "a"});
  ASSERT_TRUE(member.ok());
  EXPECT_EQ(member->integer, 0);
  // A node listed whose stream is gone (deleted by hand) is forgotten,
  // and the others are still trimmed.
  ASSERT_TRUE(
      Call(*commands_, {"SADD", WorkStream::ResultsNodesKey(0), "ghost"}).ok());
  auto again = trim(absl::Milliseconds(10));
  ASSERT_TRUE(again.ok()) << again.status();
  member =
      Call(*commands_, {"SISMEMBER", WorkStream::ResultsNodesKey(0), "ghost"});
  ASSERT_TRUE(member.ok());
  EXPECT_EQ(member->integer, 0);
}

// Given back, an entry's jobs not done are appended again as a new entry,
// their markers following it.
TEST_F(WorkStreamTest, ReleaseAppendsAgainTheJobsNotDone) {
  Group(0);
  auto id = Publish(0, {1, 2, 3});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string b = WorkStream::Consumer("b", 1);
  ASSERT_TRUE(Take(0, b).ok());
  ASSERT_TRUE(Complete(0, b, *id, 3, {0}).ok());
  auto released = Wait<Fence>([&](WorkStream::Done<Fence> done) {
    stream_->Release(0, b, *id, {0, 1, 2}, std::move(done));
  });
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(*released, Fence::kDone);
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 1);
  auto again = Take(0, WorkStream::Consumer("c", 2));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  const StreamEntry& e = (*again)[0];
  EXPECT_NE(e.id, *id);
  EXPECT_EQ(e.count, 2);
  EXPECT_EQ(Ids(e), (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ(e.jobs[0].spec, "spec-2");
  EXPECT_EQ(Get(WorkStream::MarkerKey(0, "a", 2, 5)), e.id);
  EXPECT_EQ(Get(WorkStream::MarkerKey(0, "a", 3, 5)), e.id);
  EXPECT_EQ(Get(WorkStream::MarkerKey(0, "a", 1, 5)), *id);  // Done.
}

// Some jobs of a held pack given back (its holder drains): they are
// appended again as a new entry, their markers following; the others stay
// held in the old entry (a reclaim of it leaves the given-back ones out),
// which goes once its last job is done. Given back by another consumer:
// refused.
TEST_F(WorkStreamTest, JobsOfAHeldPackAreGivenBackAlone) {
  Group(0);
  auto id = Publish(0, {1, 2, 3, 4});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string b = WorkStream::Consumer("b", 1);
  ASSERT_TRUE(Take(0, b).ok());
  ASSERT_TRUE(Complete(0, b, *id, 4, {0}).ok());
  auto give_back = [&](const std::string& consumer, std::vector<int> indexes) {
    return Wait<Fence>([&](WorkStream::Done<Fence> done) {
      stream_->Release(0, consumer, *id, indexes, std::move(done));
    });
  };
  auto refused = give_back(WorkStream::Consumer("c", 2), {1});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(*refused, Fence::kOwnedByAnother);
  // Job 1 (index 0) is done already: only 2 and 3 go back.
  auto released = give_back(b, {0, 1, 2});
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(*released, Fence::kDone);
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 2);
  auto again = Take(0, WorkStream::Consumer("c", 2));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ(Ids((*again)[0]), (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ(Get(WorkStream::MarkerKey(0, "a", 2, 5)), (*again)[0].id);
  EXPECT_EQ(Get(WorkStream::MarkerKey(0, "a", 4, 5)), *id);
  // The old entry, reclaimed, holds job 4 alone.
  auto reclaimed = Reclaim(0, WorkStream::Consumer("d", 3));
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  std::vector<std::string> old_jobs;
  for (const StreamEntry& e : *reclaimed) {
    if (e.id == *id) old_jobs = Ids(e);
  }
  EXPECT_EQ(old_jobs, (std::vector<std::string>{"4"}));
  // Its last job done, it goes with its done set.
  auto last = Complete(0, WorkStream::Consumer("d", 3), *id, 4, {3});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ((*last)[0], Fence::kDone);
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 1);  // The new entry.
  auto done_set = Call(*commands_, {"EXISTS", WorkStream::DoneKey(0, *id)});
  ASSERT_TRUE(done_set.ok());
  EXPECT_EQ(done_set->integer, 0);
}

// A withdrawn job leaves an entry no node took (its other jobs are
// appended again); in a held entry it is marked withdrawn, its holder
// named, and a reclaim leaves it out; a job not yet published never will
// be.
TEST_F(WorkStreamTest, AWithdrawnJobLeavesItsPackOrIsMarkedInIt) {
  Group(0);
  auto withdraw = [&](uint64_t job) {
    return Wait<Withdrawal>([&](WorkStream::Done<Withdrawal> done) {
      WorkStream::Withdraw(*commands_, 0, "a", job, 5, absl::Minutes(1),
                           std::move(done));
    });
  };
  auto id = Publish(0, {1, 2, 3});
  ASSERT_TRUE(id.ok()) << id.status();
  auto removed = withdraw(2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->was, Withdrawal::Was::kRemoved);
  const std::string b = WorkStream::Consumer("b", 1);
  auto taken = Take(0, b);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  const std::string repacked = (*taken)[0].id;
  EXPECT_EQ(Ids((*taken)[0]), (std::vector<std::string>{"1", "3"}));

  auto held = withdraw(3);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->was, Withdrawal::Was::kHeld);
  EXPECT_EQ(held->entry, repacked);
  EXPECT_EQ(held->consumer, b);
  EXPECT_EQ(held->index, 1);
  // The holder's next renewal names it too (had the stop notice been
  // lost).
  std::vector<int> withdrawn;
  auto renewed = Renew(0, b, repacked, &withdrawn);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(*renewed, Fence::kDone);
  EXPECT_EQ(withdrawn, std::vector<int>{1});
  auto reclaimed = Reclaim(0, WorkStream::Consumer("c", 2));
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 1u);
  EXPECT_EQ(Ids((*reclaimed)[0]), std::vector<std::string>{"1"});

  auto early = withdraw(9);
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_EQ(early->was, Withdrawal::Was::kNotPublished);
  auto late = Publish(0, {9});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(*late, "");
  EXPECT_EQ(Len(WorkStream::JobsKey(0)), 1);
}

}  // namespace
}  // namespace jobd::cluster
