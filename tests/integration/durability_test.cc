// Integration tests of the durability contract with the journal on, against
// the real daemon: STARTED (and RUNNING, start_time) mean handed to the
// executor, so a job waiting for a slot is not overtaken and a kill -9
// loses only the jobs that may have begun; and nothing a client is shown
// can be taken back by a crash, while a journal that cannot write makes
// every RPC answer at once instead of hanging.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/journaled_daemon.h"

namespace jobd {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;
using testing::StreamResult;
using testing::SubmitAll;

using DurabilityTest = testing::JournaledDaemonTest;

// An exec job that prints when its program really began (ns since the
// epoch), then sleeps `seconds`.
v1::JobSpec StampThenSleep(double seconds) {
  v1::JobSpec s;
  s.set_task("exec");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  auto& argv =
      *(*s.mutable_kwargs()->mutable_fields())["argv"].mutable_list_value();
  for (const std::string& a :
       {std::string("/bin/sh"), std::string("-c"),
        absl::StrCat("date +%s%N; exec sleep ", seconds)}) {
    argv.add_values()->set_string_value(a);
  }
  return s;
}

absl::Time TimeOf(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// Events of one stream by client tag.
std::map<uint64_t, std::vector<v1::JobEvent>> ByTag(const StreamResult& r) {
  std::map<uint64_t, std::vector<v1::JobEvent>> out;
  for (const v1::JobEvent& e : r.events) out[e.client_tag()].push_back(e);
  return out;
}

const v1::JobEvent* Find(const std::vector<v1::JobEvent>& events,
                         v1::EventType type) {
  for (const v1::JobEvent& e : events) {
    if (e.type() == type) return &e;
  }
  return nullptr;
}

// STARTED is stamped as a job is handed over, just before it begins: never
// a slot's wait (300 or 250 ms below) before. Within 20 ms as a rule; a
// machine busy with other work may delay a start further now and then, so
// the rule is checked on the median and the slot's wait on every job.
void ExpectStartedJustBefore(std::vector<absl::Duration> early) {
  ASSERT_FALSE(early.empty());
  for (absl::Duration d : early) {
    EXPECT_GE(d, absl::Milliseconds(-1));
    EXPECT_LT(d, absl::Milliseconds(150));
  }
  std::sort(early.begin(), early.end());
  EXPECT_LT(early[early.size() / 2], absl::Milliseconds(20));
}

TEST_F(DurabilityTest, StartedMeansTheProgramBeganOnTheReactor) {
  StartDaemon({"--exec-allow", "/bin/sh", "--reactor-max-jobs", "2"});
  std::vector<v1::JobSpec> specs(6, StampThenSleep(0.3));
  const StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::vector<absl::Duration> early;  // From STARTED to the program's start.
  for (const auto& [tag, events] : ByTag(r)) {
    const v1::JobEvent* started = Find(events, v1::EVENT_TYPE_STARTED);
    const v1::JobEvent* done = Find(events, v1::EVENT_TYPE_SUCCEEDED);
    ASSERT_NE(started, nullptr) << tag;
    ASSERT_NE(done, nullptr) << tag;
    int64_t began_ns = 0;
    ASSERT_TRUE(absl::SimpleAtoi(
        absl::StripAsciiWhitespace(done->result().payload()), &began_ns))
        << done->result().payload();
    early.push_back(absl::FromUnixNanos(began_ns) - TimeOf(started->time()));
  }
  ExpectStartedJustBefore(early);
}

TEST_F(DurabilityTest, StartedMeansTheWorkerTookTheJobInTheProcessPool) {
  StartDaemon({"--process-workers", "2"});
  v1::JobSpec spec = Spec("sleep", {250}, v1::JOB_KIND_CPU_BOUND);
  spec.set_executor(v1::EXECUTOR_PROCESS);
  const StreamResult r = SubmitAll(*stub_, std::vector<v1::JobSpec>(8, spec));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  // From STARTED to the end, beyond the 250 ms the task sleeps: handing
  // over and reporting, not a wait for a free worker.
  std::vector<absl::Duration> early;
  for (const auto& [tag, events] : ByTag(r)) {
    const v1::JobEvent* started = Find(events, v1::EVENT_TYPE_STARTED);
    const v1::JobEvent* done = Find(events, v1::EVENT_TYPE_SUCCEEDED);
    ASSERT_NE(started, nullptr) << tag;
    ASSERT_NE(done, nullptr) << tag;
    early.push_back(TimeOf(done->time()) - TimeOf(started->time()) -
                    absl::Milliseconds(250));
  }
  ExpectStartedJustBefore(early);
}

TEST_F(DurabilityTest,
       AJobWaitingForASlotIsQueuedAndAHigherPriorityOneGoesNext) {
  StartDaemon({"--exec-allow", "/bin/sh", "--reactor-max-jobs", "2"});
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(60));
  auto stream = stub_->Submit(&ctx);
  ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(
      std::vector<v1::JobSpec>(8, StampThenSleep(0.3)))));
  // Once four have ended (slots freed with work waiting), more are queued
  // behind the two running: a job with a higher priority comes now.
  std::map<uint64_t, std::string> ids;
  std::vector<uint64_t> start_order;  // Client tags.
  int ended = 0;
  v1::SubmitResponse resp;
  auto read = [&] {
    if (!stream->Read(&resp)) return false;
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids[e.client_tag()] = e.job_id();
      if (e.type() == v1::EVENT_TYPE_STARTED) {
        start_order.push_back(e.client_tag());
      }
      ended += e.type() == v1::EVENT_TYPE_SUCCEEDED;
    }
    return true;
  };
  while (ended < 4 && read()) {
  }
  ASSERT_EQ(ended, 4);
  // Jobs 5 and 6 take the two freed slots; 7 and 8 wait for a slot: they
  // are queued (not RUNNING, no start time), not started ahead of it.
  for (uint64_t tag : {7u, 8u}) {
    absl::StatusOr<v1::Job> job = GetJob(ids[tag]);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED) << tag;
    EXPECT_FALSE(job->has_start_time()) << tag;
  }
  v1::JobSpec urgent = StampThenSleep(0.01);
  urgent.set_priority(10);
  v1::SubmitRequest req;
  auto* item = req.add_items();
  item->set_client_tag(100);
  *item->mutable_spec() = urgent;
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  while (ended < 9 && read()) {
  }
  ASSERT_EQ(ended, 9);
  // It goes next: before 7 and 8, which were waiting when it came.
  auto at = [&](uint64_t tag) {
    return std::find(start_order.begin(), start_order.end(), tag) -
           start_order.begin();
  };
  EXPECT_LT(at(100), at(7));
  EXPECT_LT(at(100), at(8));
  EXPECT_TRUE(stream->Finish().ok());
}

// An at-least-once job needs no durable claim (a crash runs it again
// anyway): a short one's accept, start and end share one commit. An
// at-most-once job's claim must be durable before it starts: two commits
// (its accept and claim, then its start and end), never three.
TEST_F(DurabilityTest, AShortAtLeastOnceJobTakesOneCommitAnAtMostOnceOneTwo) {
  // The longest linger allowed: only a job's claim or end starts a commit.
  // (The job's 10 ms are for the commit of its accept to start meanwhile
  // if it did not linger.)
  StartDaemon({"--journal-linger", "100ms"});
  auto commits = [&]() -> uint64_t {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(30));
    v1::GetStatsResponse stats;
    EXPECT_TRUE(stub_->GetStats(&ctx, {}, &stats).ok());
    return stats.journal().commits();
  };
  // The commits one job took. On a loaded machine a job may outlast the
  // linger (its start then commits alone), so each kind runs up to three
  // times and its fewest counts: a record that never lingers, or a claim
  // that skips its commit, shows in every run.
  auto fewest = [&](v1::Delivery delivery) {
    uint64_t least = UINT64_MAX;
    for (int attempt = 0; attempt < 3; ++attempt) {
      const uint64_t before = commits();
      v1::JobSpec spec = Spec("sleep", {10});
      spec.set_delivery(delivery);
      const StreamResult r = SubmitAll(*stub_, {spec});
      EXPECT_TRUE(r.status.ok()) << r.status.error_message();
      EXPECT_FALSE(r.events.empty());
      if (r.events.empty()) return least;
      EXPECT_EQ(r.events.back().type(), v1::EVENT_TYPE_SUCCEEDED);
      least = std::min(least, commits() - before);
      if (least <= (delivery == v1::DELIVERY_AT_MOST_ONCE ? 2u : 1u)) break;
    }
    return least;
  };
  // Ids reserved: a commit of its own.
  ASSERT_TRUE(SubmitAll(*stub_, {Spec("sleep", {1})}).status.ok());
  EXPECT_EQ(fewest(v1::DELIVERY_AT_LEAST_ONCE), 1u);
  EXPECT_EQ(fewest(v1::DELIVERY_AT_MOST_ONCE), 2u);
}

// What a commit costs is the pages it appends to the journal's WAL (one
// write and one fdatasync for all of them): a short at-least-once job's
// one commit changes its row's page and nothing else, as event sequences
// and job ids are reserved a block ahead rather than written with each
// commit.
TEST_F(DurabilityTest, AShortJobsCommitAppendsItsRowsPageAlone) {
  StartDaemon({"--journal-linger", "100ms"});
  auto run = [&] {
    v1::JobSpec spec = Spec("sleep", {1});
    spec.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
    const StreamResult r = SubmitAll(*stub_, {spec});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_FALSE(r.events.empty());
    EXPECT_EQ(r.events.back().type(), v1::EVENT_TYPE_SUCCEEDED);
  };
  run();  // Ids and sequences reserved: a commit of their own.
  const std::string wal = state_ + "/jobd.db-wal";
  // The WAL's header (32 bytes) gives its page size, big-endian at byte 8;
  // a frame is a page and its 24-byte header.
  std::ifstream in(wal, std::ios::binary);
  unsigned char header[12] = {};
  ASSERT_TRUE(in.read(reinterpret_cast<char*>(header), sizeof header)) << wal;
  const uint64_t page = uint64_t{header[8]} << 24 | header[9] << 16 |
                        header[10] << 8 | header[11];
  ASSERT_GE(page, 512u);
  const uint64_t before = std::filesystem::file_size(wal);
  constexpr int kJobs = 10;
  for (int i = 0; i < kJobs; ++i) run();
  const uint64_t frames =
      (std::filesystem::file_size(wal) - before) / (page + 24);
  // Each job's commit: its row's page. A leaf that fills on the way splits
  // once (a new leaf, its parent, a pointer-map page); a meta page written
  // with every commit would double it.
  EXPECT_GE(frames, static_cast<uint64_t>(kJobs));
  EXPECT_LE(frames, static_cast<uint64_t>(kJobs + 4));
}

TEST_F(DurabilityTest, KillNineLosesOnlyTheJobsThatMayHaveBegun) {
  const std::vector<std::string> flags = {"--exec-allow", "/bin/sh",
                                          "--reactor-max-jobs", "2"};
  StartDaemon(flags);
  // Two rounds of short jobs first (slots that freed with work waiting),
  // then long ones, at most once: two run, four wait for a slot.
  std::vector<v1::JobSpec> specs(4, StampThenSleep(0.2));
  for (int i = 0; i < 6; ++i) specs.push_back(StampThenSleep(4));
  std::map<uint64_t, std::string> ids;
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(60));
    auto stream = stub_->Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
    int long_started = 0;
    v1::SubmitResponse resp;
    while (long_started < 2 && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) {
          ids[e.client_tag()] = e.job_id();
        }
        long_started +=
            e.type() == v1::EVENT_TYPE_STARTED && e.client_tag() > 4;
      }
    }
    ASSERT_EQ(long_started, 2);
    // Let the adaptive claims settle for a few commits, as a crash could
    // come at any time.
    absl::SleepFor(absl::Milliseconds(300));
    ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
    ctx.TryCancel();
  }
  StartDaemon(flags);
  int lost = 0;
  for (uint64_t tag = 5; tag <= 10; ++tag) {
    absl::StatusOr<v1::Job> job = GetJob(ids[tag]);
    ASSERT_TRUE(job.ok()) << job.status();
    if (job->state() == v1::JOB_STATE_FAILED) {
      EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
      ++lost;
    } else {  // Queued at the kill: runs now.
      EXPECT_THAT(job->state(),
                  ::testing::AnyOf(v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING))
          << tag;
    }
  }
  EXPECT_EQ(lost, 2) << "only the two running jobs may have begun";
}

// How a submit of one job went: its first answer.
struct FirstAnswer {
  v1::EventType type = v1::EVENT_TYPE_UNSPECIFIED;  // ACCEPTED, REJECTED...
  v1::JobError error;                               // REJECTED.
  grpc::Status status;  // Of the stream, if it ended without an event.
  absl::Duration took;
};

// Submits a long job (it stays live, so it cannot be forgotten to make
// room) with a 100 KiB payload on its own stream, and reads its first
// answer within `limit`; the job goes on without the stream.
FirstAnswer SubmitBig(v1::JobService::Stub& stub, absl::Duration limit) {
  v1::JobSpec big = Spec("sleep", {60000});
  big.set_executor(v1::EXECUTOR_REACTOR);
  big.set_payload(std::string(100 << 10, 'x'));
  grpc::ClientContext ctx;
  Deadline(ctx, limit);
  FirstAnswer answer;
  const absl::Time t0 = absl::Now();
  auto stream = stub.Submit(&ctx);
  v1::SubmitResponse resp;
  if (stream->Write(testing::SubmitRequestOf({big})) && stream->Read(&resp) &&
      resp.events_size() > 0) {
    answer.type = resp.events(0).type();
    answer.error = resp.events(0).error();
  } else {
    stream->WritesDone();
    answer.status = stream->Finish();
  }
  answer.took = absl::Now() - t0;
  ctx.TryCancel();
  return answer;
}

TEST_F(DurabilityTest, AJournalOutageTakesNothingBackAndNoCallHangs) {
  StartDaemon({"--journal-max-bytes", "256K", "--thread-workers", "2",
               "--journal-outage-grace", "300ms"});
  // A job running when the journal fills up, and ending during the outage.
  v1::JobSpec running = Spec("sleep", {1500});
  running.set_executor(v1::EXECUTOR_THREAD);
  grpc::ClientContext run_ctx;
  Deadline(run_ctx, absl::Seconds(60));
  auto run_stream = stub_->Submit(&run_ctx);
  ASSERT_TRUE(run_stream->Write(testing::SubmitRequestOf({running})));
  std::string id;
  {
    v1::SubmitResponse resp;
    bool started = false;
    while (!started && run_stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) id = e.job_id();
        started |= e.type() == v1::EVENT_TYPE_STARTED;
      }
    }
    ASSERT_TRUE(started);
  }
  // Fill the journal. A stream whose job cannot be recorded ends at once,
  // UNAVAILABLE; once the journal is known full, jobs are REJECTED.
  bool refused = false;
  for (int i = 0; i < 10 && !refused; ++i) {
    const FirstAnswer a = SubmitBig(*stub_, absl::Seconds(20));
    EXPECT_LT(a.took, absl::Seconds(3)) << "a Submit hung";
    if (a.type == v1::EVENT_TYPE_REJECTED) {
      refused = true;
      EXPECT_EQ(a.error.code(), grpc::StatusCode::UNAVAILABLE);
    } else if (a.type != v1::EVENT_TYPE_ACCEPTED) {
      EXPECT_EQ(a.status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << a.status.error_message();
      EXPECT_THAT(a.status.error_message(), HasSubstr("journal"));
    }
  }
  ASSERT_TRUE(refused);
  // The running job ends (in memory) during the outage: the thread pool
  // goes idle (the jobs accepted meanwhile cannot start: their claims are
  // not durable).
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        grpc::ClientContext ctx;
        Deadline(ctx, absl::Seconds(5));
        v1::GetStatsResponse stats;
        if (!stub_->GetStats(&ctx, {}, &stats).ok()) return false;
        EXPECT_FALSE(stats.journal().healthy());
        for (const v1::ExecutorStats& e : stats.executors()) {
          if (e.executor() == v1::EXECUTOR_THREAD) return e.busy() == 0;
        }
        return false;
      },
      absl::Seconds(10)));
  // Not shown SUCCEEDED (a crash now would take it back), and no call
  // waits out the outage: each answers UNAVAILABLE naming the journal.
  auto expect_prompt_unavailable = [](const grpc::Status& s, absl::Time t0,
                                      const char* what) {
    EXPECT_LT(absl::Now() - t0, absl::Seconds(2)) << what << " hung";
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << what << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("journal")) << what;
  };
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(20));
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    const absl::Time t0 = absl::Now();
    expect_prompt_unavailable(stub_->GetJob(&ctx, req, &job), t0, "GetJob");
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(20));
    v1::GetJobRequest req;
    req.set_job_id(id);
    req.mutable_wait()->set_seconds(10);
    v1::Job job;
    const absl::Time t0 = absl::Now();
    expect_prompt_unavailable(stub_->GetJob(&ctx, req, &job), t0,
                              "GetJob(wait)");
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(20));
    v1::ListJobsResponse page;
    const absl::Time t0 = absl::Now();
    expect_prompt_unavailable(stub_->ListJobs(&ctx, {}, &page), t0, "ListJobs");
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(20));
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::CancelJobResponse resp;
    const absl::Time t0 = absl::Now();
    expect_prompt_unavailable(stub_->CancelJob(&ctx, req, &resp), t0,
                              "CancelJob");
  }
  {
    // The submitter's stream does not hang either.
    v1::SubmitResponse resp;
    const absl::Time t0 = absl::Now();
    run_stream->WritesDone();
    while (run_stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        EXPECT_NE(e.type(), v1::EVENT_TYPE_SUCCEEDED);
      }
    }
    expect_prompt_unavailable(run_stream->Finish(), t0, "the Submit stream");
  }
  // A crash now: at the restart the job reads as the journal held it. It
  // had begun: at most once, it is lost; never the SUCCEEDED nobody saw.
  ASSERT_TRUE(daemon_->Stop(SIGKILL, absl::Seconds(10)).ok());
  StartDaemon({"--thread-workers", "2"});
  absl::StatusOr<v1::Job> job = GetJob(id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->error().reason(), v1::ERROR_REASON_LOST_ON_RESTART);
}

}  // namespace
}  // namespace jobd
