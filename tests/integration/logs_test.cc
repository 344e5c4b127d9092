// Integration tests of job output (README: Job output) on a daemon in the
// test's process: exec's stdout and stderr streamed while the job runs,
// StreamJobOutput with and without follow (a follower ends when the job
// does), the per-job bound (the tail kept, the gap told), resuming from an
// offset, log lines from SDK tasks on every executor, and refusals.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/reactor_fixture.h"
#include "tests/integration/service_fixture.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::KwSpec;
using testing::List;
using testing::Num;
using testing::ServiceTest;
using testing::Stream;
using testing::SubmitAll;
using testing::TempDir;
using testing::WaitFor;

v1::JobSpec Sh(const std::vector<std::string>& script_and_args) {
  std::vector<std::string> argv = {"sh", "-c"};
  argv.insert(argv.end(), script_and_args.begin(), script_and_args.end());
  return KwSpec("exec", {{"argv", List(argv)}});
}

// What a StreamJobOutput stream gave.
struct Seen {
  std::string out, err, log;
  uint64_t dropped = 0;
  uint64_t first_offset = UINT64_MAX;
  uint64_t next_offset = 0;
  bool ended = false;
  int messages = 0;
  grpc::Status status;

  void Add(const v1::StreamJobOutputResponse& r) {
    ++messages;
    dropped += r.dropped_bytes();
    for (const v1::OutputChunk& c : r.chunks()) {
      first_offset = std::min<uint64_t>(first_offset, c.offset());
      (c.stream() == v1::OUTPUT_STREAM_STDOUT   ? out
       : c.stream() == v1::OUTPUT_STREAM_STDERR ? err
                                                : log) += c.data();
    }
    next_offset = r.next_offset();
    ended |= r.ended();
  }
};

class JobOutputTest : public ServiceTest {
 protected:
  void SetUp() override { StartDaemon({"--exec-allow", "/bin/sh"}); }

  // Submits `spec` and returns its id once ACCEPTED (the stream is kept
  // open in stream_ until the test ends).
  std::string Start(const v1::JobSpec& spec) {
    submit_ctx_ = std::make_unique<grpc::ClientContext>();
    Deadline(*submit_ctx_, absl::Seconds(60));
    stream_ = stub_->Submit(submit_ctx_.get());
    EXPECT_TRUE(stream_->Write(testing::SubmitRequestOf({spec})));
    v1::SubmitResponse r;
    while (stream_->Read(&r)) {
      for (const v1::JobEvent& e : r.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) return e.job_id();
        ADD_FAILURE() << "unexpected event " << e.ShortDebugString();
        return "";
      }
    }
    ADD_FAILURE() << "no ACCEPTED event";
    return "";
  }

  // Reads the whole stream (not following: what is kept now).
  Seen ReadAll(const std::string& id, uint64_t offset = 0) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::StreamJobOutputRequest req;
    req.set_job_id(id);
    req.set_offset(offset);
    auto reader = stub_->StreamJobOutput(&ctx, req);
    Seen seen;
    v1::StreamJobOutputResponse r;
    while (reader->Read(&r)) seen.Add(r);
    seen.status = reader->Finish();
    return seen;
  }

  std::unique_ptr<grpc::ClientContext> submit_ctx_;
  std::unique_ptr<Stream> stream_;
};

TEST_F(JobOutputTest, FollowSeesOutputWhileTheJobRunsAndEndsWithIt) {
  TempDir dir;
  const std::string fifo = dir.path() + "/go";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string id = Start(
      Sh({"echo first; echo warning >&2; read x < \"$0\"; echo \"got $x\"",
          fifo}));
  ASSERT_FALSE(id.empty());

  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::StreamJobOutputRequest req;
  req.set_job_id(id);
  req.set_follow(true);
  auto reader = stub_->StreamJobOutput(&ctx, req);
  Seen seen;
  v1::StreamJobOutputResponse r;
  // Both streams arrive while the program waits on the fifo.
  while (!(seen.out == "first\n" && seen.err == "warning\n") &&
         reader->Read(&r)) {
    seen.Add(r);
  }
  ASSERT_EQ(seen.out, "first\n");
  ASSERT_EQ(seen.err, "warning\n");
  EXPECT_FALSE(seen.ended);
  EXPECT_EQ(GetJob(id, absl::ZeroDuration()).state(), v1::JOB_STATE_RUNNING);

  // Let it go on and end: the follower gets the rest, then the end.
  int fd = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        return fd >= 0;
      },
      absl::Seconds(10)));
  ASSERT_EQ(write(fd, "go\n", 3), 3);
  close(fd);
  while (reader->Read(&r)) seen.Add(r);
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(seen.ended);
  EXPECT_EQ(seen.out, "first\ngot go\n");
  EXPECT_EQ(seen.dropped, 0u);
  EXPECT_EQ(seen.next_offset, 6u + 8u + 7u);
  EXPECT_EQ(GetJob(id, absl::Seconds(10)).state(), v1::JOB_STATE_SUCCEEDED);

  // Ended: kept for a later reader, from any offset.
  Seen again = ReadAll(id);
  EXPECT_TRUE(again.status.ok());
  EXPECT_TRUE(again.ended);
  EXPECT_EQ(again.out, "first\ngot go\n");
  EXPECT_EQ(again.err, "warning\n");
  // Offsets count both streams as the daemon read them: "first" and
  // "warning" came from two pipes at once, in either order, and took the
  // first 6 + 8 bytes; "got go" came after both.
  Seen tail = ReadAll(id, 6 + 8);
  EXPECT_EQ(tail.out, "got go\n");
  EXPECT_EQ(tail.err, "");
  EXPECT_EQ(tail.dropped, 0u);
}

TEST_F(JobOutputTest, FollowingAQueuedOrSilentJobEndsWhenItEnds) {
  // A job that writes nothing: the follower waits, then ends with it.
  const std::string id = Start(Sh({"sleep 0.3"}));
  ASSERT_FALSE(id.empty());
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::StreamJobOutputRequest req;
  req.set_job_id(id);
  req.set_follow(true);
  auto reader = stub_->StreamJobOutput(&ctx, req);
  Seen seen;
  v1::StreamJobOutputResponse r;
  while (reader->Read(&r)) seen.Add(r);
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(seen.ended);
  EXPECT_EQ(seen.out, "");
  // Over by then, durable or not, GetJob says how.
  EXPECT_EQ(GetJob(id, absl::Seconds(10)).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(JobOutputTest, KeepsTheTailPerJobAndSaysHowMuchWasDropped) {
  StartDaemon({"--exec-allow", "/bin/sh", "--output-bytes-per-job", "4K"});
  // ~29 KB of numbered lines.
  const v1::JobEvent e = testing::RunOne(
      *stub_, Sh({"i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; "
                  "i=$((i+1)); done"}));
  ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  std::string all;
  for (int i = 0; i < 3000; ++i) all += "line " + std::to_string(i) + "\n";
  const Seen seen = ReadAll(e.job_id());
  ASSERT_TRUE(seen.status.ok()) << seen.status.error_message();
  EXPECT_TRUE(seen.ended);
  EXPECT_LE(seen.out.size(), 4096u);
  EXPECT_GT(seen.out.size(), 2048u);
  EXPECT_EQ(seen.dropped, all.size() - seen.out.size());
  EXPECT_EQ(seen.first_offset, seen.dropped);
  EXPECT_EQ(seen.next_offset, all.size());
  EXPECT_EQ(seen.out, all.substr(seen.dropped));
  // GetStats counts what is held (with its overhead) and what was dropped.
  const v1::GetStatsResponse stats = testing::GetStats(*stub_);
  EXPECT_EQ(stats.output_jobs(), 1u);
  EXPECT_GE(stats.output_bytes(), seen.out.size());
  EXPECT_LE(stats.output_bytes(), 2 * 4096u);
  EXPECT_EQ(stats.output_dropped_bytes(), seen.dropped);
}

TEST_F(JobOutputTest, TaskLogLinesFromEveryExecutor) {
  for (v1::Executor ex :
       {v1::EXECUTOR_THREAD, v1::EXECUTOR_PROCESS, v1::EXECUTOR_REACTOR}) {
    v1::JobSpec spec = KwSpec("log", {{"lines", Num(3)}});
    spec.set_executor(ex);
    const v1::JobEvent e = testing::RunOne(*stub_, spec);
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED)
        << v1::Executor_Name(ex) << ": " << e.error().message();
    EXPECT_EQ(e.executor(), ex);
    const Seen seen = ReadAll(e.job_id());
    EXPECT_TRUE(seen.ended) << v1::Executor_Name(ex);
    EXPECT_EQ(seen.log, "log line 1 of 3\nlog line 2 of 3\nlog line 3 of 3\n")
        << v1::Executor_Name(ex);
    EXPECT_EQ(seen.out + seen.err, "");
  }
}

TEST_F(JobOutputTest, UnknownOrBadJobIdsAreRefused) {
  Seen unknown = ReadAll("999999");
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  Seen bad = ReadAll("not-a-number");
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.status.error_message(), HasSubstr("job_id"));
}

constexpr char kTraceparent[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
constexpr char kOtherTraceparent[] =
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

TEST_F(JobOutputTest, TraceparentFromMetadataIsKeptShownAndLogged) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  ctx.AddMetadata("traceparent", kTraceparent);
  v1::JobSpec own = testing::Spec("echo", {2});
  own.set_traceparent(kOtherTraceparent);  // Its own wins.
  const testing::StreamResult r =
      SubmitAll(ctx, *stub_, {testing::Spec("echo", {1}), own});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::map<uint64_t, std::string> ids;
  for (const v1::JobEvent& e : r.events) {
    if (e.type() != v1::EVENT_TYPE_ACCEPTED) continue;
    ids[e.client_tag()] = e.job_id();
    EXPECT_EQ(e.traceparent(),
              e.client_tag() == 1 ? kTraceparent : kOtherTraceparent);
  }
  ASSERT_EQ(ids.size(), 2u);
  const v1::Job job = GetJob(ids[1], absl::Seconds(10));
  EXPECT_EQ(job.traceparent(), kTraceparent);
  EXPECT_EQ(job.spec().traceparent(), kTraceparent);
  EXPECT_EQ(GetJob(ids[2], absl::Seconds(10)).traceparent(), kOtherTraceparent);
  // jobd's log lines about the job carry its trace id.
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string log = daemon_->Log();
        const size_t line = log.find("job " + ids[1] + " [task=echo ");
        return line != std::string::npos &&
               log.find(
                   "trace_id=4bf92f3577b34da6a3ce929d0e0e4736]: "
                   "succeeded",
                   line) != std::string::npos;
      },
      absl::Seconds(10)))
      << daemon_->Log();
}

TEST_F(JobOutputTest, AnInvalidTraceparentIsIgnoredInMetadataRefusedInASpec) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  ctx.AddMetadata("traceparent", "00-nonsense");
  v1::JobSpec bad = testing::Spec("echo", {2});
  bad.set_traceparent("00-nonsense");
  const testing::StreamResult r =
      SubmitAll(ctx, *stub_, {testing::Spec("echo", {1}), bad});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  for (const v1::JobEvent& e : r.Terminal()) {
    if (e.client_tag() == 1) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
      EXPECT_EQ(GetJob(e.job_id(), absl::ZeroDuration()).traceparent(), "");
    } else {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
      EXPECT_EQ(e.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(e.error().message(), HasSubstr("spec.traceparent"));
    }
  }
  EXPECT_EQ(r.Terminal().size(), 2u);
}

}  // namespace
}  // namespace jobd
