// Unit tests of JobOutputs (server/scheduler/job_output.h): offsets and
// resuming, the per-job and total bounds (the tail kept, the drop
// counted), ended jobs' output going first, and the waiters.
#include "server/scheduler/job_output.h"

#include <string>

#include "gtest/gtest.h"

namespace jobd {
namespace {

constexpr size_t kOverhead = JobOutputs::kPieceOverhead;

std::string All(const OutputRead& r) {
  std::string s;
  for (const OutputPiece& p : r.pieces) s += p.data;
  return s;
}

TEST(JobOutputsTest, KeepsStreamsInOrderWithOffsetsAndResumes) {
  JobOutputs out({.per_job_bytes = 1 << 20, .total_bytes = 1 << 20});
  out.Open(1);
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, "hello ");
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, "world\n");  // Merged.
  out.Append(1, v1::OUTPUT_STREAM_STDERR, "oops\n");
  OutputRead r = out.Read(1, 0, 1 << 20, false);
  ASSERT_EQ(r.pieces.size(), 2u);
  EXPECT_EQ(r.pieces[0].stream, v1::OUTPUT_STREAM_STDOUT);
  EXPECT_EQ(r.pieces[0].data, "hello world\n");
  EXPECT_EQ(r.pieces[1].stream, v1::OUTPUT_STREAM_STDERR);
  EXPECT_EQ(r.pieces[1].offset, 12u);
  EXPECT_EQ(r.next_offset, 17u);
  EXPECT_EQ(r.dropped, 0u);
  EXPECT_FALSE(r.ended);
  // From the middle of a piece, a few bytes at a time.
  r = out.Read(1, 6, 4, false);
  EXPECT_EQ(All(r), "worl");
  EXPECT_EQ(r.next_offset, 10u);
  r = out.Read(1, r.next_offset, 100, false);
  EXPECT_EQ(All(r), "d\noops\n");
  // Nothing new.
  r = out.Read(1, 17, 100, false);
  EXPECT_TRUE(r.pieces.empty());
  EXPECT_EQ(r.next_offset, 17u);
  // Ended: the read that reaches the end says so.
  for (auto& fn : out.End(1)) fn();
  EXPECT_FALSE(out.Read(1, 0, 5, false).ended);
  EXPECT_TRUE(out.Read(1, 0, 100, false).ended);
}

TEST(JobOutputsTest, OutputOfJobsNotRunningIsDropped) {
  JobOutputs out({});
  out.Append(7, v1::OUTPUT_STREAM_STDOUT, "before it started");
  EXPECT_TRUE(out.Read(7, 0, 100, false).pieces.empty());
  EXPECT_TRUE(out.Read(7, 0, 100, true).ended);  // Ended without output.
  out.Open(7);
  out.Append(7, v1::OUTPUT_STREAM_STDOUT, "a");
  (void)out.End(7);
  out.Append(7, v1::OUTPUT_STREAM_STDOUT, "after it ended");
  EXPECT_EQ(All(out.Read(7, 0, 100, true)), "a");
}

TEST(JobOutputsTest, KeepsTheTailPerJobAndSaysWhatWasDropped) {
  const size_t per_job = 1000;
  JobOutputs out({.per_job_bytes = per_job, .total_bytes = 1 << 20});
  out.Open(1);
  std::string written;
  for (int i = 0; i < 100; ++i) {
    const std::string line = "line " + std::to_string(i) + "\n";
    out.Append(1, i % 2 ? v1::OUTPUT_STREAM_STDERR : v1::OUTPUT_STREAM_STDOUT,
               line);
    written += line;
  }
  EXPECT_LE(out.stats().bytes, per_job);
  const OutputRead r = out.Read(1, 0, 1 << 20, false);
  ASSERT_FALSE(r.pieces.empty());
  EXPECT_GT(r.dropped, 0u);
  EXPECT_EQ(r.dropped, r.pieces.front().offset);
  EXPECT_EQ(r.next_offset, written.size());
  // What is kept is exactly the tail of what was written.
  EXPECT_EQ(All(r), written.substr(r.dropped));
  EXPECT_EQ(out.stats().dropped, r.dropped);
  // One write larger than the whole budget: its tail.
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, std::string(5000, 'x') + "END");
  const OutputRead big = out.Read(1, 0, 1 << 20, false);
  EXPECT_EQ(big.pieces.size(), 1u);
  EXPECT_EQ(big.pieces[0].data.size(), per_job - kOverhead);
  EXPECT_TRUE(big.pieces[0].data.ends_with("END"));
  EXPECT_EQ(big.next_offset, written.size() + 5003);
}

TEST(JobOutputsTest, OverTheTotalEndedJobsGoFirstThenTheWritersHead) {
  JobOutputs out({.per_job_bytes = 600, .total_bytes = 1000});
  out.Open(1);
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, std::string(400, 'a'));
  (void)out.End(1);
  out.Open(2);
  out.Append(2, v1::OUTPUT_STREAM_STDOUT, std::string(400, 'b'));
  EXPECT_EQ(out.stats().bytes, 2 * (400 + kOverhead));
  EXPECT_EQ(out.stats().jobs, 2u);
  // Job 3 needs room: ended job 1 goes, running job 2 stays whole.
  out.Open(3);
  out.Append(3, v1::OUTPUT_STREAM_STDOUT, std::string(400, 'c'));
  EXPECT_LE(out.stats().bytes, 1000u);
  EXPECT_EQ(out.stats().jobs, 2u);  // 2 and 3; 1 holds nothing now.
  const OutputRead gone = out.Read(1, 0, 1000, true);
  EXPECT_TRUE(gone.pieces.empty());
  EXPECT_EQ(gone.dropped, 400u);
  EXPECT_TRUE(gone.ended);
  EXPECT_EQ(All(out.Read(2, 0, 1000, false)), std::string(400, 'b'));
  // No ended job left: the writer loses its own head.
  out.Append(3, v1::OUTPUT_STREAM_STDOUT, std::string(100, 'd'));
  EXPECT_LE(out.stats().bytes, 1000u);
  const OutputRead r3 = out.Read(3, 0, 1000, false);
  EXPECT_GT(r3.dropped, 0u);
  EXPECT_TRUE(All(r3).ends_with(std::string(100, 'd')));
  EXPECT_EQ(All(out.Read(2, 0, 1000, false)), std::string(400, 'b'));
  // Forgotten: freed.
  out.Forget(2);
  EXPECT_EQ(out.stats().jobs, 1u);
  out.Forget(3);
  out.Forget(1);
  EXPECT_EQ(out.stats().bytes, 0u);
  EXPECT_EQ(out.stats().jobs, 0u);
}

TEST(JobOutputsTest, WaitersWakeOnOutputOrEndOnceAndCanBeRemoved) {
  JobOutputs out({});
  int a = 0, b = 0, c = 0;
  // A queued job: the waiter waits for it to start and write.
  EXPECT_TRUE(out.AddWaiter(1, 0, &a, [&a] { ++a; }));
  out.Open(1);
  EXPECT_EQ(a, 0);
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, "x");
  EXPECT_EQ(a, 1);
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, "y");
  EXPECT_EQ(a, 1);  // One-shot.
  // Output past the offset already: not kept.
  EXPECT_FALSE(out.AddWaiter(1, 1, &b, [&b] { ++b; }));
  EXPECT_TRUE(out.AddWaiter(1, 2, &b, [&b] { ++b; }));
  EXPECT_TRUE(out.AddWaiter(1, 2, &c, [&c] { ++c; }));
  out.RemoveWaiter(1, &c);
  for (auto& fn : out.End(1)) fn();
  EXPECT_EQ(b, 1);
  EXPECT_EQ(c, 0);
  // Ended: nothing to wait for.
  EXPECT_FALSE(out.AddWaiter(1, 2, &c, [&c] { ++c; }));
}

TEST(JobOutputsTest, NoOutputKeptWithAZeroBudget) {
  JobOutputs out({.per_job_bytes = 0, .total_bytes = 1 << 20});
  out.Open(1);
  out.Append(1, v1::OUTPUT_STREAM_STDOUT, "hello");
  const OutputRead r = out.Read(1, 0, 100, false);
  EXPECT_TRUE(r.pieces.empty());
  EXPECT_EQ(r.dropped, 5u);
  EXPECT_EQ(r.next_offset, 5u);
  EXPECT_EQ(out.stats().bytes, 0u);
  EXPECT_EQ(out.stats().jobs, 0u);
}

}  // namespace
}  // namespace jobd
