// Integration tests: the C++ client library (futures, Then, AsCompleted,
// Wait, Map, Watch, unary wrappers) against the real jobd binary.
#include "client/client.h"

#include <atomic>
#include <stdexcept>

#include "absl/synchronization/notification.h"
#include "client/chord.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

class ClientTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args = {}) {
    client_.reset();
    auto d = testing::Daemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    auto c = Client::Connect({.address = daemon_->unix_address()});
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }
  void SetUp() override { Start(); }
  void TearDown() override { client_.reset(); }

  std::unique_ptr<testing::Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, ConnectToNothingIsUnavailable) {
  auto c = Client::Connect({.address = "unix:/tmp/no-jobd-here.sock",
                            .connect_timeout = absl::Milliseconds(300)});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(c.status().message(), HasSubstr("no-jobd-here"));
}

TEST_F(ClientTest, SubmitAndGet) {
  Future f = client_->Submit(MakeSpec("echo", "hello"));
  auto out = f.Get(kWait);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->ok());
  EXPECT_EQ(out->result.value().string_value(), "hello");
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.job_id().value().empty());
  auto job = client_->GetJob(*f.job_id());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ClientTest, GetTimesOutWhileTheJobGoesOn) {
  Future f = client_->Submit(MakeSpec("sleep", 300));
  auto early = f.Get(absl::Milliseconds(20));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kDeadlineExceeded);
  auto later = f.Get(kWait);
  ASSERT_TRUE(later.ok());
  EXPECT_TRUE(later->ok());
}

TEST_F(ClientTest, RejectionAndFailureAreDistinct) {
  auto rejected = client_->Submit(MakeSpec("sleep", "soon")).Get(kWait);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("spec.args[0]"));
  auto failed = client_->Submit(MakeSpec("fail")).Get(kWait);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state, v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed->error.reason(), v1::ERROR_REASON_TASK_ERROR);
}

TEST_F(ClientTest, AChordRunsItsLastJobAfterTheGroup) {
  Chord c =
      SubmitChord(*client_, {MakeSpec("sleep", 200), MakeSpec("sleep", 100)},
                  MakeSpec("echo", "merged"));
  ASSERT_EQ(c.group.size(), 2u);
  auto merged = c.then.Get(kWait);
  ASSERT_TRUE(merged.ok()) << merged.status();
  // It got the group's results first, in the group's order.
  EXPECT_EQ(merged->result.value().ShortDebugString(),
            "list_value { values { list_value { values { number_value: 200 } "
            "values { number_value: 100 } } } values { string_value: "
            "\"merged\" } }");
  auto job = client_->GetJob(merged->job_id);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->spec().depends_on_size(), 2);
  for (int i = 0; i < 2; ++i) {
    auto part = client_->GetJob(job->spec().depends_on(i));
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(part->state(), v1::JOB_STATE_SUCCEEDED);
    // The last job started after each of the group had ended.
    EXPECT_GE(absl::FromUnixNanos(job->start_time().seconds() * 1000000000 +
                                  job->start_time().nanos()),
              absl::FromUnixNanos(part->finish_time().seconds() * 1000000000 +
                                  part->finish_time().nanos()));
  }
  // A failed part fails it DEPENDENCY_FAILED; a rejected one, at once.
  Chord bad = SubmitChord(*client_, {MakeSpec("fail")}, MakeSpec("echo", 1));
  auto failed = bad.then.Get(kWait);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->error.reason(), v1::ERROR_REASON_DEPENDENCY_FAILED);
  Chord rejected =
      SubmitChord(*client_, {MakeSpec("sleep", "soon")}, MakeSpec("echo", 1));
  auto none = rejected.then.Get(kWait);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("chord: group job 0"));
  // Without passing results it only runs after them; an empty group passes
  // an empty list.
  Chord plain = SubmitChord(*client_, {MakeSpec("sleep", 1)},
                            MakeSpec("echo", "plain"), {.pass_results = false});
  auto alone = plain.then.Get(kWait);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->result.value().string_value(), "plain");
  Chord empty = SubmitChord(*client_, {}, MakeSpec("echo", "none"));
  auto nothing = empty.then.Get(kWait);
  ASSERT_TRUE(nothing.ok()) << nothing.status();
  EXPECT_EQ(nothing->result.value().ShortDebugString(),
            "list_value { values { list_value { } } values { string_value: "
            "\"none\" } }");
}

TEST_F(ClientTest, ThenRunsOnceAlsoWhenAddedAfterCompletion) {
  Future f = client_->Submit(MakeSpec("sleep", 50));
  std::atomic<int> calls{0};
  absl::Notification ran;
  f.Then([&](const Future& done) {
    EXPECT_TRUE(done.done());
    ++calls;
    ran.Notify();
  });
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(kWait));
  ASSERT_TRUE(f.Get(kWait).ok());
  int late = 0;
  f.Then([&](const Future&) { ++late; });  // Already done: runs inline.
  EXPECT_EQ(late, 1);
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(ClientTest, ACallbackThatThrowsHarmsNothing) {
  Future f = client_->Submit(MakeSpec("sleep", 20));
  absl::Notification second;
  f.Then([](const Future&) { throw std::runtime_error("user bug"); });
  f.Then([&](const Future&) { second.Notify(); });
  ASSERT_TRUE(second.WaitForNotificationWithTimeout(kWait));
  // The shared stream still works.
  auto out = client_->Submit(MakeSpec("echo", 1)).Get(kWait);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->ok());
}

TEST_F(ClientTest, AsCompletedYieldsInCompletionOrder) {
  std::vector<Future> fs = {client_->Submit(MakeSpec("sleep", 300)),
                            client_->Submit(MakeSpec("sleep", 10)),
                            client_->Submit(MakeSpec("sleep", 150))};
  std::vector<uint64_t> order;
  for (const Future& f : AsCompleted(fs, kWait)) {
    order.push_back(f.client_tag());
  }
  EXPECT_THAT(order, ElementsAre(fs[1].client_tag(), fs[2].client_tag(),
                                 fs[0].client_tag()));
}

TEST_F(ClientTest, WaitModes) {
  std::vector<Future> fs = {client_->Submit(MakeSpec("sleep", 400)),
                            client_->Submit(MakeSpec("sleep", 10))};
  WaitResult first = Wait(fs, WaitMode::kFirstCompleted, kWait);
  ASSERT_EQ(first.done.size(), 1u);
  EXPECT_EQ(first.done[0], fs[1]);
  EXPECT_EQ(first.not_done.size(), 1u);

  std::vector<Future> gs = {client_->Submit(MakeSpec("sleep", 400)),
                            client_->Submit(MakeSpec("fail"))};
  WaitResult exc = Wait(gs, WaitMode::kFirstException, kWait);
  ASSERT_EQ(exc.done.size(), 1u);
  EXPECT_EQ(exc.done[0], gs[1]);

  WaitResult timed = Wait({client_->Submit(MakeSpec("sleep", 2000))},
                          WaitMode::kAllCompleted, absl::Milliseconds(30));
  EXPECT_EQ(timed.not_done.size(), 1u);
  WaitResult all = Wait(fs, WaitMode::kAllCompleted, kWait);
  EXPECT_EQ(all.done.size(), 2u);
}

TEST_F(ClientTest, CancelQueuedAndRunning) {
  Start({"--thread-workers", "1"});
  Future running = client_->Submit(MakeSpec("sleep", 20000));
  Future queued = client_->Submit(MakeSpec("sleep", 20000));
  ASSERT_TRUE(running.job_id(kWait).ok());
  ASSERT_TRUE(queued.job_id(kWait).ok());
  ASSERT_TRUE(queued.Cancel().ok());
  ASSERT_TRUE(running.Cancel().ok());
  for (const Future& f : {running, queued}) {
    auto out = f.Get(kWait);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->state, v1::JOB_STATE_CANCELLED);
  }
  EXPECT_EQ(client_->Cancel("987654").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, TimeoutAndPriorities) {
  Start({"--thread-workers", "1"});
  v1::JobSpec slow = MakeSpec("sleep", 10000);
  slow.mutable_timeout()->set_nanos(100000000);
  auto out = client_->Submit(slow).Get(kWait);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->error.reason(), v1::ERROR_REASON_TIMEOUT);

  // On the one thread (the reactor would run them all at once).
  v1::JobSpec blocker = MakeSpec("sleep", 200);
  blocker.set_priority(100);
  blocker.set_executor(v1::EXECUTOR_THREAD);
  std::vector<Future> fs = {client_->Submit(blocker)};
  for (int p : {1, 3, 2}) {
    v1::JobSpec s = MakeSpec("sleep", 1);
    s.set_priority(p);
    s.set_executor(v1::EXECUTOR_THREAD);
    fs.push_back(client_->Submit(s));
  }
  std::vector<uint64_t> order;
  for (const Future& f : AsCompleted(fs, kWait))
    order.push_back(f.client_tag());
  EXPECT_THAT(order, ElementsAre(fs[0].client_tag(), fs[2].client_tag(),
                                 fs[3].client_tag(), fs[1].client_tag()));
}

TEST_F(ClientTest, IdempotentResubmit) {
  v1::JobSpec s = MakeSpec("sleep", 20);
  s.set_idempotency_key("invoice-7");
  auto a = client_->Submit(s).job_id(kWait);
  auto b = client_->Submit(s).job_id(kWait);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

// Yields `n` inputs: sleep durations chosen so later inputs finish first.
ArgsSource Countdown(int n, int step_ms) {
  auto i = std::make_shared<int>(0);
  return [=]() -> std::optional<std::vector<google::protobuf::Value>> {
    if (*i >= n) return std::nullopt;
    const int k = (*i)++;
    return std::vector<google::protobuf::Value>{ToValue((n - k) * step_ms)};
  };
}

TEST_F(ClientTest, MapOrderedKeepsSubmissionOrder) {
  MapStream m = client_->Map(
      "sleep", Countdown(6, 30),
      {.ordered = true, .window = 3, .kind = v1::JOB_KIND_IO_BOUND});
  std::vector<uint64_t> indexes;
  for (MapResult r; m.Next(&r);) {
    EXPECT_TRUE(r.ok()) << r.status;
    indexes.push_back(r.index);
  }
  EXPECT_TRUE(m.status().ok()) << m.status();
  EXPECT_THAT(indexes, ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST_F(ClientTest, MapUnorderedYieldsAsCompletedWithinTheWindow) {
  MapStream m = client_->Map(
      "sleep", Countdown(4, 100),
      {.ordered = false, .window = 4, .kind = v1::JOB_KIND_IO_BOUND});
  std::vector<uint64_t> indexes;
  for (MapResult r; m.Next(&r);) indexes.push_back(r.index);
  EXPECT_TRUE(m.status().ok());
  EXPECT_THAT(indexes, ElementsAre(3, 2, 1, 0));
}

TEST_F(ClientTest, MapManyWithASmallWindow) {
  constexpr int kN = 20000;
  auto i = std::make_shared<int>(0);
  MapStream m = client_->Map(
      "echo",
      [i]() -> std::optional<std::vector<google::protobuf::Value>> {
        if (*i >= kN) return std::nullopt;
        return std::vector<google::protobuf::Value>{ToValue((*i)++)};
      },
      {.ordered = true, .window = 64});
  int count = 0;
  for (MapResult r; m.Next(&r); ++count) {
    ASSERT_EQ(r.index, static_cast<uint64_t>(count));
    ASSERT_EQ(r.outcome.result.value().number_value(), count);
  }
  EXPECT_TRUE(m.status().ok());
  EXPECT_EQ(count, kN);
}

TEST_F(ClientTest, WatchAndStats) {
  Future f = client_->Submit(MakeSpec("sleep", 50));
  const std::string id = *f.job_id(kWait);
  WatchStream w = client_->Watch({.job_ids = {id}});
  std::vector<v1::EventType> types;
  for (v1::JobEvent e; w.Next(&e);) types.push_back(e.type());
  EXPECT_TRUE(w.status().ok()) << w.status();
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.back(), v1::EVENT_TYPE_SUCCEEDED);
  auto stats = client_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->succeeded(), 1u);
  auto tasks = client_->ListTasks();
  ASSERT_TRUE(tasks.ok());
  EXPECT_GE(tasks->size(), 5u);
  auto jobs = client_->ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 1u);
}

TEST_F(ClientTest, DaemonGoneFailsPendingFutures) {
  Future f = client_->Submit(MakeSpec("sleep", 20000));
  ASSERT_TRUE(f.job_id(kWait).ok());
  ASSERT_TRUE(daemon_->Stop(SIGKILL, kWait).ok());
  auto out = f.Get(kWait);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
}

// A daemon on a socket and journal of the test's own, so that it can be
// started again at the same address (killed, or on a fresh journal).
class ClientRestartTest : public ClientTest {
 protected:
  void SetUp() override { StartAt(dir_.path() + "/state"); }
  // jobd stopped before its directory (a member of this class) goes.
  void TearDown() override {
    client_.reset();
    daemon_.reset();
  }
  void StartAt(const std::string& state) {
    auto d = testing::Daemon::Start({"--unix-socket", socket_, "--state-dir",
                                     state, "--thread-workers", "1"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    if (client_ == nullptr) {
      auto c = Client::Connect({.address = "unix:" + socket_});
      ASSERT_TRUE(c.ok()) << c.status();
      client_ = *std::move(c);
    }
  }
  void KillAndStartAt(const std::string& state) {
    ASSERT_TRUE(daemon_->Stop(SIGKILL, kWait).ok());
    daemon_.reset();
    StartAt(state);
  }

  testing::TempDir dir_;
  const std::string socket_ = dir_.path() + "/jobd.sock";
};

TEST_F(ClientRestartTest, FollowJobFindsAJournaledJobAgainAfterARestart) {
  v1::JobSpec spec = MakeSpec("sleep", 1500);
  spec.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  Future f = client_->Submit(spec);
  absl::StatusOr<std::string> id = f.job_id(kWait);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(testing::WaitFor(
      [&] { return f.state() == v1::JOB_STATE_RUNNING; }, kWait));
  EXPECT_GT(f.accepted_at(), absl::Now() - kWait);
  KillAndStartAt(dir_.path() + "/state");
  auto out = f.Get(kWait);
  ASSERT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
  // Run again (at least once) by the new jobd; found by its old id.
  absl::StatusOr<v1::Job> job =
      client_->FollowJob(*id, kWait, kWait, f.accepted_at());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job->result().value().number_value(), 1500);
  EXPECT_EQ(job->attempts(), 2);
}

TEST_F(ClientRestartTest, FollowJobSaysWhenTheIdNamesANewerJob) {
  Future f = client_->Submit(MakeSpec("sleep", 20000));
  absl::StatusOr<std::string> id = f.job_id(kWait);
  ASSERT_TRUE(id.ok()) << id.status();
  KillAndStartAt(dir_.path() + "/fresh-state");  // The journal left behind.
  // The fresh jobd numbers jobs from the start again.
  auto other = Client::Connect({.address = "unix:" + socket_});
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::string> reused =
      (*other)->Submit(MakeSpec("echo", 1)).job_id(kWait);
  ASSERT_TRUE(reused.ok()) << reused.status();
  ASSERT_EQ(*reused, *id);
  absl::StatusOr<v1::Job> job =
      client_->FollowJob(*id, kWait, kWait, f.accepted_at());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kDataLoss) << job.status();
  EXPECT_THAT(job.status().message(), HasSubstr("names another job"));
  // Without the acceptance time it cannot tell: it is the newer job.
  job = client_->FollowJob(*id, kWait);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec().task(), "echo");
}

TEST_F(ClientRestartTest, FollowJobGivesUpWhenJobdDoesNotComeBack) {
  Future f = client_->Submit(MakeSpec("sleep", 20000));
  absl::StatusOr<std::string> id = f.job_id(kWait);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(daemon_->Stop(SIGKILL, kWait).ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::Job> job = client_->FollowJob(
      *id, absl::InfiniteDuration(), absl::Milliseconds(500), f.accepted_at());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable)
      << job.status();
  EXPECT_THAT(job.status().message(), HasSubstr("did not answer again"));
  EXPECT_LT(absl::Now() - start, kWait);
}

}  // namespace
}  // namespace jobd::client
