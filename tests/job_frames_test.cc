// Unit tests: the process pool's job frames (workers/process/internal/
// job_frames.h), decoded as a worker decodes them (FrameReader): what a
// RunJob carries, a chunk split into frames in order, a job too big for a
// worker refused alone, cancel and ping frames, and a JobDone as the
// outcome the scheduler gets.
#include "workers/process/internal/job_frames.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobd/internal/worker.pb.h"
#include "workers/process/ipc.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class JobFramesTest : public ::testing::Test {
 protected:
  JobFramesTest() { task_.name = "echo"; }

  JobRun Run(uint64_t id, size_t payload_bytes = 0) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->add_args()->set_number_value(static_cast<double>(id));
    spec->set_payload(std::string(payload_bytes, 'p'));
    JobRun run;
    run.job_id = id;
    run.task = &task_;
    run.spec = std::move(spec);
    run.cancel = std::make_shared<CancelToken>();
    return run;
  }

  // Every frame in `wire`, decoded.
  static std::vector<internal::ToWorker> Frames(const std::string& wire) {
    FrameReader reader(wire.size() + 1);
    reader.Append(wire);
    std::vector<internal::ToWorker> frames;
    internal::ToWorker m;
    for (;;) {
      absl::StatusOr<bool> got = reader.Next(m);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok() || !*got) break;
      frames.push_back(m);
    }
    EXPECT_EQ(reader.buffered(), 0u);
    return frames;
  }

  TaskDef task_;
};

TEST_F(JobFramesTest, AJobCarriesItsTaskArgumentsPayloadAndDeadline) {
  JobRun run = Run(7, 3);
  auto spec = std::make_shared<v1::JobSpec>(*run.spec);
  (*spec->mutable_kwargs()->mutable_fields())["n"].set_number_value(2);
  run.spec = spec;
  const absl::Time deadline = absl::FromUnixSeconds(2000000000);
  run.deadline = deadline;
  std::string wire;
  RunFrameWriter writer(wire);
  ASSERT_TRUE(writer.Add(run).ok());
  ASSERT_TRUE(writer.Add(Run(8)).ok());
  writer.Finish();

  const std::vector<internal::ToWorker> frames = Frames(wire);
  ASSERT_EQ(frames.size(), 1u);  // Small jobs share one frame.
  ASSERT_EQ(frames[0].run_size(), 2);
  const internal::RunJob& r = frames[0].run(0);
  EXPECT_EQ(r.job_id(), 7u);
  EXPECT_EQ(r.spec().task(), "echo");  // Named, though the spec was not.
  EXPECT_EQ(r.spec().args(0).number_value(), 7);
  EXPECT_EQ(r.spec().kwargs().fields().at("n").number_value(), 2);
  EXPECT_EQ(r.spec().payload(), "ppp");
  EXPECT_EQ(r.deadline_unix_ns(), absl::ToUnixNanos(deadline));
  EXPECT_EQ(frames[0].run(1).deadline_unix_ns(), 0);  // None.
  EXPECT_FALSE(frames[0].run(1).spec().has_kwargs());
}

TEST_F(JobFramesTest, ABigChunkGoesInSeveralFramesInOrder) {
  std::string wire;
  RunFrameWriter writer(wire,
                        {.frame_bytes = 10000, .max_frame_bytes = 1 << 20});
  std::vector<uint64_t> sent;
  for (uint64_t id = 1; id <= 12; ++id) {
    ASSERT_TRUE(writer.Add(Run(id, 3000)).ok());
    sent.push_back(id);
  }
  writer.Finish();

  std::vector<uint64_t> got;
  const std::vector<internal::ToWorker> frames = Frames(wire);
  for (const internal::ToWorker& f : frames) {
    EXPECT_LE(f.ByteSizeLong(), 10000u);
    EXPECT_GE(f.run_size(), 1);
    for (const internal::RunJob& r : f.run()) got.push_back(r.job_id());
  }
  EXPECT_EQ(frames.size(), 4u);  // 3 jobs of ~3 KB per 10 KB frame.
  EXPECT_EQ(got, sent);
}

TEST_F(JobFramesTest, AJobBiggerThanAFrameMayBeIsRefusedAlone) {
  std::string wire;
  RunFrameWriter writer(wire,
                        {.frame_bytes = 10000, .max_frame_bytes = 1 << 20});
  ASSERT_TRUE(writer.Add(Run(1, 100)).ok());
  const absl::Status big = writer.Add(Run(2, 2 << 20));
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.message(),
              HasSubstr("the job's input (2.0 MiB) is too big for a worker "
                        "process (at most 1.0 MiB)"));
  // One that fits, alone in its frame, is taken however big.
  ASSERT_TRUE(writer.Add(Run(3, 900000)).ok());
  writer.Finish();

  std::vector<uint64_t> got;
  for (const internal::ToWorker& f : Frames(wire)) {
    for (const internal::RunJob& r : f.run()) got.push_back(r.job_id());
  }
  EXPECT_THAT(got, ElementsAre(1, 3));
}

// The frames the generated classes write for `runs` (each job's fields
// copied into a RunJob), split where RunFrameWriter splits them.
std::string GeneratedFrames(const std::vector<JobRun>& runs,
                            size_t frame_bytes) {
  std::string wire;
  internal::ToWorker message;
  size_t bytes_in_frame = 0;
  for (const JobRun& run : runs) {
    internal::RunJob r;
    r.set_job_id(run.job_id);
    v1::JobSpec& copy = *r.mutable_spec();
    copy.set_task(run.task->name);
    *copy.mutable_args() = run.spec->args();
    if (!run.spec->kwargs().fields().empty()) {
      *copy.mutable_kwargs() = run.spec->kwargs();
    }
    copy.set_payload(run.spec->payload());
    if (!run.spec->calls().empty()) {
      copy.set_calls(run.spec->calls());
      copy.set_flat_calls(run.spec->flat_calls());
    }
    if (run.deadline != absl::InfiniteFuture()) {
      r.set_deadline_unix_ns(absl::ToUnixNanos(run.deadline));
    }
    const size_t bytes = r.ByteSizeLong() + 8;
    if (message.run_size() > 0 && bytes_in_frame + bytes > frame_bytes) {
      AppendFrame(message, wire);
      message.Clear();
      bytes_in_frame = 0;
    }
    *message.add_run() = std::move(r);
    bytes_in_frame += bytes;
  }
  if (message.run_size() > 0) AppendFrame(message, wire);
  return wire;
}

TEST_F(JobFramesTest, FramesAreTheBytesOfTheGeneratedClasses) {
  std::vector<JobRun> runs;
  runs.push_back(Run(1));
  runs.push_back(Run(1ull << 50, 300));  // A long id, a payload.
  {
    JobRun run = Run(3);
    auto spec = std::make_shared<v1::JobSpec>(*run.spec);
    spec->add_args()->set_string_value(std::string(200, 's'));
    auto* list = spec->add_args()->mutable_list_value();
    list->add_values()->set_bool_value(true);
    list->add_values()->set_null_value({});
    (*spec->mutable_kwargs()->mutable_fields())["k"].set_number_value(-1.5);
    spec->set_idempotency_key("not sent");  // Not a field a worker reads.
    run.spec = std::move(spec);
    run.deadline = absl::FromUnixNanos(1'700'000'000'000'000'001);
    runs.push_back(std::move(run));
  }
  for (bool flat : {false, true}) {  // A batch of calls.
    JobRun run = Run(4);
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_calls("[[1],[2]]");
    spec->set_flat_calls(flat);
    run.spec = std::move(spec);
    runs.push_back(std::move(run));
  }
  for (size_t frame_bytes : {size_t{1} << 20, size_t{400}}) {
    std::string wire;
    RunFrameWriter writer(
        wire, {.frame_bytes = frame_bytes, .max_frame_bytes = 1 << 20});
    for (const JobRun& run : runs) ASSERT_TRUE(writer.Add(run).ok());
    writer.Finish();
    EXPECT_EQ(wire, GeneratedFrames(runs, frame_bytes)) << frame_bytes;
    const size_t frames = Frames(wire).size();
    if (frame_bytes == 400) {
      EXPECT_GT(frames, 1u);  // Split.
    } else {
      EXPECT_EQ(frames, 1u);
    }
  }
}

TEST_F(JobFramesTest, NothingToSendWritesNothing) {
  std::string wire;
  RunFrameWriter writer(wire);
  writer.Finish();
  EXPECT_TRUE(wire.empty());
}

TEST_F(JobFramesTest, CancelAndPingFrames) {
  std::string wire;
  AppendCancelFrame(5, CancelReason::kTimeout, wire);
  AppendPingFrame(9, wire);
  const std::vector<internal::ToWorker> frames = Frames(wire);
  ASSERT_EQ(frames.size(), 2u);
  ASSERT_EQ(frames[0].cancel_size(), 1);
  EXPECT_EQ(frames[0].cancel(0).job_id(), 5u);
  EXPECT_EQ(frames[0].cancel(0).reason(),
            static_cast<int>(CancelReason::kTimeout));
  EXPECT_EQ(frames[1].ping(), 9u);
  EXPECT_EQ(frames[1].run_size(), 0);
}

TEST(OutcomeFromDoneTest, AResultKeepsItsValuePayloadAndTimes) {
  internal::JobDone done;
  done.set_job_id(1);
  done.set_ok(true);
  done.mutable_value()->set_string_value("hi");
  done.set_payload("bytes");
  done.set_cpu_ns(1500);
  done.set_wall_ns(2500);
  const JobOutcome o = OutcomeFromDone(done);
  EXPECT_TRUE(o.status.ok());
  EXPECT_EQ(o.output.value.string_value(), "hi");
  EXPECT_EQ(o.output.payload, "bytes");
  EXPECT_EQ(o.reason, v1::ERROR_REASON_UNSPECIFIED);
  EXPECT_EQ(o.cpu_time, absl::Nanoseconds(1500));
  EXPECT_EQ(o.wall_time, absl::Nanoseconds(2500));
}

TEST(OutcomeFromDoneTest, AnErrorKeepsItsCodeMessageAndReason) {
  internal::JobDone done;
  done.set_ok(false);
  done.set_code(static_cast<int>(absl::StatusCode::kNotFound));
  done.set_message("no such thing");
  done.set_reason(v1::ERROR_REASON_TASK_ERROR);
  const JobOutcome o = OutcomeFromDone(done);
  EXPECT_EQ(o.status, absl::NotFoundError("no such thing"));
  EXPECT_EQ(o.reason, v1::ERROR_REASON_TASK_ERROR);
}

}  // namespace
}  // namespace jobd
