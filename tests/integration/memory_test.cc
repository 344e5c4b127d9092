// Integration tests of jobd's byte budgets against the real daemon: its RSS
// and its journal's size stay under their bounds while 1 MiB results, a
// client that never reads and unread watchers push them; one caller cannot
// fill the journal for the others; memory goes back to the system once
// streams close; stopped right after big results, jobd exits at once.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/test_tokens.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::Spec;
using testing::SubmitAll;
using testing::WaitFor;

constexpr uint64_t kMiB = 1 << 20;

// Under ASan, malloc is ASan's: freed memory sits in its quarantine (256 MB)
// and every allocation carries redzones and shadow, so RSS says nothing about
// jobd's budgets there. The sanitized build still checks what jobd does
// (accepts, drops, resumes); the normal build checks the bytes.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRssMeasuresJobd = false;
#else
constexpr bool kRssMeasuresJobd = true;
#endif

// A field of /proc/PID/status in bytes (VmRSS, VmHWM), or 0.
uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    uint64_t kb = 0;
    if (absl::SimpleAtoi(digits, &kb)) return kb * 1024;
  }
  return 0;
}

v1::JobSpec Echo(size_t payload) {
  v1::JobSpec spec = Spec("echo");
  spec.set_payload(std::string(payload, 'x'));
  return spec;
}

class MemoryTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args,
                   std::vector<std::string> env = {}) {
    args.insert(args.end(), {"--log-level", "info", "--process-workers", "0"});
    auto d = Daemon::Start(std::move(args), std::move(env));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    channel_ = grpc::CreateChannel(daemon_->unix_address(),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel_);
  }
  v1::GetStatsResponse Stats(const std::string& token = "") {
    return testing::GetStats(*stub_, token);
  }
  uint64_t Rss() { return ProcStatusBytes(daemon_->pid(), "VmRSS"); }
  uint64_t PeakRss() { return ProcStatusBytes(daemon_->pid(), "VmHWM"); }
  // The daemon still serves a normal job.
  void ExpectServing() {
    auto r = SubmitAll(*stub_, {Spec("sleep", {1})});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.Terminal().size(), 1u);
    EXPECT_EQ(r.Terminal()[0].type(), v1::EVENT_TYPE_SUCCEEDED);
  }

  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(MemoryTest, BigResultsKeepRssAndTheJournalWithinTheirBudgets) {
  StartDaemon({"--max-retained-bytes", "16M", "--max-live-bytes", "16M",
               "--stream-buffer-bytes", "8M"});
  const uint64_t rss0 = Rss();
  // 200 jobs of 1 MiB in, 1 MiB out, through one stream whose client reads
  // everything: 400 MiB held without budgets.
  constexpr int kJobs = 200;
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(120));
  auto stream = stub_->Submit(&ctx);
  std::thread writer([&] {
    const v1::JobSpec spec = Echo(kMiB);
    for (int i = 0; i < kJobs; ++i) {
      v1::SubmitRequest req;
      if (i == 0) {
        req.mutable_options()->set_terminal_only(true);
        req.mutable_options()->set_omit_accepted(true);
      }
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = spec;
      if (!stream->Write(req)) return;
    }
    stream->WritesDone();
  });
  int succeeded = 0, refused = 0;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_SUCCEEDED) {
        ++succeeded;
        EXPECT_EQ(e.result().payload().size(), kMiB);
      } else {
        // The stream's byte window keeps its jobs in flight under the live
        // budget; should one pass it, it is refused by name.
        ++refused;
        EXPECT_THAT(e.error().message(), HasSubstr("max-live-bytes"));
      }
    }
  }
  writer.join();
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(succeeded + refused, kJobs);
  EXPECT_GE(succeeded, kJobs / 2);
  const v1::GetStatsResponse s = Stats();
  EXPECT_EQ(s.live_bytes(), 0u);
  EXPECT_LE(s.retained_bytes(), 16 * kMiB);
  EXPECT_LE(s.retained(), 8u);  // Each holds 2 MiB.
  // The journal holds the live and the retained ones (with SQLite's page
  // overhead), and up to 32 MiB of log between its compactions
  // (JournalOptions::compact_log_bytes): well under what 200 results
  // would take.
  EXPECT_LE(s.journal().file_bytes(), 80 * kMiB);
  EXPECT_TRUE(s.journal().healthy());
  // Budgets of 16 + 16 + 8 MiB, plus what gRPC and the allocator hold for
  // 1 MiB messages in and out: 97-114 MiB on an idle machine, up to 125
  // beside other tests (its client writes on while jobd is slow to read);
  // 673 MiB with the budgets at 1G.
  if (kRssMeasuresJobd) {
    EXPECT_LE(PeakRss() - rss0, 160 * kMiB);
  }
  // Its writes filled the client's socket (1 MiB results), so gRPC polled
  // them with its TCP backup poller, whose rounds last 10 s. Stopped once
  // the client is gone (nothing left to wake that poller), jobd exits
  // cleanly without waiting for the round to end (2.1-2.3 s here; 10.1 s
  // in a quarter of the runs without Daemon::KeepServerForExit).
  stream.reset();
  stub_.reset();
  channel_.reset();
  const absl::Time stop = absl::Now();
  absl::StatusOr<int> status = daemon_->Stop(SIGTERM, absl::Seconds(30));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  const absl::Duration took = absl::Now() - stop;
  EXPECT_LT(took, absl::Seconds(5)) << took;
}

TEST_F(MemoryTest, AClientThatNeverReadsCostsAtMostItsStreamBuffer) {
  StartDaemon({"--stream-buffer-bytes", "4M"});
  const uint64_t rss0 = Rss();
  grpc::ClientContext ctx;
  auto stream = stub_->Submit(&ctx);
  std::atomic<int> written{0};
  std::thread writer([&] {
    const v1::JobSpec spec = Echo(kMiB);
    for (int i = 0; i < 100000; ++i) {
      v1::SubmitRequest req;
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = spec;
      if (!stream->Write(req)) return;  // Blocks once jobd stops reading.
      ++written;
    }
  });
  // Never read. Echo jobs end in microseconds: without a byte window
  // thousands would be accepted and their results queued in these 4 s.
  uint64_t peak = 0;
  for (int i = 0; i < 40; ++i) {
    absl::SleepFor(absl::Milliseconds(100));  // Sampling RSS over time.
    peak = std::max(peak, Rss());
  }
  const v1::GetStatsResponse s = Stats();
  EXPECT_LT(s.accepted(), 40u);
  if (kRssMeasuresJobd) {
    EXPECT_LT(peak - rss0, 100 * kMiB);
  }
  ctx.TryCancel();
  writer.join();
  stream->Finish();
  ExpectServing();
}

TEST_F(MemoryTest, UnreadWatchersAreDroppedWithAWayToResume) {
  // Streams hold 8 MiB together: over that, those holding more than their
  // share (~80 KB here) are over their limit.
  StartDaemon({"--total-stream-buffer-bytes", "8M"});
  const uint64_t rss0 = Rss();
  // 100 watchers of every job on one connection, never read.
  constexpr int kWatchers = 100;
  struct Watcher {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>> reader;
  };
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    auto w = std::make_unique<Watcher>();
    Deadline(w->ctx, absl::Seconds(120));
    w->reader = stub_->WatchJobs(&w->ctx, v1::WatchJobsRequest());
    v1::WatchJobsResponse header;  // Sent once it is subscribed.
    ASSERT_TRUE(w->reader->Read(&header));
    watchers.push_back(std::move(w));
  }
  // 1,000 jobs with 8 KB results: each watcher would hold ~8.5 MB of them.
  std::vector<v1::JobSpec> specs(1000, Echo(8000));
  auto r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), specs.size());
  if (kRssMeasuresJobd) {
    EXPECT_LT(Rss() - rss0, 100 * kMiB);  // Not 850 MB.
  }
  // A watcher that reads now finds it was dropped, and where to resume. (A
  // watcher whose events went out into gRPC's buffers in time held nothing
  // in jobd, so it was not over its limit: it gets every event, and is
  // cancelled here once it has. Most cannot have.)
  const uint64_t last = r.Terminal().back().sequence();
  int dropped = 0;
  uint64_t last_seen_by_a_dropped = 0;
  for (auto& w : watchers) {
    v1::WatchJobsResponse resp;
    uint64_t last_seen = 0;
    while (w->reader->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) last_seen = e.sequence();
      if (last_seen >= last) w->ctx.TryCancel();
    }
    const grpc::Status status = w->reader->Finish();
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
          << status.error_message();
      continue;
    }
    EXPECT_THAT(status.error_message(), HasSubstr("total-stream-buffer-bytes"));
    EXPECT_THAT(status.error_message(),
                HasSubstr(absl::StrCat("after_sequence=", last_seen)));
    if (dropped++ == 0) last_seen_by_a_dropped = last_seen;
  }
  EXPECT_GE(dropped, kWatchers / 2);
  ASSERT_GT(dropped, 0);
  // Resuming from there replays what it missed, as much as fits in its
  // buffer at a time, and says where to go on: a reader gets everything.
  uint64_t resumed_to = last_seen_by_a_dropped;
  v1::WatchJobsResponse resp;
  int resumes = 0;
  for (; resumes < 100 && resumed_to < r.Terminal().back().sequence();
       ++resumes) {
    grpc::ClientContext again;
    Deadline(again);
    v1::WatchJobsRequest req;
    req.set_after_sequence(resumed_to);
    auto resumed = stub_->WatchJobs(&again, req);
    uint64_t next = resumed_to + 1;
    while (resumed->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        ASSERT_EQ(e.sequence(), next);  // Nothing skipped.
        next = e.sequence() + 1;
      }
      if (next > r.Terminal().back().sequence()) again.TryCancel();
    }
    resumed->Finish();
    resumed_to = next - 1;
  }
  EXPECT_EQ(resumed_to, r.Terminal().back().sequence());
  ExpectServing();
}

TEST_F(MemoryTest, MemoryGoesBackToTheSystemAfterStreamsClose) {
  if (!kRssMeasuresJobd) {
    GTEST_SKIP() << "ASan's allocator keeps freed memory; the normal build "
                    "runs this";
  }
  // No stream budgets: let unread watchers take a few hundred MB.
  StartDaemon(
      {"--stream-buffer-bytes", "0", "--total-stream-buffer-bytes", "0"});
  const uint64_t rss0 = Rss();
  constexpr int kWatchers = 400;
  struct Watcher {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>> reader;
  };
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    auto w = std::make_unique<Watcher>();
    w->reader = stub_->WatchJobs(&w->ctx, v1::WatchJobsRequest());
    v1::WatchJobsResponse header;  // Sent once it is subscribed.
    ASSERT_TRUE(w->reader->Read(&header));
    watchers.push_back(std::move(w));
  }
  // 4,000 jobs: 12,000 events for each watcher, most of them queued in
  // jobd (results are shared, the events are each watcher's own).
  auto r = SubmitAll(*stub_, std::vector<v1::JobSpec>(4000, Echo(0)));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(WaitFor([&] { return Rss() - rss0 > 120 * kMiB; }))
      << "RSS " << rss0 / kMiB << " MiB before, " << Rss() / kMiB << " now";
  const uint64_t open = Rss();
  for (auto& w : watchers) w->ctx.TryCancel();
  for (auto& w : watchers) w->reader->Finish();
  watchers.clear();
  // jemalloc's background thread purges the freed pages within its decay
  // time (10 s) although the daemon is idle; without it they stayed.
  const bool returned =
      WaitFor([&] { return Rss() < rss0 + 40 * kMiB; }, absl::Seconds(40));
  EXPECT_TRUE(returned) << "RSS " << rss0 / kMiB << " MiB before, "
                        << open / kMiB << " MiB with the streams open, "
                        << Rss() / kMiB << " MiB 40 s after they closed";
}

using testing::kAlice;
using testing::kCarol;

TEST_F(MemoryTest, OneCallerCannotFillTheJournalForTheOthers) {
  std::vector<std::string> flags = {"--journal-max-bytes", "24M",
                                    "--quota-max-bytes",   "8M",
                                    "--unix-socket-auth",  "token"};
  const std::vector<std::string> tokens = testing::TokenFlags();
  flags.insert(flags.end(), tokens.begin(), tokens.end());
  StartDaemon(flags);
  auto submit = [&](const std::string& token, int n) {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(60));
    ctx.AddMetadata("authorization", "Bearer " + token);
    return SubmitAll(ctx, *stub_, std::vector<v1::JobSpec>(n, Echo(kMiB)));
  };
  // Alice: 30 results of 1 MiB (60 MiB with their inputs) into a 24 MiB
  // journal. Her quota keeps only her newest few.
  for (int round = 0; round < 6; ++round) {
    auto r = submit(kAlice, 5);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    for (const v1::JobEvent& e : r.Terminal()) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
    }
  }
  // Her live jobs alone may not pass it.
  auto over = submit(kAlice, 12);
  ASSERT_TRUE(over.status.ok());
  int refused = 0;
  for (const v1::JobEvent& e : over.Terminal()) {
    if (e.type() != v1::EVENT_TYPE_REJECTED) continue;
    ++refused;
    EXPECT_EQ(e.error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(e.error().message(), HasSubstr("(quota-max-bytes)"));
    EXPECT_THAT(e.error().message(), HasSubstr("caller 'alice'"));
  }
  // (In one message all 12 are admitted at once: the last ones do not fit.)
  EXPECT_GT(refused, 0);
  // Carol goes on: the journal never filled.
  auto carol = submit(kCarol, 3);
  ASSERT_TRUE(carol.status.ok()) << carol.status.error_message();
  for (const v1::JobEvent& e : carol.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  }
  const v1::GetStatsResponse s = Stats(kCarol);
  EXPECT_TRUE(s.journal().healthy()) << s.journal().last_error();
  EXPECT_EQ(s.journal().write_errors(), 0u);
  EXPECT_LE(s.journal().file_bytes(), 24 * kMiB);
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("cannot rollback")));
}

TEST_F(MemoryTest, AFullJournalForgetsEndedJobsInsteadOfRefusingForAnHour) {
  // No quota (an admin caller), budgets larger than the journal: the
  // journal itself nears its cap, and the oldest results go early.
  StartDaemon({"--journal-max-bytes", "16M", "--max-retained-bytes", "1G",
               "--max-live-bytes", "1G"});
  for (int round = 0; round < 4; ++round) {  // 40 results of 1 MiB.
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(60));
    auto r = SubmitAll(ctx, *stub_, std::vector<v1::JobSpec>(10, Echo(kMiB)));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    int refused = 0;
    for (const v1::JobEvent& e : r.Terminal()) {
      refused += e.type() == v1::EVENT_TYPE_REJECTED;
    }
    // A batch may meet a full journal, for at most a sweep or two.
    if (refused > 0) {
      ASSERT_TRUE(WaitFor([&] { return Stats().journal().healthy(); },
                          absl::Seconds(10)));
    }
  }
  ASSERT_TRUE(
      WaitFor([&] { return Stats().journal().healthy(); }, absl::Seconds(10)));
  const v1::GetStatsResponse s = Stats();
  EXPECT_LT(s.retained(), 40u);
  EXPECT_LE(s.journal().file_bytes(), 16 * kMiB);
  EXPECT_THAT(daemon_->Log(), HasSubstr("forgot the"));
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("cannot rollback")));
  ExpectServing();
}

TEST(MemoryConfigTest, BadByteBudgetsNameTheirOption) {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), testing::JobdPath());
    args.insert(args.end(), {"--unix-socket", "none", "--tcp", "127.0.0.1:0",
                             "--durability", "none"});
    return testing::RunCommand(args);
  };
  const testing::CommandResult small = run({"--max-live-bytes", "1K"});
  EXPECT_EQ(small.exit_code, 2);
  EXPECT_THAT(small.err, HasSubstr("--max-live-bytes"));
  EXPECT_THAT(small.err, HasSubstr("--max-payload-bytes"));
  for (const char* flag :
       {"--max-retained-bytes", "--quota-max-bytes", "--stream-buffer-bytes",
        "--total-stream-buffer-bytes", "--max-retained-result-bytes"}) {
    const testing::CommandResult bad = run({flag, "lots"});
    EXPECT_EQ(bad.exit_code, 2) << flag;
    EXPECT_THAT(bad.err, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace jobd
