// Integration tests of limits by key: a whole jobd (in this process,
// service_fixture.h) driven through the raw jobd.v1 API. A key with limit
// 1 never has two jobs running at once (checked from the jobs' own start
// and end times) while unkeyed jobs pass it by; a key's rate holds over
// 10 s; limits set through SetKeyLimit take effect at once, survive a
// restart with their parked jobs; a parked job can be cancelled; bad
// input is refused naming the field.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/service_fixture.h"

namespace jobd {
namespace {

using google::protobuf::util::TimeUtil;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::ServiceTest;
using testing::Spec;
using testing::SubmitAll;
using testing::ThreadSleep;
using testing::WaitFor;

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(t));
}

v1::JobSpec Keyed(v1::JobSpec spec, const std::string& key) {
  spec.set_concurrency_key(key);
  return spec;
}

// Every retained job (ListJobs pages).
std::vector<v1::Job> AllJobs(v1::JobService::Stub& stub) {
  std::vector<v1::Job> jobs;
  std::string token;
  for (int page = 0; page < 1000; ++page) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListJobsResponse resp;
    const grpc::Status s = stub.ListJobs(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) break;
    for (v1::Job& j : *resp.mutable_jobs()) jobs.push_back(std::move(j));
    token = resp.next_page_token();
    if (token.empty()) break;
  }
  return jobs;
}

// The jobs of `key` in start order, none running at the same time as
// another: each started at or after the previous one's end.
void ExpectOneAtATime(std::vector<v1::Job> jobs) {
  std::sort(jobs.begin(), jobs.end(), [](const v1::Job& a, const v1::Job& b) {
    return ToTime(a.start_time()) < ToTime(b.start_time());
  });
  int overlaps = 0;
  for (size_t i = 1; i < jobs.size(); ++i) {
    if (ToTime(jobs[i].start_time()) < ToTime(jobs[i - 1].finish_time())) {
      if (++overlaps <= 3) {
        ADD_FAILURE() << "job " << jobs[i].id() << " started at "
                      << jobs[i].start_time() << " before job "
                      << jobs[i - 1].id() << " ended at "
                      << jobs[i - 1].finish_time();
      }
    }
  }
  EXPECT_EQ(overlaps, 0);
}

absl::StatusOr<v1::KeyLimit> SetLimit(v1::JobService::Stub& stub,
                                      const v1::SetKeyLimitRequest& req,
                                      std::string* message = nullptr) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::SetKeyLimitResponse resp;
  const grpc::Status s = stub.SetKeyLimit(&ctx, req, &resp);
  if (message != nullptr) *message = s.error_message();
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        s.error_message());
  }
  return resp.limit();
}

v1::KeyLimit KeyStats(v1::JobService::Stub& stub, const std::string& key) {
  const v1::GetStatsResponse stats = testing::GetStats(stub);
  for (const v1::KeyLimit& k : stats.keys()) {
    if (k.key() == key) return k;
  }
  return v1::KeyLimit();
}

// GetKeyLimits; a test failure (and no keys) if the call fails.
v1::GetKeyLimitsResponse ListKeyLimits(v1::JobService::Stub& stub) {
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetKeyLimitsResponse keys;
  const grpc::Status s = stub.GetKeyLimits(&ctx, {}, &keys);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return keys;
}

class KeyLimitsTest : public ServiceTest {
 protected:
  void SetUp() override {}  // Each test starts its own daemon.
  // A daemon on `state` (a journal of its own), stopping the one before.
  void StartOnState(const std::string& state) {
    stub_.reset();
    daemon_.reset();
    StartDaemon({"--state-dir", state, "--thread-workers", "4",
                 "--shutdown-grace", "200ms"});
  }
};

TEST_F(KeyLimitsTest, LimitOneNeverRunsTwoAtOnceAndOthersPassItBy) {
  StartDaemon({"--key-limit", "serial=1", "--thread-workers", "4",
               "--durability", "none", "--max-jobs-per-request", "20000",
               "--max-window", "20000"});
  constexpr int kKeyed = 10000, kUnkeyed = 200;
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < kKeyed; ++i) {
    specs.push_back(Keyed(ThreadSleep(0), "serial"));
  }
  // Behind all of them in the same lane and priority.
  for (int i = 0; i < kUnkeyed; ++i) specs.push_back(ThreadSleep(0));
  v1::SubmitOptions options;
  options.set_window(20000);
  options.set_terminal_only(true);
  const testing::StreamResult r = SubmitAll(*stub_, specs, options);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), specs.size());
  for (const v1::JobEvent& e : r.Terminal()) {
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.DebugString();
  }
  std::vector<v1::Job> keyed, unkeyed;
  for (v1::Job& j : AllJobs(*stub_)) {
    (j.spec().concurrency_key() == "serial" ? keyed : unkeyed)
        .push_back(std::move(j));
  }
  ASSERT_EQ(keyed.size(), size_t{kKeyed});
  ASSERT_EQ(unkeyed.size(), size_t{kUnkeyed});
  ExpectOneAtATime(keyed);
  // No head-of-line blocking: the unkeyed jobs, submitted last, all ended
  // before most keyed jobs had even started.
  absl::Time last_unkeyed_end = absl::InfinitePast();
  for (const v1::Job& j : unkeyed) {
    last_unkeyed_end = std::max(last_unkeyed_end, ToTime(j.finish_time()));
  }
  std::vector<absl::Time> keyed_starts;
  for (const v1::Job& j : keyed) keyed_starts.push_back(ToTime(j.start_time()));
  std::sort(keyed_starts.begin(), keyed_starts.end());
  EXPECT_LT(last_unkeyed_end, keyed_starts[kKeyed / 2])
      << "the unkeyed jobs waited behind the keyed ones";
  const v1::KeyLimit stats = KeyStats(*stub_, "serial");
  EXPECT_EQ(stats.max_running(), 1u);
  EXPECT_EQ(stats.running(), 0u);
  EXPECT_EQ(stats.parked(), 0u);
}

TEST_F(KeyLimitsTest, RateHoldsWithinFivePercentOverTenSeconds) {
  StartDaemon({"--key-rate", "paced=100", "--thread-workers", "8",
               "--durability", "none", "--max-window", "20000"});
  constexpr double kRate = 100;
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 1300; ++i)
    specs.push_back(Keyed(ThreadSleep(0), "paced"));
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  auto stream = stub_->Submit(&ctx);
  v1::SubmitOptions options;
  options.set_window(20000);
  options.set_terminal_only(true);
  ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs, options)));
  // Reads ends until 10.5 s of starts have passed (1050 jobs or more).
  v1::SubmitResponse resp;
  size_t ended = 0;
  while (ended < 1100 && stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_SUCCEEDED) ++ended;
    }
  }
  ASSERT_GE(ended, 1100u);
  ctx.TryCancel();
  std::vector<absl::Time> starts;
  for (const v1::Job& j : AllJobs(*stub_)) {
    if (j.has_start_time()) starts.push_back(ToTime(j.start_time()));
  }
  std::sort(starts.begin(), starts.end());
  ASSERT_FALSE(starts.empty());
  const absl::Time window_end = starts.front() + absl::Seconds(10);
  const size_t in_window =
      std::lower_bound(starts.begin(), starts.end(), window_end) -
      starts.begin();
  EXPECT_GE(in_window, static_cast<size_t>(kRate * 10 * 0.95));
  EXPECT_LE(in_window, static_cast<size_t>(kRate * 10 * 1.05));
}

TEST_F(KeyLimitsTest, SetKeyLimitAppliesAtOnceAndSurvivesRestart) {
  testing::TempDir state;
  ASSERT_FALSE(state.path().empty());
  StartOnState(state.path());
  v1::SetKeyLimitRequest req;
  req.set_key("db");
  req.set_max_running(1);
  absl::StatusOr<v1::KeyLimit> set = SetLimit(*stub_, req);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->max_running(), 1u);
  EXPECT_EQ(set->source(), "rpc");
  // One long job holds the key; three more are parked behind it, and an
  // unkeyed one passes them.
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  auto stream = stub_->Submit(&ctx);
  std::vector<v1::JobSpec> specs = {Keyed(ThreadSleep(60000), "db")};
  for (int i = 0; i < 3; ++i) specs.push_back(Keyed(ThreadSleep(50), "db"));
  specs.push_back(ThreadSleep(1));
  ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
  std::vector<std::string> ids(specs.size());
  v1::SubmitResponse resp;
  bool unkeyed_done = false;
  while (!unkeyed_done && stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED)
        ids[e.client_tag() - 1] = e.job_id();
      if (e.client_tag() == specs.size() &&
          e.type() == v1::EVENT_TYPE_SUCCEEDED) {
        unkeyed_done = true;
      }
    }
  }
  ASSERT_TRUE(unkeyed_done);
  ASSERT_TRUE(WaitFor([&] { return KeyStats(*stub_, "db").parked() == 3; }));
  EXPECT_EQ(KeyStats(*stub_, "db").running(), 1u);
  ctx.TryCancel();
  // Restart: the parked jobs queue again under the limit, which came back
  // from the journal.
  StartOnState(state.path());
  {
    const v1::GetKeyLimitsResponse keys = ListKeyLimits(*stub_);
    ASSERT_EQ(keys.keys_size(), 1);
    EXPECT_EQ(keys.keys(0).key(), "db");
    EXPECT_EQ(keys.keys(0).max_running(), 1u);
    EXPECT_EQ(keys.keys(0).source(), "rpc");
  }
  std::vector<v1::Job> parked;
  ASSERT_TRUE(WaitFor(
      [&] {
        parked.clear();
        for (size_t i = 1; i <= 3; ++i) {
          v1::Job j = GetJob(ids[i], absl::ZeroDuration());
          if (j.state() != v1::JOB_STATE_SUCCEEDED) return false;
          parked.push_back(j);
        }
        return true;
      },
      absl::Seconds(20)));
  ExpectOneAtATime(parked);
  // Cleared, the key has no limit any more, and that is kept too.
  v1::SetKeyLimitRequest clear;
  clear.set_key("db");
  clear.set_clear(true);
  set = SetLimit(*stub_, clear);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->max_running(), 0u);
  EXPECT_EQ(set->source(), "");
  StartOnState(state.path());
  const v1::GetKeyLimitsResponse keys = ListKeyLimits(*stub_);
  EXPECT_EQ(keys.keys_size(), 0) << keys.DebugString();
}

TEST_F(KeyLimitsTest, AParkedJobCanBeCancelledAndRaisingTheLimitStartsMore) {
  StartDaemon({"--key-limit", "k=1", "--thread-workers", "4",
               "--shutdown-grace", "200ms"});
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  auto stream = stub_->Submit(&ctx);
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 3; ++i) specs.push_back(Keyed(ThreadSleep(60000), "k"));
  ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
  std::vector<std::string> ids(specs.size());
  v1::SubmitResponse resp;
  for (size_t accepted = 0; accepted < specs.size() && stream->Read(&resp);) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) {
        ids[e.client_tag() - 1] = e.job_id();
        ++accepted;
      }
    }
  }
  ASSERT_TRUE(WaitFor([&] { return KeyStats(*stub_, "k").parked() == 2; }));
  {
    grpc::ClientContext c;
    Deadline(c);
    v1::CancelJobRequest req;
    req.set_job_id(ids[1]);
    v1::CancelJobResponse out;
    ASSERT_TRUE(stub_->CancelJob(&c, req, &out).ok());
    EXPECT_EQ(out.state(), v1::JOB_STATE_CANCELLED);
  }
  EXPECT_EQ(KeyStats(*stub_, "k").parked(), 1u);
  EXPECT_EQ(GetJob(ids[2], absl::ZeroDuration()).state(), v1::JOB_STATE_QUEUED);
  // Room for one more: the parked one starts at once.
  v1::SetKeyLimitRequest req;
  req.set_key("k");
  req.set_max_running(2);
  ASSERT_TRUE(SetLimit(*stub_, req).ok());
  ASSERT_TRUE(WaitFor([&] {
    return GetJob(ids[2], absl::ZeroDuration()).state() ==
           v1::JOB_STATE_RUNNING;
  }));
  EXPECT_EQ(KeyStats(*stub_, "k").running(), 2u);
  ctx.TryCancel();
}

TEST_F(KeyLimitsTest, BadInputIsRefusedNamingTheField) {
  StartDaemon();
  std::string message;
  v1::SetKeyLimitRequest zero;
  zero.set_key("k");
  zero.set_max_running(0);
  EXPECT_TRUE(
      absl::IsInvalidArgument(SetLimit(*stub_, zero, &message).status()));
  EXPECT_THAT(message, HasSubstr("max_running: 0"));
  v1::SetKeyLimitRequest long_key;
  long_key.set_key(std::string(200, 'k'));
  long_key.set_max_running(1);
  EXPECT_FALSE(SetLimit(*stub_, long_key, &message).ok());
  EXPECT_THAT(message, HasSubstr("key: 200 bytes, longer than the 128"));
  v1::SetKeyLimitRequest rate;
  rate.set_key("k");
  rate.set_max_starts_per_second(-1);
  EXPECT_FALSE(SetLimit(*stub_, rate, &message).ok());
  EXPECT_THAT(message, HasSubstr("max_starts_per_second: -1"));
  v1::SetKeyLimitRequest none;
  EXPECT_FALSE(SetLimit(*stub_, none, &message).ok());
  EXPECT_THAT(message, HasSubstr("key: empty"));
  v1::SetKeyLimitRequest both;
  both.set_key("k");
  both.set_clear(true);
  both.set_max_running(1);
  EXPECT_FALSE(SetLimit(*stub_, both, &message).ok());
  EXPECT_THAT(message, HasSubstr("clear:"));
  // A spec's key: its job is REJECTED, naming the field.
  const testing::StreamResult r =
      SubmitAll(*stub_, {Keyed(Spec("echo", {1}), std::string(129, 'x')),
                         Keyed(Spec("echo", {1}), "tab\there")});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), 2u);
  for (const v1::JobEvent& e : r.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
    EXPECT_THAT(e.error().message(), HasSubstr("spec.concurrency_key: "));
  }
}

}  // namespace
}  // namespace jobd
