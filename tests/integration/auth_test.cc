// Integration tests of who may do what, against a whole jobd in this
// process (in_process_daemon.h) reached over its real sockets: tokens and
// roles (none, bad, wrong role, another caller's job), the Unix socket
// trusted or not, quotas (live jobs, submit rate, streams) while a
// well-behaved client is served, and every request limit crossed. What
// needs the binary (TLS files, sockets' and directories' modes, the
// workers' sandbox) is in security_test.cc.
#include "server/frontend/auth.h"

#include <sys/wait.h>

#include <functional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/in_process_daemon.h"
#include "tests/integration/test_tokens.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::InProcessDaemon;
using testing::Spec;
using testing::StreamResult;
using testing::WaitFor;

using testing::kAlice;
using testing::kBob;
using testing::kCarol;
using testing::kRoot;
using testing::TokenFlags;

// A context carrying `token` (none if empty).
void WithToken(grpc::ClientContext& ctx, const std::string& token) {
  Deadline(ctx, absl::Seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

class SecurityTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args) {
    args.insert(args.end(), {"--shutdown-grace", "100ms"});
    auto d = InProcessDaemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    // Over TCP (127.0.0.1): with --unix-socket-auth trusted the socket
    // would make everyone the local admin.
    channel_ = grpc::CreateChannel(daemon_->tcp_address(),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel_);
  }

  grpc::Status Stats(const std::string& token) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::GetStatsResponse r;
    return stub_->GetStats(&ctx, {}, &r);
  }

  // Submits `specs` as `token`; the stream's events and status.
  StreamResult Submit(const std::string& token,
                      const std::vector<v1::JobSpec>& specs) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    Deadline(ctx, absl::Seconds(60));
    return testing::SubmitAll(ctx, *stub_, specs);
  }

  // Submits `specs` as `token` and returns their ACCEPTED / REJECTED
  // events without waiting for the jobs to end (they run on).
  std::vector<v1::JobEvent> Admit(const std::string& token,
                                  const std::vector<v1::JobSpec>& specs) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    auto stream = stub_->Submit(&ctx);
    stream->Write(testing::SubmitRequestOf(specs));
    std::vector<v1::JobEvent> admitted;
    v1::SubmitResponse resp;
    while (admitted.size() < specs.size() && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED ||
            e.type() == v1::EVENT_TYPE_REJECTED) {
          admitted.push_back(e);
        }
      }
    }
    ctx.TryCancel();
    stream->Finish();
    return admitted;
  }

  grpc::Status GetJob(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    return stub_->GetJob(&ctx, req, &job);
  }

  grpc::Status Cancel(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::CancelJobResponse resp;
    return stub_->CancelJob(&ctx, req, &resp);
  }

  std::vector<std::string> ListIds(const std::string& token) {
    grpc::ClientContext ctx;
    WithToken(ctx, token);
    v1::ListJobsResponse resp;
    EXPECT_TRUE(stub_->ListJobs(&ctx, {}, &resp).ok());
    std::vector<std::string> ids;
    for (const v1::Job& j : resp.jobs()) ids.push_back(j.id());
    return ids;
  }

  std::unique_ptr<InProcessDaemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(SecurityTest, TokensAndRolesDecideWhoMayDoWhat) {
  std::vector<std::string> flags = TokenFlags();
  StartDaemon(flags);
  // No token, a bad token, a malformed header.
  EXPECT_EQ(Stats("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Stats("wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    ctx.AddMetadata("authorization", "Basic xyz");
    v1::GetStatsResponse r;
    EXPECT_EQ(stub_->GetStats(&ctx, {}, &r).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(Submit("", {Spec("echo", {1})}).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The right token.
  EXPECT_TRUE(Stats(kAlice).ok());
  EXPECT_TRUE(Stats(kBob).ok());
  // Wrong role: bob reads, he does not submit.
  const StreamResult denied = Submit(kBob, {Spec("echo", {1})});
  EXPECT_EQ(denied.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.status.error_message(),
              HasSubstr("needs the submit role"));

  // Alice's job is hers.
  const std::vector<v1::JobEvent> a = Admit(kAlice, {Spec("sleep", {60000})});
  ASSERT_EQ(a.size(), 1u);
  const std::string id = a[0].job_id();
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(GetJob(kAlice, id).ok());
  EXPECT_EQ(GetJob(kBob, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetJob(kCarol, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetJob(kRoot, id).ok());
  EXPECT_THAT(ListIds(kAlice), ::testing::ElementsAre(id));
  EXPECT_THAT(ListIds(kCarol), ::testing::IsEmpty());
  EXPECT_THAT(ListIds(kRoot), ::testing::ElementsAre(id));
  // Cancelling: not bob (read only), not carol (not hers), root may.
  EXPECT_EQ(Cancel(kBob, id).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Cancel(kCarol, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Cancel(kRoot, id).ok());
  // Admin-only calls.
  for (const std::string& who : {std::string(kAlice), std::string(kBob)}) {
    grpc::ClientContext c1, c2;
    WithToken(c1, who);
    WithToken(c2, who);
    v1::ClearQuarantineRequest q;
    q.set_task("echo");
    v1::ClearQuarantineResponse qr;
    EXPECT_EQ(stub_->ClearQuarantine(&c1, q, &qr).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    v1::DrainResponse dr;
    EXPECT_EQ(stub_->Drain(&c2, {}, &dr).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // Idempotency keys are per caller: carol's does not find alice's job.
  v1::JobSpec keyed = Spec("echo", {1});
  keyed.set_idempotency_key("k1");
  const StreamResult ka = Submit(kAlice, {keyed});
  const StreamResult kc = Submit(kCarol, {keyed});
  ASSERT_FALSE(ka.Terminal().empty());
  ASSERT_FALSE(kc.Terminal().empty());
  EXPECT_NE(ka.Terminal()[0].job_id(), kc.Terminal()[0].job_id());
  // Watching everything shows a caller only its own jobs.
  {
    grpc::ClientContext ctx;
    WithToken(ctx, kCarol);
    v1::WatchJobsRequest req;
    req.set_after_sequence(1);
    auto reader = stub_->WatchJobs(&ctx, req);
    v1::WatchJobsResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    for (const v1::JobEvent& e : resp.events()) {
      EXPECT_EQ(e.job_id(), kc.Terminal()[0].job_id());
    }
    ctx.TryCancel();
  }
  // Jobs say whose they are.
  grpc::ClientContext ctx;
  WithToken(ctx, kRoot);
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
  EXPECT_EQ(job.owner(), "alice");
  // The admin may drain.
  grpc::ClientContext drain;
  WithToken(drain, kRoot);
  v1::DrainResponse dr;
  EXPECT_TRUE(stub_->Drain(&drain, {}, &dr).ok());
  // It asks its owner to stop it (jobd's main() sends itself SIGTERM).
  EXPECT_TRUE(daemon_->WaitStopRequested());
  const DaemonStopped stopped = daemon_->Stop();
  EXPECT_FALSE(stopped.tasks_left_running);
}

TEST_F(SecurityTest, TheUnixSocketIsTrustedOrNotAsConfigured) {
  std::vector<std::string> flags = TokenFlags();
  StartDaemon(flags);
  auto unix_stub = daemon_->NewStub();
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatsResponse r;
  EXPECT_TRUE(unix_stub->GetStats(&ctx, {}, &r).ok());  // Local admin.
  flags.insert(flags.end(), {"--unix-socket-auth", "token"});
  StartDaemon(flags);
  unix_stub = daemon_->NewStub();
  grpc::ClientContext ctx2;
  Deadline(ctx2);
  EXPECT_EQ(unix_stub->GetStats(&ctx2, {}, &r).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // jobctl with --token (or $JOBD_TOKEN) is let in.
  const testing::CommandResult ok = testing::RunCommand(
      {testing::JobctlPath(), "--address", daemon_->unix_address(), "submit",
       "echo", "7", "--wait"},
      "", absl::Seconds(30), {std::string("JOBD_TOKEN=") + kAlice});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "7\n");
  const testing::CommandResult no = testing::RunCommand(
      {testing::JobctlPath(), "--address", daemon_->unix_address(), "stats"});
  EXPECT_NE(no.exit_code, 0);
  EXPECT_THAT(no.err, HasSubstr("authentication required"));
}

TEST_F(SecurityTest, TheLiveJobQuotaRefusesTheThirdJob) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--quota-max-live", "2"});
  StartDaemon(flags);
  const std::vector<v1::JobEvent> live = Admit(
      kAlice,
      {Spec("sleep", {60000}), Spec("sleep", {60000}), Spec("sleep", {60000})});
  ASSERT_EQ(live.size(), 3u);
  int refused = 0;
  for (const v1::JobEvent& e : live) {
    if (e.type() != v1::EVENT_TYPE_REJECTED) continue;
    ++refused;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(e.error().message(), HasSubstr("quota-max-live"));
  }
  EXPECT_EQ(refused, 1);
  // Another caller, and the admin, are not held up by alice's jobs.
  const StreamResult carol = Submit(kCarol, {Spec("echo", {1})});
  ASSERT_EQ(carol.Terminal().size(), 1u);
  EXPECT_EQ(carol.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(SecurityTest, ARateBelowOnePerSecondStillAdmitsJobs) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(), {"--quota-submit-rate", "0.5"});
  StartDaemon(flags);
  const StreamResult burst =
      Submit(kCarol, std::vector<v1::JobSpec>(3, Spec("echo", {1})));
  int accepted = 0;
  for (const v1::JobEvent& e : burst.events) {
    accepted += e.type() == v1::EVENT_TYPE_ACCEPTED;
    if (e.type() == v1::EVENT_TYPE_REJECTED) {
      EXPECT_THAT(e.error().message(), HasSubstr("retry in"));
    }
  }
  EXPECT_EQ(accepted, 1);  // One now, the next in 2 s.
}

TEST_F(SecurityTest, RateAndStreamQuotasRefuseTheGreedyAndServeTheRest) {
  std::vector<std::string> flags = TokenFlags();
  flags.insert(flags.end(),
               {"--quota-submit-rate", "5", "--max-streams-per-caller", "3"});
  StartDaemon(flags);
  // Rate: of 20 at once, carol gets her 5 a second, the rest are told when
  // to retry.
  const StreamResult burst =
      Submit(kCarol, std::vector<v1::JobSpec>(20, Spec("echo", {1})));
  int accepted = 0, limited = 0;
  for (const v1::JobEvent& e : burst.events) {
    accepted += e.type() == v1::EVENT_TYPE_ACCEPTED;
    if (e.type() == v1::EVENT_TYPE_REJECTED) {
      ++limited;
      EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_THAT(e.error().message(), HasSubstr("retry in"));
    }
  }
  EXPECT_EQ(accepted, 5);
  EXPECT_EQ(limited, 15);
  // Streams: a flood of watches from carol stops at 3 (once the server has
  // seen her Submit stream above end: until then it holds one place)...
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>>>
      readers;
  const absl::Time open_by = absl::Now() + absl::Seconds(10);
  while (readers.size() < 3 && absl::Now() < open_by) {
    auto context = std::make_unique<grpc::ClientContext>();
    WithToken(*context, kCarol);
    auto reader = stub_->WatchJobs(context.get(), {});
    v1::WatchJobsResponse header;
    if (reader->Read(&header)) {  // Open for sure.
      contexts.push_back(std::move(context));
      readers.push_back(std::move(reader));
      continue;
    }
    const grpc::Status refused = reader->Finish();
    ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << refused.error_message();
    absl::SleepFor(absl::Milliseconds(20));  // Polling.
  }
  ASSERT_EQ(readers.size(), 3u);
  grpc::ClientContext fourth;
  WithToken(fourth, kCarol);
  auto over = stub_->WatchJobs(&fourth, {});
  v1::WatchJobsResponse ignored;
  EXPECT_FALSE(over->Read(&ignored));
  const grpc::Status s = over->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("max-streams-per-caller"));
  // ...while everyone else is served, and the admin is not limited.
  EXPECT_TRUE(Stats(kBob).ok());
  const StreamResult alice = Submit(kAlice, {Spec("echo", {1})});
  ASSERT_EQ(alice.Terminal().size(), 1u);
  EXPECT_EQ(alice.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  const StreamResult root =
      Submit(kRoot, std::vector<v1::JobSpec>(20, Spec("echo", {1})));
  EXPECT_EQ(root.Terminal().size(), 20u);
  for (const v1::JobEvent& e : root.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
  }
  for (auto& c : contexts) c->TryCancel();
  for (auto& r : readers) r->Finish();
  // A closed stream frees its place (once the server has seen it end).
  bool reopened = false;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!reopened && absl::Now() < end) {
    grpc::ClientContext again;
    WithToken(again, kCarol);
    auto stream = stub_->WatchJobs(&again, {});
    v1::WatchJobsResponse header;
    reopened = stream->Read(&header);
    again.TryCancel();
    stream->Finish();
    if (!reopened) absl::SleepFor(absl::Milliseconds(20));  // Polling.
  }
  EXPECT_TRUE(reopened);
}

TEST(LimitsTest, EveryRequestLimitIsEnforcedAndTheDaemonServesOn) {
  auto daemon = InProcessDaemon::Start(
      {"--max-payload-bytes", "100", "--max-labels", "2", "--max-label-bytes",
       "8", "--max-idempotency-key-bytes", "8", "--max-value-depth", "3",
       "--max-args-bytes", "200", "--max-jobs-per-request", "3",
       "--max-message-bytes", "65536", "--max-retained", "5"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto stub = (*daemon)->NewStub();
  auto rejected = [&](const v1::JobSpec& spec, const std::string& flag) {
    const StreamResult r = testing::SubmitAll(*stub, {spec});
    ASSERT_EQ(r.Terminal().size(), 1u) << flag;
    EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_REJECTED) << flag;
    EXPECT_EQ(r.Terminal()[0].error().code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << flag;
  };
  v1::JobSpec payload = Spec("echo");
  payload.set_payload(std::string(101, 'p'));
  rejected(payload, "max-payload-bytes");
  v1::JobSpec labels = Spec("echo");
  for (const char* k : {"a", "b", "c"}) (*labels.mutable_labels())[k] = "v";
  rejected(labels, "max-labels");
  v1::JobSpec long_label = Spec("echo");
  (*long_label.mutable_labels())["k"] = std::string(9, 'v');
  rejected(long_label, "max-label-bytes");
  v1::JobSpec key = Spec("echo");
  key.set_idempotency_key(std::string(9, 'k'));
  rejected(key, "max-idempotency-key-bytes");
  v1::JobSpec deep = Spec("echo");
  google::protobuf::Value* v = deep.add_args();
  for (int i = 0; i < 5; ++i) v = v->mutable_list_value()->add_values();
  v->set_number_value(1);
  rejected(deep, "max-value-depth");
  v1::JobSpec big_args = Spec("echo");
  big_args.add_args()->set_string_value(std::string(300, 'a'));
  rejected(big_args, "max-args-bytes");
  // Too many jobs in one message, and a message over the size limit.
  EXPECT_EQ(testing::SubmitAll(*stub, std::vector<v1::JobSpec>(4, Spec("echo")))
                .status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::JobSpec huge = Spec("echo");
  huge.set_payload(std::string(100000, 'h'));
  EXPECT_EQ(testing::SubmitAll(*stub, {huge}).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Retention: only the last 5 ended jobs are kept.
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    const StreamResult r = testing::SubmitAll(*stub, {Spec("echo", {1})});
    ASSERT_EQ(r.Terminal().size(), 1u);
    ids.push_back(r.Terminal()[0].job_id());
  }
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetJobRequest req;
  req.set_job_id(ids[0]);
  v1::Job job;
  EXPECT_EQ(stub->GetJob(&ctx, req, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Garbage where a request should be: refused, and nothing else breaks.
  {
    grpc::GenericStub generic(grpc::CreateChannel(
        (*daemon)->unix_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext gctx;
    Deadline(gctx);
    grpc::Slice garbage(std::string("\xff\xff\xff\xff\x0f garbage", 13));
    grpc::ByteBuffer in(&garbage, 1), out;
    grpc::Status status;
    absl::Notification done;
    generic.UnaryCall(&gctx, "/jobd.v1.JobService/GetJob", grpc::StubOptions(),
                      &in, &out, [&](grpc::Status s) {
                        status = s;
                        done.Notify();
                      });
    done.WaitForNotification();
    EXPECT_FALSE(status.ok());
  }
  const StreamResult after = testing::SubmitAll(*stub, {Spec("echo", {2})});
  ASSERT_EQ(after.Terminal().size(), 1u);
  EXPECT_EQ(after.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
}

}  // namespace
}  // namespace jobd
