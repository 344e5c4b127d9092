// Unit tests: the worker -> daemon result ring (workers/result_ring.h) on a
// real memfd: entries in order across many wrap-arounds, a producer that
// waits for room and is woken, entries surviving the producer process's
// death, and shared memory scribbled on by the producer.
#include "workers/process/result_ring.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

// Two mappings of one fresh ring: producer and consumer.
struct RingPair {
  ResultRing producer;
  ResultRing consumer;
};

RingPair NewRing(size_t capacity) {
  absl::StatusOr<UniqueFd> fd = ResultRing::Create(capacity);
  EXPECT_TRUE(fd.ok()) << fd.status();
  absl::StatusOr<ResultRing> a = ResultRing::Map(fd->get());
  absl::StatusOr<ResultRing> b = ResultRing::Map(fd->get());
  EXPECT_TRUE(a.ok() && b.ok());
  return {*std::move(a), *std::move(b)};
}

std::string Payload(int i) {
  // Lengths 0..99, so entries pad differently and wrap at every offset.
  return std::string(static_cast<size_t>(i % 100),
                     static_cast<char>('a' + i % 26));
}

// Takes every committed entry; returns how many.
int DrainInto(ResultRing& ring, std::vector<std::string>& out) {
  int n = 0;
  for (;;) {
    absl::StatusOr<std::optional<ResultRing::Entry>> e = ring.Peek();
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok() || !e->has_value()) break;
    EXPECT_EQ((*e)->kind, ResultRing::kResult);
    out.emplace_back((*e)->bytes);
    ring.Consume();
    ++n;
  }
  ring.Release();
  return n;
}

TEST(ResultRingTest, RejectsABadCapacityOrAForeignFd) {
  EXPECT_FALSE(ResultRing::Create(5000).ok());
  EXPECT_FALSE(ResultRing::Create(1024).ok());
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  EXPECT_FALSE(ResultRing::Map(r.get()).ok());
}

TEST(ResultRingTest, EntriesComeOutInOrderAcrossWrapArounds) {
  RingPair ring = NewRing(4096);
  std::vector<std::string> got;
  int wakes = 0;
  for (int i = 0; i < 5000; ++i) {
    ring.producer.Append(ResultRing::kResult, Payload(i), [&] { ++wakes; });
    if (i % 7 == 6) DrainInto(ring.consumer, got);  // Never lets it fill.
  }
  DrainInto(ring.consumer, got);
  ASSERT_EQ(got.size(), 5000u);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(got[i], Payload(i)) << i;
  EXPECT_EQ(wakes, 0);
  EXPECT_EQ(ring.producer.used(), 0u);
}

TEST(ResultRingTest, AFullRingWakesTheConsumerAndWaitsForRoom) {
  RingPair ring = NewRing(4096);
  std::atomic<int> wakes{0};
  std::atomic<bool> done{false};
  std::thread producer([&] {
    for (int i = 0; i < 20000; ++i) {
      ring.producer.Append(ResultRing::kResult, Payload(i), [&] { ++wakes; });
    }
    done = true;
  });
  std::vector<std::string> got;
  // The consumer only looks when woken, as the daemon does on a doorbell.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  int seen_wakes = 0;
  while (got.size() < 20000 && absl::Now() < give_up) {
    if (wakes.load() == seen_wakes && !done) {
      std::this_thread::yield();
      continue;
    }
    seen_wakes = wakes.load();
    DrainInto(ring.consumer, got);
  }
  producer.join();
  ASSERT_EQ(got.size(), 20000u);
  for (int i = 0; i < 20000; ++i) ASSERT_EQ(got[i], Payload(i)) << i;
  EXPECT_GT(wakes.load(), 0);
}

TEST(ResultRingTest, CommittedEntriesSurviveTheProducersDeath) {
  absl::StatusOr<UniqueFd> fd = ResultRing::Create(1 << 16);
  ASSERT_TRUE(fd.ok());
  const pid_t pid = fork();
  if (pid == 0) {
    absl::StatusOr<ResultRing> mine = ResultRing::Map(fd->get());
    if (!mine.ok()) _exit(1);
    for (int i = 0; i < 100; ++i) {
      mine->Append(ResultRing::kResult, Payload(i), [] {});
    }
    raise(SIGKILL);  // As a crashing job would, right after its results.
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  absl::StatusOr<ResultRing> ring = ResultRing::Map(fd->get());
  ASSERT_TRUE(ring.ok());
  std::vector<std::string> got;
  EXPECT_EQ(DrainInto(*ring, got), 100);
  EXPECT_EQ(got.back(), Payload(99));
}

TEST(ResultRingTest, ScribbledSharedMemoryIsDataLossNotACrash) {
  struct Case {
    const char* name;
    uint64_t write_pos;
    uint64_t read_pos;
    uint32_t length;
    uint32_t kind;
    const char* error;
  };
  const Case cases[] = {
      {"write position past the room", 8192, 0, 4, ResultRing::kResult,
       "out of range"},
      {"misaligned write position", 12, 0, 4, ResultRing::kResult,
       "out of range"},
      // Its entry header would straddle the ring's end, past the mapping.
      {"misaligned read position", 4096, 4092, 4, ResultRing::kResult,
       "out of range"},
      {"read position past the write position", 16, 24, 4, ResultRing::kResult,
       "out of range"},
      {"entry longer than committed", 16, 0, 4000, ResultRing::kResult,
       "bad entry"},
      {"entry past the end", 4096, 0, 5000, ResultRing::kResult, "bad entry"},
      {"unknown kind", 16, 0, 4, 77, "bad entry"},
      {"padding not to the end", 4096, 0, 8, ResultRing::kPadding,
       "bad padding"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<UniqueFd> fresh = ResultRing::Create(4096);
    ASSERT_TRUE(fresh.ok());
    // Scribble as a buggy task could: the header page, then the entry.
    // (The write position is the page's first word, the read position the
    // first of its second cache line.)
    ASSERT_EQ(pwrite(fresh->get(), &c.write_pos, sizeof(c.write_pos), 0),
              static_cast<ssize_t>(sizeof(c.write_pos)));
    ASSERT_EQ(pwrite(fresh->get(), &c.read_pos, sizeof(c.read_pos), 64),
              static_cast<ssize_t>(sizeof(c.read_pos)));
    const uint32_t entry[2] = {c.length, c.kind};
    ASSERT_EQ(pwrite(fresh->get(), entry, sizeof(entry),
                     static_cast<off_t>(4096 + (c.read_pos & 4088))),
              static_cast<ssize_t>(sizeof(entry)));
    absl::StatusOr<ResultRing> ring = ResultRing::Map(fresh->get());
    ASSERT_TRUE(ring.ok());
    absl::StatusOr<std::optional<ResultRing::Entry>> e = ring->Peek();
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(e.status().message()), HasSubstr(c.error));
  }
}

}  // namespace
}  // namespace jobd
