// Integration tests of push callbacks (webhooks) with the real jobd binary
// and a receiver in Python (tests/integration/callback_receiver.py) that
// checks each signature with Python's hmac: every terminal event reaches it
// at least once, signed, across answers that fail and across a kill -9 of
// jobd; URLs outside the allowlist are refused naming the field; bad
// settings are refused naming the option.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/journaled_daemon.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;
using testing::SubmitAll;

// One POST as the receiver logged it.
struct Post {
  std::string job_id;
  int attempt = 0;
  bool valid = false;
  int code = 0;
  std::string content_type;
  v1::JobEvent event;  // When valid.
};

class CallbackTest : public testing::JournaledDaemonTest {
 protected:
  void TearDown() override {
    daemon_.reset();
    if (receiver_ > 0) {
      testing::StopProcess(receiver_, SIGTERM, absl::Seconds(5)).IgnoreError();
    }
    JournaledDaemonTest::TearDown();
  }

  // Starts the receiver; `extra`: its --fail-first / --fail-while.
  void StartReceiver(std::vector<std::string> extra = {}) {
    secret_file_ = dir_ + "/secret";
    std::ofstream(secret_file_) << "a key of more than sixteen bytes\n";
    log_ = dir_ + "/posts.jsonl";
    std::vector<std::string> argv = {
        "/usr/bin/python3",
        std::string(JOBD_TEST_SOURCE_DIR) +
            "/tests/integration/callback_receiver.py",
        "--secret-file",
        secret_file_,
        "--log",
        log_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto ready = testing::SpawnReady(argv, "\n", dir_ + "/receiver.err",
                                     absl::Seconds(20));
    ASSERT_TRUE(ready.ok()) << ready.status();
    receiver_ = ready->pid;
    port_ = std::stoi(ready->banner.substr(ready->banner.find(' ') + 1));
    prefix_ = absl::StrCat("http://127.0.0.1:", port_, "/hooks/");
  }

  std::vector<std::string> Flags() const {
    return {"--callback-allowed-prefixes", prefix_,
            "--callback-secret-file",      secret_file_,
            "--callback-backoff",          "20ms",
            "--callback-max-backoff",      "200ms",
            "--callback-max-attempts",     "1000"};
  }

  v1::JobSpec WithCallback(v1::JobSpec spec, const std::string& path) {
    spec.set_callback_url(prefix_ + path);
    return spec;
  }

  std::vector<Post> Posts() const {
    std::vector<Post> out;
    std::ifstream in(log_);
    std::string line;
    while (std::getline(in, line)) {
      google::protobuf::Struct s;
      if (!google::protobuf::util::JsonStringToMessage(line, &s).ok()) continue;
      const auto& f = s.fields();
      Post p;
      p.job_id = f.at("job_id").string_value();
      p.attempt = std::atoi(f.at("attempt").string_value().c_str());
      p.valid = f.at("valid").bool_value();
      p.code = static_cast<int>(f.at("code").number_value());
      p.content_type = f.at("content_type").string_value();
      if (p.valid) {
        std::string json;
        EXPECT_TRUE(google::protobuf::util::MessageToJsonString(
                        f.at("event").struct_value(), &json)
                        .ok());
        EXPECT_TRUE(
            google::protobuf::util::JsonStringToMessage(json, &p.event).ok())
            << json;
      }
      out.push_back(std::move(p));
    }
    return out;
  }

  // Job ids the receiver accepted (answered 200) a valid POST for.
  std::set<std::string> Accepted() const {
    std::set<std::string> ids;
    for (const Post& p : Posts()) {
      if (p.valid && p.code == 200) ids.insert(p.job_id);
    }
    return ids;
  }

  // Submits `specs`; returns the job ids by client tag order.
  std::vector<std::string> SubmitIds(const std::vector<v1::JobSpec>& specs) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    auto stream = stub_->Submit(&ctx);
    EXPECT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
    stream->WritesDone();
    std::map<uint64_t, std::string> ids;
    v1::SubmitResponse resp;
    while (ids.size() < specs.size() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED)
          ids[e.client_tag()] = e.job_id();
        EXPECT_NE(e.type(), v1::EVENT_TYPE_REJECTED) << e.error().message();
      }
    }
    ctx.TryCancel();
    std::vector<std::string> out;
    for (auto& [tag, id] : ids) out.push_back(id);
    EXPECT_EQ(out.size(), specs.size());
    return out;
  }

  std::string secret_file_, log_, prefix_;
  pid_t receiver_ = -1;
  int port_ = 0;
};

TEST_F(CallbackTest, EveryEndIsPostedSignedAndRetriedUntilAccepted) {
  // The receiver answers 503 to its first 4 POSTs.
  ASSERT_NO_FATAL_FAILURE(StartReceiver({"--fail-first", "4"}));
  ASSERT_NO_FATAL_FAILURE(StartDaemon(Flags()));
  std::vector<v1::JobSpec> specs = {
      WithCallback(Spec("echo", {1}), "a"),
      WithCallback(Spec("echo", {2}), "b?x=1"),
      WithCallback(Spec("fail"), "c"),
      WithCallback(Spec("sleep", {60000}), "d"),
      Spec("echo", {3}),  // No callback.
  };
  const std::vector<std::string> ids = SubmitIds(specs);
  ASSERT_EQ(ids.size(), 5u);
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::CancelJobRequest req;
    req.set_job_id(ids[3]);
    v1::CancelJobResponse resp;
    ASSERT_TRUE(stub_->CancelJob(&ctx, req, &resp).ok());
  }
  const std::set<std::string> want = {ids[0], ids[1], ids[2], ids[3]};
  ASSERT_TRUE(
      testing::WaitFor([&] { return Accepted() == want; }, absl::Seconds(30)))
      << "accepted " << Accepted().size() << " of 4";
  const std::map<std::string, v1::EventType> type = {
      {ids[0], v1::EVENT_TYPE_SUCCEEDED},
      {ids[1], v1::EVENT_TYPE_SUCCEEDED},
      {ids[2], v1::EVENT_TYPE_FAILED},
      {ids[3], v1::EVENT_TYPE_CANCELLED}};
  int failed_answers = 0;
  for (const Post& p : Posts()) {
    EXPECT_TRUE(p.valid) << "job " << p.job_id << " attempt " << p.attempt;
    EXPECT_EQ(p.content_type, "application/json");
    ASSERT_TRUE(type.contains(p.job_id)) << p.job_id;
    EXPECT_EQ(p.event.job_id(), p.job_id);
    EXPECT_EQ(p.event.type(), type.at(p.job_id));
    EXPECT_GE(p.attempt, 1);
    if (p.code == 503) ++failed_answers;
  }
  EXPECT_EQ(failed_answers, 4);
  for (const std::string& id : want) {
    // The receiver logs its 200 before jobd reads it: DELIVERED follows.
    absl::StatusOr<v1::Job> job;
    EXPECT_TRUE(testing::WaitFor(
        [&] {
          job = GetJob(id);
          return job.ok() &&
                 job->callback().state() == v1::CALLBACK_STATE_DELIVERED;
        },
        absl::Seconds(10)))
        << id << ": "
        << (job.ok() ? job->callback().ShortDebugString()
                     : job.status().ToString());
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_GE(job->callback().attempts(), 1u);
  }
  absl::StatusOr<v1::Job> plain = GetJob(ids[4]);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_callback());
  const v1::GetStatsResponse stats = testing::GetStats(*stub_);
  EXPECT_EQ(stats.callbacks().delivered(), 4u);
  EXPECT_EQ(stats.callbacks().attempts(), 8u);
  EXPECT_EQ(stats.callbacks().pending(), 0u);
}

TEST_F(CallbackTest, APendingCallbackSurvivesAKillNine) {
  // The receiver answers 503 while the gate file exists.
  const std::string gate = dir_ + "/gate";
  std::ofstream(gate) << "closed";
  ASSERT_NO_FATAL_FAILURE(StartReceiver({"--fail-while", gate}));
  ASSERT_NO_FATAL_FAILURE(StartDaemon(Flags()));
  const std::vector<std::string> ids = SubmitIds(
      {WithCallback(Spec("echo", {1}), "1"), WithCallback(Spec("fail"), "2"),
       WithCallback(Spec("echo", {3}), "3")});
  ASSERT_EQ(ids.size(), 3u);
  // Each job ended (durably) and its callback was tried and refused.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        for (const std::string& id : ids) {
          absl::StatusOr<v1::Job> job = GetJob(id);
          // An attempt made and answered (attempts counts one in flight).
          if (!job.ok() ||
              job->callback().state() != v1::CALLBACK_STATE_PENDING ||
              job->callback().attempts() < 1 ||
              job->callback().last_error().empty()) {
            return false;
          }
        }
        return true;
      },
      absl::Seconds(30)));
  EXPECT_THAT(GetJob(ids[0])->callback().last_error(), HasSubstr("HTTP 503"));
  ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
  daemon_.reset();
  EXPECT_TRUE(Accepted().empty());
  std::filesystem::remove(gate);
  ASSERT_NO_FATAL_FAILURE(StartDaemon(Flags()));
  const std::set<std::string> want(ids.begin(), ids.end());
  ASSERT_TRUE(
      testing::WaitFor([&] { return Accepted() == want; }, absl::Seconds(30)))
      << "accepted " << Accepted().size() << " of 3 after the restart";
  for (const Post& p : Posts()) EXPECT_TRUE(p.valid);
  for (const std::string& id : ids) {
    absl::StatusOr<v1::Job> job = GetJob(id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->callback().state(), v1::CALLBACK_STATE_DELIVERED) << id;
  }
}

TEST_F(CallbackTest, UrlsOutsideTheAllowlistAreRefusedNamingTheField) {
  ASSERT_NO_FATAL_FAILURE(StartReceiver());
  ASSERT_NO_FATAL_FAILURE(StartDaemon(Flags()));
  std::vector<v1::JobSpec> specs(4, Spec("echo", {1}));
  specs[0].set_callback_url(absl::StrCat("http://127.0.0.1:", port_, "/other"));
  specs[1].set_callback_url(absl::StrCat("ftp://127.0.0.1:", port_, "/hooks/"));
  specs[2].set_callback_url(prefix_ + std::string(3000, 'a'));
  specs[3].set_callback_url(
      absl::StrCat("http://127.0.0.1:", port_, "0/hooks/"));
  testing::StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_EQ(r.events.size(), 4u);
  for (const v1::JobEvent& e : r.events) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
    EXPECT_THAT(e.error().message(), HasSubstr("spec.callback_url"));
  }
  EXPECT_THAT(r.events[0].error().message(),
              HasSubstr("none of the daemon's --callback-allowed-prefixes"));
  EXPECT_THAT(r.events[1].error().message(),
              HasSubstr("is not an http:// or https:// URL"));
  EXPECT_THAT(r.events[2].error().message(), HasSubstr("more than the 2048"));
}

TEST_F(CallbackTest, BadSettingsAreRefusedNamingTheOption) {
  const std::string secret = dir_ + "/secret";
  std::ofstream(secret) << "a key of more than sixteen bytes\n";
  const std::string sock = dir_ + "/s.sock";
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        testing::JobdPath(), "--unix-socket", sock, "--tcp", "none",
        "--state-dir",       state_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return testing::RunCommand(argv, "", absl::Seconds(20));
  };
  testing::CommandResult r = run({"--callback-allowed-prefixes", "ftp://x/",
                                  "--callback-secret-file", secret});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--callback-allowed-prefixes: 'ftp://x/'"));
  r = run({"--callback-allowed-prefixes", "http://127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--callback-allowed-prefixes"));
  r = run({"--callback-allowed-prefixes", "http://127.0.0.1:1/"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--callback-secret-file: required"));
  r = run({"--callback-allowed-prefixes", "http://127.0.0.1:1/",
           "--callback-secret-file", dir_ + "/missing"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--callback-secret-file: cannot read"));
  r = run({"--callback-backoff", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--callback-backoff: 'soon'"));
}

}  // namespace
}  // namespace jobd
