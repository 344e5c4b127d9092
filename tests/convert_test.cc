// Unit tests of the conversions at the RPC edge
// (server/frontend/convert.h): statuses keep their code and message,
// events carry every field a client reads, a refused item's REJECTED
// event says why in valid UTF-8 within the error size, tasks list the
// executors that can run them, and job ids parse strictly.
#include "server/frontend/convert.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/executor/executor.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConvertTest, ToGrpcKeepsCodeAndMessage) {
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).ok());
  const grpc::Status s = ToGrpc(absl::NotFoundError("job 7"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "job 7");
  EXPECT_EQ(ToGrpc(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(ConvertTest, AnEventCarriesItsFieldsAndTheClientsTag) {
  TaskDef task;
  task.name = "echo";
  Event e;
  e.sequence = 42;
  e.job_id = 7;
  e.type = v1::EVENT_TYPE_ACCEPTED;
  e.time = absl::FromUnixSeconds(1000);
  e.executor = v1::EXECUTOR_THREAD;
  e.duplicate = true;
  e.set_task(&task);
  v1::JobEvent out;
  ToProto(e, 99, &out);
  EXPECT_EQ(out.sequence(), 42u);
  EXPECT_EQ(out.job_id(), "7");
  EXPECT_EQ(out.client_tag(), 99u);
  EXPECT_EQ(out.type(), v1::EVENT_TYPE_ACCEPTED);
  EXPECT_EQ(out.time().seconds(), 1000);
  EXPECT_EQ(out.executor(), v1::EXECUTOR_THREAD);
  EXPECT_TRUE(out.duplicate());
  EXPECT_EQ(out.task(), "echo");

  Event failed;
  failed.job_id = 8;
  failed.type = v1::EVENT_TYPE_FAILED;
  auto end = std::make_shared<JobEnd>();
  end->state = v1::JOB_STATE_FAILED;
  end->mutable_error().set_message("boom");
  failed.set_end(end);
  v1::JobEvent out2;
  ToProto(failed, 0, &out2);
  EXPECT_EQ(out2.error().message(), "boom");
  EXPECT_FALSE(out2.has_result());
  EXPECT_FALSE(out2.duplicate());
}

TEST(ConvertTest, ARejectionNamesTheReasonInValidUtf8WithinTheErrorSize) {
  Event e = Rejection(absl::InvalidArgumentError("spec.task: missing"));
  EXPECT_EQ(e.type, v1::EVENT_TYPE_REJECTED);
  ASSERT_NE(e.end(), nullptr);
  EXPECT_EQ(e.end()->error().code(),
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(e.end()->error().message(), "spec.task: missing");
  EXPECT_EQ(e.end()->error().reason(), v1::ERROR_REASON_INVALID_INPUT);
  EXPECT_EQ(e.end()->bytes, e.end()->error().ByteSizeLong());
  EXPECT_EQ(
      Rejection(absl::ResourceExhaustedError("quota")).end()->error().reason(),
      v1::ERROR_REASON_OVERLOADED);
  EXPECT_EQ(
      Rejection(absl::UnavailableError("draining")).end()->error().reason(),
      v1::ERROR_REASON_SHUTDOWN);
  // A long message cut inside a multi-byte character stays valid.
  const std::string long_message =
      std::string(kMaxErrorMessageBytes - 1, 'a') + "\xc3\xa9 and more";
  const Event clipped_event =
      Rejection(absl::InvalidArgumentError(long_message));
  const std::string& clipped = clipped_event.end()->error().message();
  EXPECT_LE(clipped.size(), kMaxErrorMessageBytes);
  EXPECT_TRUE(IsValidUtf8(clipped));
}

TEST(ConvertTest, ATaskListsTheExecutorsThatCanRunIt) {
  TaskDef sync;
  sync.name = "hash";
  sync.description = "hashes";
  sync.run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
    return TaskOutput{};
  };
  TaskParam p;
  p.name = "n";
  p.type = ParamType::kInt;
  p.required = false;
  p.default_value.set_number_value(3);
  sync.params.push_back(p);
  v1::TaskInfo info = ToProto(sync, /*quarantined=*/true);
  EXPECT_EQ(info.name(), "hash");
  EXPECT_EQ(info.description(), "hashes");
  EXPECT_THAT(info.executors(),
              ElementsAre(v1::EXECUTOR_PROCESS, v1::EXECUTOR_THREAD));
  EXPECT_TRUE(info.quarantined());
  ASSERT_EQ(info.params_size(), 1);
  EXPECT_EQ(info.params(0).type(), "int");
  EXPECT_FALSE(info.params(0).required());
  EXPECT_EQ(info.params(0).default_value().number_value(), 3);

  sync.needs_isolation = true;  // Never on the daemon's threads.
  EXPECT_THAT(ToProto(sync, false).executors(),
              ElementsAre(v1::EXECUTOR_PROCESS));
}

TEST(ConvertTest, ServerLimitsSayWhatTheServiceEnforces) {
  ServiceLimits limits;
  limits.max_jobs_per_request = 10;
  limits.default_window = 20;
  limits.max_window = 30;
  limits.spec.max_payload_bytes = 40;
  limits.max_message_bytes = 50;
  v1::ServerLimits out;
  ToProto(limits, &out);
  EXPECT_EQ(out.max_jobs_per_request(), 10u);
  EXPECT_EQ(out.default_window(), 20u);
  EXPECT_EQ(out.max_window(), 30u);
  EXPECT_EQ(out.max_payload_bytes(), 40u);
  EXPECT_EQ(out.max_message_bytes(), 50u);
}

TEST(ConvertTest, AJobIdIsAPositiveDecimalNumber) {
  EXPECT_EQ(*ParseJobId("12", "job_id"), 12u);
  for (const char* bad : {"", "0", "-1", "1x", " 1", "99999999999999999999"}) {
    absl::StatusOr<uint64_t> id = ParseJobId(bad, "job_id");
    ASSERT_FALSE(id.ok()) << bad;
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(id.status().message()), HasSubstr("job_id: '"));
  }
}

TEST(ConvertTest, AJobIdMayNameItsNode) {
  // This process is in no cluster: an id naming a node names another.
  absl::StatusOr<JobRef> ref = ParseJobRef("12@node-b", "job_id");
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->number, 12u);
  EXPECT_EQ(ref->node, "node-b");
  EXPECT_TRUE(ParseJobRef("12", "job_id")->here());
  absl::StatusOr<uint64_t> id = ParseJobId("12@node-b", "job_id");
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(id.status().message()),
              HasSubstr("is a job of node 'node-b'"));
  for (const char* bad : {"12@", "@node-b", "12@a b", "12@a@b", "0@node-b"}) {
    ref = ParseJobRef(bad, "job_id");
    ASSERT_FALSE(ref.ok()) << bad;
    EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(ref.status().message()), HasSubstr("job_id: '"));
  }
  EXPECT_EQ(FormatJobId(12), "12");
  EXPECT_EQ(OwnJobNumber("12"), 12u);
  EXPECT_EQ(OwnJobNumber("12@node-b"), 0u);
}

}  // namespace
}  // namespace jobd
