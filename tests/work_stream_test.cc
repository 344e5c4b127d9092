// WorkStream (server/cluster/work_stream.h) against a real redis-server:
// publish, take through the consumer group on the blocking connection,
// and the fencing that XACK lacks: once another node reclaimed an entry,
// its first owner can neither renew nor complete it, while the new owner
// completes it exactly once.
#include "server/cluster/work_stream.h"

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

  absl::StatusOr<Fence> Complete(const std::string& consumer,
                                 const std::string& id,
                                 const std::string& result) {
    return Wait<Fence>([&](WorkStream::Done<Fence> done) {
      stream_->Complete(3, consumer, id, result, std::move(done));
    });
  }
  absl::StatusOr<Fence> Renew(const std::string& consumer,
                              const std::string& id) {
    return Wait<Fence>([&](WorkStream::Done<Fence> done) {
      stream_->Renew(3, consumer, id, std::move(done));
    });
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

  auto id = Wait<std::string>([&](WorkStream::Done<std::string> done) {
    stream_->Publish(3, "job-1", std::move(done));
  });
  ASSERT_TRUE(id.ok()) << id.status();

  const std::string a = WorkStream::Consumer("node-a", 7);
  const std::string b = WorkStream::Consumer("node-b", 9);
  auto taken = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        stream_->Take(3, a, 10, absl::Seconds(2), std::move(done));
      });
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ((*taken)[0].id, *id);
  EXPECT_EQ((*taken)[0].payload, "job-1");
  auto renewed = Renew(a, *id);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed, Fence::kDone);

  // node-a is found dead: node-b reclaims what it held.
  auto reclaimed = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        stream_->Reclaim(3, b, absl::ZeroDuration(), 100, std::move(done));
      });
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 1u);
  EXPECT_EQ((*reclaimed)[0].payload, "job-1");

  // node-a comes back: a plain XACK would succeed, the fenced steps refuse.
  auto stale_renew = Renew(a, *id);
  ASSERT_TRUE(stale_renew.ok());
  EXPECT_EQ(*stale_renew, Fence::kOwnedByAnother);
  auto stale = Complete(a, *id, "a's result");
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(*stale, Fence::kOwnedByAnother);
  // The entry is still pending under node-b, and no result was written.
  auto pending =
      Call(*commands_, {"XPENDING", "{jobd:p3}:jobs", "jobd", "-", "+", "10"});
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->elements.size(), 1u);
  EXPECT_EQ(pending->elements[0].elements[1].str, b);
  auto results = Call(*commands_, {"XLEN", "{jobd:p3}:results"});
  ASSERT_TRUE(results.ok());
  EXPECT_EQ(results->integer, 0);

  auto done = Complete(b, *id, "b's result");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(*done, Fence::kDone);
  auto twice = Complete(b, *id, "b's result again");
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*twice, Fence::kNotPending);
  auto range = Call(*commands_, {"XRANGE", "{jobd:p3}:results", "-", "+"});
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->elements.size(), 1u);
  EXPECT_THAT(
      range->elements[0].elements[1].elements,
      ::testing::Contains(::testing::Field(&RedisValue::str, "b's result")));
  // The job stream keeps its entry (no trimming of pending work), and
  // nothing is pending any more.
  auto left = Call(*commands_, {"XPENDING", "{jobd:p3}:jobs", "jobd"});
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->elements[0].integer, 0);
}

// Take waits on the blocking connection: commands go on meanwhile, and an
// entry published while it waits is delivered.
TEST_F(WorkStreamTest, TakeBlocksOnItsOwnConnection) {
  ASSERT_TRUE((Wait<bool>([&](WorkStream::Done<bool> done) {
                stream_->EnsureGroup(0, std::move(done));
              })).ok());
  auto promise = std::make_shared<
      std::promise<absl::StatusOr<std::vector<StreamEntry>>>>();
  auto future = promise->get_future();
  stream_->Take(0, WorkStream::Consumer("n", 1), 1, absl::Seconds(10),
                [promise](absl::StatusOr<std::vector<StreamEntry>> r) {
                  promise->set_value(std::move(r));
                });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Call(*commands_, {"PING"}).ok());
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(0)),
            std::future_status::timeout);
  ASSERT_TRUE((Wait<std::string>([&](WorkStream::Done<std::string> done) {
                stream_->Publish(0, "late", std::move(done));
              })).ok());
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  auto got = future.get();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].payload, "late");
}

// A shared job published twice (a lost reply, a restart before the
// journal said "published") is one entry; TakeAny reads it from any
// partition with its fields.
TEST_F(WorkStreamTest, PublishingAJobTwiceMakesOneEntry) {
  for (int p : {1, 2}) {
    ASSERT_TRUE((Wait<bool>([&](WorkStream::Done<bool> done) {
                  stream_->EnsureGroup(p, std::move(done));
                })).ok());
  }
  JobEntry job{.origin = "a",
               .id = 7,
               .create_ns = 123,
               .owner = "alice",
               .spec = "spec-bytes"};
  auto first = Wait<std::string>([&](WorkStream::Done<std::string> done) {
    stream_->PublishJob(2, job, absl::Minutes(1), std::move(done));
  });
  auto second = Wait<std::string>([&](WorkStream::Done<std::string> done) {
    stream_->PublishJob(2, job, absl::Minutes(1), std::move(done));
  });
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*first, *second);
  auto len = Call(*commands_, {"XLEN", WorkStream::JobsKey(2)});
  ASSERT_TRUE(len.ok());
  EXPECT_EQ(len->integer, 1);
  auto taken = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        stream_->TakeAny({1, 2}, WorkStream::Consumer("b", 1), 5,
                         absl::Seconds(1), std::move(done));
      });
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  const StreamEntry& e = (*taken)[0];
  EXPECT_EQ(e.id, *first);
  EXPECT_EQ(e.partition, 2);
  EXPECT_EQ(e.payload, "spec-bytes");
  EXPECT_EQ(e.origin, "a");
  EXPECT_EQ(e.origin_id, "7");
  EXPECT_EQ(e.create_ns, "123");
  EXPECT_EQ(e.owner, "alice");
}

// CompleteJob is fenced like Complete, writes the origin's results
// stream, deletes the entry, and dead-letters it when asked; a reclaim
// reports each entry's delivery count.
TEST_F(WorkStreamTest, CompleteJobIsFencedAndCanDeadLetter) {
  ASSERT_TRUE((Wait<bool>([&](WorkStream::Done<bool> done) {
                stream_->EnsureGroup(0, std::move(done));
              })).ok());
  JobEntry job{.origin = "a", .id = 1, .create_ns = 5, .spec = "s"};
  std::vector<std::string> ids;
  for (uint64_t id : {1, 2}) {
    job.id = id;
    auto r = Wait<std::string>([&](WorkStream::Done<std::string> done) {
      stream_->PublishJob(0, job, absl::Minutes(1), std::move(done));
    });
    ASSERT_TRUE(r.ok()) << r.status();
    ids.push_back(*r);
  }
  const std::string b = WorkStream::Consumer("b", 1);
  const std::string c = WorkStream::Consumer("c", 2);
  ASSERT_TRUE((Wait<std::vector<StreamEntry>>(
                   [&](WorkStream::Done<std::vector<StreamEntry>> done) {
                     stream_->TakeAny({0}, b, 2, absl::Seconds(1),
                                      std::move(done));
                   }))
                  .ok());
  absl::SleepFor(absl::Milliseconds(20));  // Idle time for the reclaim.
  auto reclaimed = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        stream_->ReclaimCounted(0, c, absl::Milliseconds(10), 10,
                                std::move(done));
      });
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  ASSERT_EQ(reclaimed->size(), 2u);
  EXPECT_EQ((*reclaimed)[0].deliveries, 2);
  EXPECT_EQ((*reclaimed)[0].origin, "a");
  auto complete = [&](const std::string& consumer, const std::string& id,
                      bool dead) {
    return Wait<Fence>([&](WorkStream::Done<Fence> done) {
      stream_->CompleteJob(0, consumer, id, "a", "end of " + id, dead,
                           std::move(done));
    });
  };
  auto stale = complete(b, ids[0], false);
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(*stale, Fence::kOwnedByAnother);
  auto done = complete(c, ids[0], false);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(*done, Fence::kDone);
  auto dead = complete(c, ids[1], true);
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(*dead, Fence::kDone);
  auto again = complete(c, ids[1], false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, Fence::kNotPending);
  // Two results for a, one dead letter, no entry left in the job stream.
  auto results = Call(*commands_, {"XLEN", WorkStream::ResultsKey(0, "a")});
  ASSERT_TRUE(results.ok());
  EXPECT_EQ(results->integer, 2);
  auto letters = Call(*commands_, {"XLEN", WorkStream::DeadLetterKey(0)});
  ASSERT_TRUE(letters.ok());
  EXPECT_EQ(letters->integer, 1);
  auto left = Call(*commands_, {"XLEN", WorkStream::JobsKey(0)});
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->integer, 0);
  auto read = Wait<std::vector<StreamEntry>>(
      [&](WorkStream::Done<std::vector<StreamEntry>> done) {
        WorkStream::ReadResults(*blocking_, {0}, "a", {"0"}, 10,
                                absl::Milliseconds(100), std::move(done));
      });
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].payload, "end of " + ids[0]);
}

}  // namespace
}  // namespace jobd::cluster
