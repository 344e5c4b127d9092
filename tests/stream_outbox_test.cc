// Unit tests of a stream's outgoing side (server/frontend/stream_outbox.h):
// Fill writes queued events in order, holds back at the first one whose
// journal ticket is not durable (asking once for a wait), and keeps a
// message within its count and byte limits; the write protocol finishes
// once, only when nothing is queued or in flight; the bytes of queued
// events are counted, and shown to the service's total in granules.
#include "server/frontend/stream_outbox.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;

Event MakeEvent(uint64_t sequence, uint64_t ticket = 0,
                size_t result_bytes = 0) {
  Event e;
  e.sequence = sequence;
  e.job_id = sequence;
  e.ticket = ticket;
  e.type = v1::EVENT_TYPE_STARTED;
  if (result_bytes > 0) {
    e.type = v1::EVENT_TYPE_SUCCEEDED;
    auto end = std::make_shared<JobEnd>();
    end->state = v1::JOB_STATE_SUCCEEDED;
    end->mutable_result().set_payload(std::string(result_bytes, 'x'));
    end->bytes = static_cast<uint32_t>(end->result().ByteSizeLong());
    e.set_end(std::move(end));
  }
  return e;
}

std::vector<uint64_t> Sequences(const v1::WatchJobsResponse& r) {
  std::vector<uint64_t> out;
  for (const v1::JobEvent& e : r.events()) out.push_back(e.sequence());
  return out;
}

uint64_t NoWait(Outbox<Event>& out, v1::WatchJobsResponse& r, uint64_t durable,
                size_t max_bytes = 16 << 20) {
  return out.Fill(*r.mutable_events(), durable, max_bytes, [](const Event&) {});
}

TEST(OutboxTest, FillWritesInOrderAndCallsSentForEach) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<TaggedEvent> out(all);
  for (uint64_t i = 1; i <= 3; ++i) out.Push({MakeEvent(i), 100 + i});
  v1::SubmitResponse r;
  std::vector<uint64_t> sent;
  EXPECT_EQ(
      out.Fill(*r.mutable_events(), 0, 1 << 20,
               [&](const TaggedEvent& e) { sent.push_back(e.event.sequence); }),
      0u);
  EXPECT_THAT(sent, ElementsAre(1, 2, 3));
  ASSERT_EQ(r.events_size(), 3);
  EXPECT_EQ(r.events(0).client_tag(), 101u);
  EXPECT_EQ(r.events(2).job_id(), "3");
  EXPECT_TRUE(out.items.empty());
  EXPECT_EQ(out.items_bytes, 0u);
  // Until its write is done, the message is held.
  EXPECT_EQ(out.account.bytes(), out.in_flight_bytes);
  out.WriteDone(true);
  EXPECT_EQ(out.account.bytes(), 0u);
}

TEST(OutboxTest, FillHoldsBackAtTheFirstEventNotDurableAndAsksOnce) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  out.Push(MakeEvent(1, /*ticket=*/1));
  out.Push(MakeEvent(2, /*ticket=*/2));
  out.Push(MakeEvent(3, /*ticket=*/1));  // Behind 2: waits with it.
  v1::WatchJobsResponse r;
  EXPECT_EQ(NoWait(out, r, /*durable=*/1), 2u);  // Wait for ticket 2.
  EXPECT_THAT(Sequences(r), ElementsAre(1));
  r.Clear();
  EXPECT_EQ(NoWait(out, r, 1), 0u);  // Asked already: no second wait.
  EXPECT_EQ(r.events_size(), 0);
  out.Push(MakeEvent(4, /*ticket=*/3));
  EXPECT_EQ(NoWait(out, r, 2), 3u);  // 2 and 3 go; 4 waits for ticket 3.
  EXPECT_THAT(Sequences(r), ElementsAre(2, 3));
  r.Clear();
  EXPECT_EQ(NoWait(out, r, 3), 0u);
  EXPECT_THAT(Sequences(r), ElementsAre(4));
}

TEST(OutboxTest, AMessageTakesAtMostItsCountOfEvents) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  for (int i = 1; i <= kMaxEventsPerMessage + 5; ++i) out.Push(MakeEvent(i));
  v1::WatchJobsResponse r;
  NoWait(out, r, 0);
  EXPECT_EQ(r.events_size(), kMaxEventsPerMessage);
  EXPECT_EQ(out.items.size(), 5u);
}

TEST(OutboxTest, AMessageStaysWithinTheByteLimitButTheFirstEventAlwaysGoes) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  for (int i = 1; i <= 3; ++i) out.Push(MakeEvent(i, 0, 1000));
  v1::WatchJobsResponse r;
  // Far below one event: each message takes one.
  NoWait(out, r, 0, /*max_bytes=*/10);
  EXPECT_THAT(Sequences(r), ElementsAre(1));
  r.Clear();
  // Room for two.
  NoWait(out, r, 0, /*max_bytes=*/2100);
  EXPECT_THAT(Sequences(r), ElementsAre(2, 3));
  EXPECT_LE(r.ByteSizeLong(), 2100u);
}

TEST(OutboxTest, AMessageStopsOnceItHoldsItsShareOfBytes) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  // 300 KiB each: the fourth starts past kMaxBytesPerMessage (1 MiB).
  for (int i = 1; i <= 6; ++i) out.Push(MakeEvent(i, 0, 300 << 10));
  v1::WatchJobsResponse r;
  NoWait(out, r, 0);
  EXPECT_EQ(r.events_size(), 4);
  EXPECT_EQ(out.items.size(), 2u);
}

TEST(OutboxTest, QueuedBytesAreCountedAndGivenBack) {
  auto all = std::make_shared<StreamBuffers>();
  {
    Outbox<Event> out(all);
    EXPECT_EQ(all->streams.load(), 1u);
    out.Push(MakeEvent(1, 0, 10 << 10));
    out.Push(MakeEvent(2, 0, 10 << 10));
    const uint64_t each = EventBytes(out.items.front());
    EXPECT_GT(each, 10u << 10);
    EXPECT_EQ(out.account.bytes(), 2 * each);
    // The total sees whole granules only.
    EXPECT_EQ(all->bytes.load(), BufferAccount::kGranule);
    out.PopFront();
    EXPECT_EQ(out.account.bytes(), each);
    EXPECT_EQ(all->bytes.load(), 0u);
    out.Push(MakeEvent(3, 0, 40 << 10));
    EXPECT_EQ(all->bytes.load(), out.account.bytes() / BufferAccount::kGranule *
                                     BufferAccount::kGranule);
    out.Clear();
    EXPECT_EQ(out.account.bytes(), 0u);
    EXPECT_EQ(all->bytes.load(), 0u);
    out.Push(MakeEvent(4, 0, 40 << 10));
  }
  // Gone: it gives back what it showed, and its stream.
  EXPECT_EQ(all->bytes.load(), 0u);
  EXPECT_EQ(all->streams.load(), 0u);
}

TEST(OutboxTest, AMessageInFlightStaysCountedUntilItsWriteIsDone) {
  // A client that does not read leaves the message with gRPC: the stream
  // still holds it (and gRPC's copy), so it can be over its limit.
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  out.Push(MakeEvent(1, 0, 100 << 10));
  out.Push(MakeEvent(2, 0, 100 << 10));
  v1::WatchJobsResponse r;
  NoWait(out, r, 0);
  ASSERT_EQ(r.events_size(), 2);
  out.writing = true;
  EXPECT_TRUE(out.items.empty());
  EXPECT_GE(out.account.bytes(), 2 * r.ByteSizeLong());
  EXPECT_GT(all->bytes.load(), 0u);
  EXPECT_TRUE(out.account.Over(/*cap=*/200 << 10, 0, 1));
  out.WriteDone(true);
  EXPECT_EQ(out.account.bytes(), 0u);
  EXPECT_EQ(all->bytes.load(), 0u);
}

TEST(BufferAccountTest, OverItsCapOrItsShareOfAFullTotal) {
  auto all = std::make_shared<StreamBuffers>();
  BufferAccount a(all), b(all);
  EXPECT_FALSE(a.Over(1, 1, 1));  // Holds nothing: never over.
  a.Charge(1000);
  EXPECT_TRUE(a.Over(1000, 0, 1));
  EXPECT_FALSE(a.Over(1000, 0, 2));  // Twice its cap.
  EXPECT_FALSE(a.Over(0, 0, 1));     // No cap, no total.
  // Under a granule: never among those over their share.
  EXPECT_FALSE(a.Over(0, 1, 1));
  a.Charge(100 << 10);
  b.Charge(10 << 10);
  const uint64_t total = all->bytes.load();  // a's granules: b shows none.
  EXPECT_EQ(total,
            (a.bytes() / BufferAccount::kGranule) * BufferAccount::kGranule);
  // The total is reached: a holds more than half of it (two streams).
  EXPECT_TRUE(a.Over(0, total, 1));
  EXPECT_FALSE(b.Over(0, total, 1));
  EXPECT_FALSE(a.Over(0, total + 1, 1));  // Not reached yet.
  a.Release(a.bytes());
  EXPECT_EQ(all->bytes.load(), 0u);
}

TEST(OutboxTest, FinishesOnceOnlyWithNothingQueuedOrInFlight) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  grpc::Status status;
  EXPECT_FALSE(out.TakeFinish(&status));  // Not asked.
  out.Push(MakeEvent(1));
  out.RequestFinish(grpc::Status::OK);
  out.RequestFinish(grpc::Status(grpc::StatusCode::INTERNAL, "later"));
  EXPECT_FALSE(out.TakeFinish(&status));  // Still queued.
  out.writing = true;
  out.PopFront();
  EXPECT_FALSE(out.TakeFinish(&status));  // A write in flight.
  out.WriteDone(true);
  ASSERT_TRUE(out.TakeFinish(&status));
  EXPECT_TRUE(status.ok());               // The first request's.
  EXPECT_FALSE(out.TakeFinish(&status));  // Once.
}

TEST(OutboxTest, AFailedWriteDropsWhatIsQueuedAndEndsCancelled) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  out.Push(MakeEvent(1, 0, 1000));
  out.Push(MakeEvent(2, 0, 1000));
  out.writing = true;
  out.WriteDone(false);
  EXPECT_TRUE(out.items.empty());
  EXPECT_EQ(out.account.bytes(), 0u);
  grpc::Status status;
  ASSERT_TRUE(out.TakeFinish(&status));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST(OutboxTest, AWriteOutstandingPastASecondIsStalled) {
  auto all = std::make_shared<StreamBuffers>();
  Outbox<Event> out(all);
  out.write_since = absl::Now() - absl::Seconds(5);
  EXPECT_FALSE(out.Stalled());  // No write in flight.
  out.writing = true;
  EXPECT_TRUE(out.Stalled());
  out.write_since = absl::Now();
  EXPECT_FALSE(out.Stalled());
}

}  // namespace
}  // namespace jobd
