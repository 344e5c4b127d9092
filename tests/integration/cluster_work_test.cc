// Cluster mode's work sharing with real jobd daemons on one real
// redis-server (tests/redis/redis_server.h), on Unix sockets: jobs a
// saturated node cannot start run on another and their ends reach the
// submitter's client; jobs shared together travel packed in stream
// entries and each runs once; a node stopped gracefully hands back what it
// took and has not begun; a node killed with SIGKILL while it runs shared
// jobs: its at-least-once jobs run again elsewhere, its at-most-once ones
// end FAILED (never twice), every job has exactly one end at its
// submitter; a frozen node whose jobs were reclaimed cannot complete them
// when it thaws. The jobs are the testing task `ledger`, which appends a
// line to a file as it begins: the ledger counts the runs.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::EndsByLine;
using testing::JobsOn;
using testing::Ledger;
using testing::ReadLedger;
using testing::StartNodes;

// Cancels job `id` at `stub` (a test's blocker, or a job that must leave
// its pack).
void Cancel(v1::JobService::Stub& stub, const std::string& id) {
  const grpc::Status status = testing::CancelJob(stub, id);
  ASSERT_TRUE(status.ok()) << id << ": " << status.error_message();
}

// Node a (one thread) busy with a minute-long `blocker`, then `specs`
// submitted there in one message (`load`), waited for until all are
// published: the jobs of a pack test.
void PublishWhileBusy(testing::TestCluster& c,
                      const std::vector<v1::JobSpec>& specs,
                      std::unique_ptr<testing::LoadStream>& blocker,
                      std::unique_ptr<testing::LoadStream>& load) {
  v1::JobService::Stub& stub_a = c.stub(0);
  blocker = std::make_unique<testing::LoadStream>(
      stub_a, std::vector<v1::JobSpec>{Ledger(c.ledger(), "blocker", 60000)},
      1);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return JobsOn(stub_a, {v1::JOB_STATE_RUNNING}).size() == 1; },
      absl::Seconds(10)));
  load = std::make_unique<testing::LoadStream>(stub_a, specs, specs.size());
  ASSERT_TRUE(testing::WaitFor(
      [&] { return testing::Work(stub_a).published() == specs.size(); },
      absl::Seconds(20)));
}

TEST(ClusterWorkTest, ASaturatedNodesJobsRunOnAnotherAndEndAtItsClient) {
  // a runs one thread job at a time; b has room.
  auto c = StartNodes("jobd-cluster-work", {{"node-a", 1}, {"node-b", 8}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 16; ++i) {
    specs.push_back(Ledger(ledger, "job-" + std::to_string(i), 300));
  }
  const absl::Time start = absl::Now();
  const testing::StreamResult r = testing::SubmitAll(stub_a, specs);
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;
    EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_SUCCEEDED)
        << line << ": " << events[0].error().message();
    EXPECT_EQ(events[0].result().value().string_value(), line);
  }
  // Each ran once; most of them on b (a alone would take 16 x 300 ms).
  const auto runs = ReadLedger(ledger);
  EXPECT_EQ(runs.size(), specs.size());
  for (const auto& [line, n] : runs) EXPECT_EQ(n, 1) << line;
  const std::vector<v1::Job> on_b = JobsOn(stub_b, {v1::JOB_STATE_SUCCEEDED});
  EXPECT_GE(on_b.size(), 8u);
  EXPECT_LT(took, absl::Seconds(16 * 0.3)) << took;
  // a holds every job, ended, as its client sees them, and lists the
  // shared ones it took back itself once its thread was free (foreign
  // jobs there): 15 were shared, b ran the others.
  EXPECT_EQ(JobsOn(stub_a, {v1::JOB_STATE_SUCCEEDED}).size(),
            specs.size() + (specs.size() - 1 - on_b.size()));
  const v1::ClusterWork wa = testing::GetStats(stub_a).cluster().work();
  EXPECT_EQ(wa.published(), specs.size() - 1);
  EXPECT_EQ(wa.results(), specs.size() - 1);
  EXPECT_EQ(wa.shared(), 0u);
  const v1::ClusterWork wb = testing::GetStats(stub_b).cluster().work();
  EXPECT_EQ(wb.completed(), on_b.size());
  // jobctl stats shows work sharing.
  auto shown = testing::RunCommand({testing::JobctlPath(), "--address",
                                    (*c)->daemon(0).unix_address(), "stats"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_THAT(shown.out, ::testing::HasSubstr("work:"));
  EXPECT_THAT(shown.out, ::testing::HasSubstr(
                             "published " + std::to_string(specs.size() - 1)));
}

// A shared job's run is seen from its submitter: its STARTED and progress
// reach the submitter's client while it runs on another node, and the
// submitter shows it RUNNING meanwhile; a shared job that ends sooner than
// a note goes out gets its STARTED from its end; one that began on
// another node does not expire by its start deadline. Every job's events come
// in order: ACCEPTED, STARTED, PROGRESS (the ledger task reports 0.5
// halfway), its end.
TEST(ClusterWorkTest, ASharedJobsStartAndProgressReachItsSubmitter) {
  auto c = StartNodes("jobd-cluster-work", {{"node-a", 1}, {"node-b", 8}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  // a runs the first; the others would queue there: shared, b runs them.
  std::vector<v1::JobSpec> specs;
  // A start deadline well within their run: a job that began on b has
  // started, though not at a, and does not expire there.
  for (int i = 0; i < 4; ++i) {
    specs.push_back(Ledger(ledger, "long-" + std::to_string(i), 1500));
    specs.back().mutable_start_deadline()->set_nanos(800000000);
  }
  for (int i = 0; i < 3; ++i) {
    specs.push_back(Ledger(ledger, "quick-" + std::to_string(i), 0));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  // While they run, a shows its four long jobs RUNNING, each with its
  // start time (three of them run on b).
  std::vector<v1::Job> running;
  for (int i = 0; i < 100 && running.size() < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    running = JobsOn(stub_a, {v1::JOB_STATE_RUNNING});
  }
  submit.join();
  ASSERT_EQ(running.size(), 4u);
  for (const v1::Job& job : running) {
    EXPECT_TRUE(job.has_start_time()) << job.id();
    EXPECT_THAT(job.spec().args(1).string_value(),
                ::testing::StartsWith("long-"));
  }
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto ms = [](const google::protobuf::Timestamp& t) {
    return t.seconds() * 1000 + t.nanos() / 1000000;
  };
  std::map<uint64_t, std::vector<v1::JobEvent>> by_tag;
  for (const v1::JobEvent& e : r.events) by_tag[e.client_tag()].push_back(e);
  ASSERT_EQ(by_tag.size(), specs.size());
  for (const auto& [tag, events] : by_tag) {
    const std::string line = specs[tag - 1].args(1).string_value();
    const bool long_job = absl::StartsWith(line, "long-");
    std::vector<v1::EventType> types;
    for (const v1::JobEvent& e : events) types.push_back(e.type());
    std::vector<v1::EventType> want = {v1::EVENT_TYPE_ACCEPTED,
                                       v1::EVENT_TYPE_STARTED};
    if (long_job) want.push_back(v1::EVENT_TYPE_PROGRESS);
    want.push_back(v1::EVENT_TYPE_SUCCEEDED);
    ASSERT_EQ(types, want) << line;
    if (!long_job) continue;
    // Seen as they happened: the start and the progress well before the
    // end, not with it.
    EXPECT_LT(ms(events[1].time()) + 500, ms(events[3].time())) << line;
    EXPECT_LT(ms(events[2].time()) + 300, ms(events[3].time())) << line;
    EXPECT_DOUBLE_EQ(events[2].progress().fraction(), 0.5) << line;
    EXPECT_EQ(events[2].progress().message(), "halfway") << line;
  }
  // b ran the shared ones: three long, three quick.
  const v1::ClusterWork wb = testing::GetStats((*c)->stub(1)).cluster().work();
  EXPECT_EQ(wb.completed(), 6u);
}

// Jobs shared at once travel packed: 120 jobs a saturated node shares
// together make few stream entries (each of at most --cluster-pack jobs;
// with 1, one per job); a job cancelled while its pack waits leaves it; a
// node that joins later takes the packs and runs every other job once,
// and each ends once at the submitter's client.
TEST(ClusterWorkTest, JobsSharedTogetherTravelPackedAndRunOnce) {
  for (const int pack : {8, 1}) {
    SCOPED_TRACE("--cluster-pack " + std::to_string(pack));
    auto c =
        StartNodes("jobd-cluster-pack",
                   {{"node-a", 1, {"--cluster-pack", std::to_string(pack)}}});
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string& ledger = (*c)->ledger();
    v1::JobService::Stub& stub_a = (*c)->stub(0);
    // a's one thread is held: what comes next is shared, and nobody takes
    // it until b joins.
    testing::LoadStream blocker(stub_a, {Ledger(ledger, "blocker", 60000)}, 1);
    std::string blocker_id;
    ASSERT_TRUE(testing::WaitFor(
        [&] {
          for (const v1::Job& j : JobsOn(stub_a, {v1::JOB_STATE_RUNNING})) {
            blocker_id = j.id();
          }
          return !blocker_id.empty();
        },
        absl::Seconds(10)));
    constexpr int kJobs = 120;
    std::vector<v1::JobSpec> specs;
    for (int i = 0; i < kJobs; ++i) {
      specs.push_back(Ledger(ledger, "job-" + std::to_string(i), 0));
    }
    testing::LoadStream load(stub_a, specs, kJobs);
    ASSERT_TRUE(testing::WaitFor(
        [&] { return testing::Work(stub_a).published() == kJobs; },
        absl::Seconds(20)))
        << testing::Work(stub_a).DebugString();

    // What Redis holds: every job once, in entries of at most `pack`.
    auto redis = testing::RedisClient::Connect((*c)->redis().socket_path());
    ASSERT_TRUE(redis.ok()) << redis.status();
    int entries = 0, jobs = 0, largest = 0;
    for (int p = 0; p < 4; ++p) {
      auto r = (*redis)->Query(
          {"XRANGE", "{jobd:p" + std::to_string(p) + "}:jobs", "-", "+"});
      ASSERT_TRUE(r.ok()) << r.status();
      for (const testing::RedisReply& e : r->elements) {
        ++entries;
        const auto& f = e.elements[1].elements;
        for (size_t i = 0; i + 1 < f.size(); i += 2) {
          if (f[i].str != "n") continue;
          const int n = std::stoi(f[i + 1].str);
          EXPECT_GE(n, 1);
          EXPECT_LE(n, pack);
          jobs += n;
          largest = std::max(largest, n);
        }
      }
    }
    EXPECT_EQ(jobs, kJobs);
    if (pack == 1) {
      EXPECT_EQ(entries, kJobs);
    } else {
      // How many travel together depends on how the jobs were handed over
      // (16 entries on a quiet machine, 72 under a parallel build): some
      // did.
      EXPECT_LT(entries, kJobs);
      EXPECT_GT(largest, 1);
    }

    // One job cancelled while its pack waits: withdrawn from it.
    const std::vector<testing::LoadStream::Item> accepted = [&] {
      std::vector<testing::LoadStream::Item> out;
      testing::WaitFor(
          [&] {
            out = load.items();
            return !out[7].job_id.empty();
          },
          absl::Seconds(10));
      return out;
    }();
    Cancel(stub_a, accepted[7].job_id);

    auto b = (*c)->Add({"node-b", 4}, 2);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE(load.Wait(absl::Seconds(60))) << load.ended();
    const std::vector<testing::LoadStream::Item> items = load.items();
    for (int i = 0; i < kJobs; ++i) {
      const auto& item = items[static_cast<size_t>(i)];
      ASSERT_EQ(item.ends.size(), 1u) << i;
      EXPECT_EQ(item.ends[0].type(),
                i == 7 ? v1::EVENT_TYPE_CANCELLED : v1::EVENT_TYPE_SUCCEEDED)
          << i << ": " << item.ends[0].error().message();
    }
    const auto runs = ReadLedger(ledger);
    for (int i = 0; i < kJobs; ++i) {
      const std::string line = "job-" + std::to_string(i);
      EXPECT_EQ(runs.count(line) ? runs.at(line) : 0, i == 7 ? 0 : 1) << line;
    }
    // Every entry completed and deleted, with its done set.
    for (int p = 0; p < 4; ++p) {
      auto len =
          (*redis)->Query({"XLEN", "{jobd:p" + std::to_string(p) + "}:jobs"});
      ASSERT_TRUE(len.ok());
      EXPECT_EQ(len->integer, 0) << p;
    }
    EXPECT_THAT(testing::KeysOf(**redis, "{jobd:p*}:done:*"),
                ::testing::IsEmpty());
    Cancel(stub_a, blocker_id);
    ASSERT_TRUE(blocker.Wait(absl::Seconds(10)));
  }
}

// A node stopped gracefully (SIGTERM) hands back at once the other nodes'
// jobs it took and has not begun (packs are taken whole: the rest queue
// there), at-most-once ones included: another node runs each once, none
// is reclaimed or lost. What it runs past its shutdown grace goes back too
// if at least once (it runs again elsewhere), else ends CANCELLED there.
TEST(ClusterWorkTest, AStoppingNodeHandsBackWhatItHasNotBegun) {
  // One partition, packs of up to 8: the jobs of one Submit message
  // travel in few entries.
  const std::vector<std::string> flags = {"--cluster-partitions", "1",
                                          "--cluster-pack", "8"};
  auto c = StartNodes("jobd-cluster-hand-back", {{"node-a", 1, flags}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  constexpr int kJobs = 8;
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < kJobs; ++i) {
    specs.push_back(Ledger(
        ledger, "job-" + std::to_string(i), 4000,
        i % 2 == 0 ? v1::DELIVERY_AT_LEAST_ONCE : v1::DELIVERY_AT_MOST_ONCE));
  }
  std::unique_ptr<testing::LoadStream> blocker, load;
  ASSERT_NO_FATAL_FAILURE(PublishWhileBusy(**c, specs, blocker, load));

  // b (two threads) takes packs: two jobs run, the rest of its packs
  // queue there.
  std::vector<std::string> b_flags = flags;
  b_flags.insert(b_flags.end(), {"--shutdown-grace", "500ms"});
  auto b = (*c)->Add({"node-b", 2, b_flags}, 2);
  ASSERT_TRUE(b.ok()) << b.status();
  v1::JobService::Stub& stub_b = (*c)->stub(*b);
  std::vector<std::string> running, queued;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        running.clear();
        queued.clear();
        for (const v1::Job& j : JobsOn(stub_b, {})) {
          const std::string line = j.spec().args(1).string_value();
          if (j.state() == v1::JOB_STATE_RUNNING) running.push_back(line);
          if (j.state() == v1::JOB_STATE_QUEUED) queued.push_back(line);
        }
        return running.size() == 2 && !queued.empty();
      },
      absl::Seconds(15)))
      << running.size() << " running, " << queued.size() << " queued on b";
  auto c_node = (*c)->Add({"node-c", 8, flags}, 3);
  ASSERT_TRUE(c_node.ok()) << c_node.status();
  ASSERT_TRUE((*c)->daemon(*b).Stop(SIGTERM, absl::Seconds(20)).ok());
  ASSERT_TRUE(load->Wait(absl::Seconds(60)))
      << testing::Unended(*load, stub_a, (*c)->redis(), "node-a");

  const auto runs = ReadLedger(ledger);
  const std::vector<testing::LoadStream::Item> items = load->items();
  for (int i = 0; i < kJobs; ++i) {
    const std::string line = "job-" + std::to_string(i);
    const bool least = i % 2 == 0;
    const bool was_running =
        std::find(running.begin(), running.end(), line) != running.end();
    const auto& ends = items[static_cast<size_t>(i)].ends;
    ASSERT_EQ(ends.size(), 1u) << line;
    const int ran = runs.count(line) ? runs.at(line) : 0;
    if (was_running && !least) {
      // Begun at b, at most once, cut short by its stop.
      EXPECT_EQ(ends[0].type(), v1::EVENT_TYPE_CANCELLED) << line;
      EXPECT_EQ(ends[0].error().reason(), v1::ERROR_REASON_SHUTDOWN) << line;
      EXPECT_EQ(ran, 1) << line;
      continue;
    }
    EXPECT_EQ(ends[0].type(), v1::EVENT_TYPE_SUCCEEDED)
        << line << ": " << ends[0].error().message();
    EXPECT_EQ(ran, was_running ? 2 : 1) << line;
  }
  // Nothing waited for b's lease to run out: no node reclaimed anything.
  EXPECT_EQ(testing::Work(stub_a).reclaimed(), 0u);
  EXPECT_EQ(testing::Work((*c)->stub(*c_node)).reclaimed(), 0u);
  EXPECT_EQ(testing::Work(stub_a).lost(), 0u);
  Cancel(stub_a, JobsOn(stub_a, {v1::JOB_STATE_RUNNING}).at(0).id());
  ASSERT_TRUE(blocker->Wait(absl::Seconds(10)));
}

// A node killed while it holds a pack: the at-most-once jobs of it that
// had begun there fail LOST_ON_RESTART (they may have run); those still
// waiting there for a slot were never marked begun, and run once
// elsewhere.
TEST(ClusterWorkTest, AKilledNodesPackedJobsThatHadNotBegunRunOnceElsewhere) {
  const std::vector<std::string> flags = {"--cluster-partitions", "1",
                                          "--cluster-pack", "8"};
  auto c = StartNodes("jobd-cluster-pack-kill", {{"node-a", 1, flags}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  constexpr int kJobs = 8;
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < kJobs; ++i) {
    specs.push_back(Ledger(ledger, "job-" + std::to_string(i), 3000,
                           v1::DELIVERY_AT_MOST_ONCE));
  }
  std::unique_ptr<testing::LoadStream> blocker, load;
  ASSERT_NO_FATAL_FAILURE(PublishWhileBusy(**c, specs, blocker, load));

  // b (two threads) takes the pack: two jobs begin, six wait there.
  auto b = (*c)->Add({"node-b", 2, flags}, 2);
  ASSERT_TRUE(b.ok()) << b.status();
  v1::JobService::Stub& stub_b = (*c)->stub(*b);
  std::vector<std::string> running;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        running.clear();
        for (const v1::Job& j : JobsOn(stub_b, {v1::JOB_STATE_RUNNING})) {
          running.push_back(j.spec().args(1).string_value());
        }
        return running.size() == 2;
      },
      absl::Seconds(15)))
      << running.size() << " running on b";
  EXPECT_EQ(JobsOn(stub_b, {}).size(), 2u);  // The rest are not admitted.
  auto c_node = (*c)->Add({"node-c", 8, flags}, 3);
  ASSERT_TRUE(c_node.ok()) << c_node.status();
  ASSERT_TRUE((*c)->daemon(*b).Stop(SIGKILL, absl::Seconds(10)).ok());
  ASSERT_TRUE(load->Wait(absl::Seconds(60)))
      << testing::Unended(*load, stub_a, (*c)->redis(), "node-a");

  const auto runs = ReadLedger(ledger);
  const std::vector<testing::LoadStream::Item> items = load->items();
  for (int i = 0; i < kJobs; ++i) {
    const std::string line = "job-" + std::to_string(i);
    const auto& ends = items[static_cast<size_t>(i)].ends;
    ASSERT_EQ(ends.size(), 1u) << line;
    EXPECT_EQ(runs.count(line) ? runs.at(line) : 0, 1) << line;  // Once.
    if (std::find(running.begin(), running.end(), line) != running.end()) {
      EXPECT_EQ(ends[0].type(), v1::EVENT_TYPE_FAILED) << line;
      EXPECT_EQ(ends[0].error().reason(), v1::ERROR_REASON_LOST_ON_RESTART)
          << line;
    } else {
      EXPECT_EQ(ends[0].type(), v1::EVENT_TYPE_SUCCEEDED)
          << line << ": " << ends[0].error().message();
    }
  }
  EXPECT_EQ(
      testing::Work(stub_a).lost() + testing::Work((*c)->stub(*c_node)).lost(),
      2u);
  Cancel(stub_a, JobsOn(stub_a, {v1::JOB_STATE_RUNNING}).at(0).id());
  ASSERT_TRUE(blocker->Wait(absl::Seconds(10)));
}

TEST(ClusterWorkTest, AKilledNodesJobsRunAgainOrFailByTheirDeliveryPolicy) {
  auto cluster =
      StartNodes("jobd-cluster-kill", {{"node-a", 1}, {"node-b", 16}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string& ledger = (*cluster)->ledger();
  v1::JobService::Stub& stub_a = (*cluster)->stub(0);
  v1::JobService::Stub& stub_b = (*cluster)->stub(1);

  // a's one thread busy; the rest goes to b, which holds them all.
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 1500)};
  for (int i = 0; i < 6; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_LEAST_ONCE));
    specs.push_back(Ledger(ledger, "most-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_MOST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  const bool all_on_b = testing::WaitFor(
      [&] { return JobsOn(stub_b, {v1::JOB_STATE_RUNNING}).size() == 12; },
      absl::Seconds(15));
  if (!all_on_b) {
    for (const v1::Job& j : JobsOn(stub_b, {})) {
      std::cerr << "b: " << j.id() << " " << v1::JobState_Name(j.state())
                << "\n";
    }
    std::cerr << testing::GetStats(stub_a).cluster().work().DebugString();
    std::ifstream in(ledger);
    std::string l;
    while (std::getline(in, l)) std::cerr << "ledger: " << l << "\n";
    for (const v1::Job& j : JobsOn(stub_a, {})) {
      std::cerr << "a: " << j.id() << " " << v1::JobState_Name(j.state()) << " "
                << j.spec().args(1).string_value() << "\n";
    }
  }
  // c joins, then b dies holding 12 running jobs.
  absl::StatusOr<size_t> c = (*cluster)->Add({"node-c", 16}, 3);
  EXPECT_TRUE((*cluster)->daemon(1).Stop(SIGKILL, absl::Seconds(10)).ok());
  submit.join();
  ASSERT_TRUE(all_on_b) << "ledger: " << ReadLedger(ledger).size();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();

  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  const auto runs = ReadLedger(ledger);
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;  // Exactly one end each.
    const v1::JobEvent& e = events[0];
    if (line.starts_with("least-")) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << line;
      EXPECT_EQ(runs.at(line), 2) << line;  // On b, then again.
    } else if (line.starts_with("most-")) {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED) << line;
      EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_LOST_ON_RESTART) << line;
      EXPECT_THAT(e.error().message(), ::testing::HasSubstr("at-most-once"));
      EXPECT_EQ(runs.at(line), 1) << line;  // Never twice.
    } else {
      EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << line;
      EXPECT_EQ(runs.at(line), 1) << line;
    }
  }
  const v1::ClusterStats sa = testing::GetStats(stub_a).cluster();
  const v1::ClusterStats sc = testing::GetStats((*cluster)->stub(*c)).cluster();
  EXPECT_EQ(sa.work().reclaimed() + sc.work().reclaimed(), 12u);
  EXPECT_EQ(sa.work().lost() + sc.work().lost(), 6u);
  EXPECT_EQ(sa.work().results(), 13u - 1u);  // The blocker ran at a.
}

TEST(ClusterWorkTest, AFrozenNodeCannotCompleteWhatWasReclaimedFromIt) {
  auto c = StartNodes("jobd-cluster-stale", {{"node-a", 1}, {"node-b", 8}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);

  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 1000)};
  for (int i = 0; i < 4; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 1500,
                           v1::DELIVERY_AT_LEAST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  const bool on_b = testing::WaitFor(
      [&] { return JobsOn(stub_b, {v1::JOB_STATE_RUNNING}).size() == 4; },
      absl::Seconds(15));
  // b freezes (its lease and claims lapse); a, idle again, reclaims and
  // runs its jobs; b thaws after they ended at a.
  ::kill((*c)->daemon(1).pid(), SIGSTOP);
  const bool ended = testing::WaitFor(
      [&] { return testing::GetStats(stub_a).cluster().work().results() == 4; },
      absl::Seconds(20));
  ::kill((*c)->daemon(1).pid(), SIGCONT);
  submit.join();
  ASSERT_TRUE(on_b);
  ASSERT_TRUE(ended);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  for (const auto& [line, events] : ends) {
    ASSERT_EQ(events.size(), 1u) << line;
    EXPECT_EQ(events[0].type(), v1::EVENT_TYPE_SUCCEEDED) << line;
  }
  // b, thawed, finds its claims gone: what it completes is refused, what
  // it still runs is stopped. Nothing more reaches a.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const v1::ClusterWork w = testing::GetStats(stub_b).cluster().work();
        return w.refused() + w.claims_lost() == 4;
      },
      absl::Seconds(10)))
      << testing::GetStats(stub_b).cluster().work().DebugString();
  EXPECT_EQ(testing::GetStats(stub_b).cluster().work().completed(), 0u);
  EXPECT_EQ(testing::GetStats(stub_a).cluster().work().results(), 4u);
}

// The submitter is killed after it shared its jobs (no other node is up
// yet): another node runs them while it is down, and once it is back (the
// same journal) each of its jobs has its one end, and none ran twice.
TEST(ClusterWorkTest, ASubmitterKilledAfterSharingFindsItsJobsEndedAtRestart) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  testing::TempDir dir("jobd-cluster-restart");
  const std::string ledger = dir.path() + "/ledger";
  const std::vector<std::string> args = testing::ClusterArgs(
      **redis, {"node-a", 1, {"--state-dir", dir.path() + "/a-state"}});
  auto a = testing::Daemon::Start(args);
  ASSERT_TRUE(a.ok()) << a.status();
  auto stub_a = (*a)->NewStub();
  ASSERT_TRUE(testing::Joined(*stub_a, 1));
  // One runs at a (2 s), the other five are shared: a single node takes
  // nothing while its one thread is busy.
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 2000)};
  for (int i = 0; i < 5; ++i) {
    specs.push_back(Ledger(ledger, "shared-" + std::to_string(i), 10));
  }
  std::vector<std::string> ids;
  {
    grpc::ClientContext ctx;
    testing::Deadline(ctx);
    auto stream = stub_a->Submit(&ctx);
    ASSERT_TRUE(stream->Write(testing::SubmitRequestOf(specs)));
    v1::SubmitResponse resp;
    while (ids.size() < specs.size() && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events()) {
        if (e.type() == v1::EVENT_TYPE_ACCEPTED) ids.push_back(e.job_id());
      }
    }
    ctx.TryCancel();
  }
  ASSERT_EQ(ids.size(), specs.size());
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return testing::GetStats(*stub_a).cluster().work().published() == 5;
      },
      absl::Seconds(10)));
  ASSERT_TRUE((*a)->Stop(SIGKILL, absl::Seconds(10)).ok());
  // b runs the five while a is down.
  auto b = testing::Daemon::Start(testing::ClusterArgs(**redis, {"node-b", 8}));
  ASSERT_TRUE(b.ok()) << b.status();
  auto stub_b = (*b)->NewStub();
  ASSERT_TRUE(testing::WaitFor(
      [&] { return JobsOn(*stub_b, {v1::JOB_STATE_SUCCEEDED}).size() == 5; },
      absl::Seconds(15)));
  // a again, on its journal: its shared jobs end with b's results.
  auto again = testing::Daemon::Start(args);
  ASSERT_TRUE(again.ok()) << again.status();
  stub_a = (*again)->NewStub();
  for (size_t i = 1; i < ids.size(); ++i) {
    grpc::ClientContext ctx;
    testing::Deadline(ctx, absl::Seconds(20));
    v1::GetJobRequest req;
    req.set_job_id(ids[i]);
    req.mutable_wait()->set_seconds(15);
    v1::Job job;
    ASSERT_TRUE(stub_a->GetJob(&ctx, req, &job).ok());
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << ids[i];
    EXPECT_EQ(job.result().value().string_value(),
              specs[i].args(1).string_value());
  }
  const auto runs = ReadLedger(ledger);
  for (size_t i = 1; i < specs.size(); ++i) {
    EXPECT_EQ(runs.at(specs[i].args(1).string_value()), 1);
  }
  EXPECT_EQ(testing::GetStats(*stub_a).cluster().work().results(), 5u);
}

// With --cluster-max-deliveries 1 a job taken over from a dead node (its
// second delivery) is dead-lettered: it ends FAILED DEAD_LETTER at its
// submitter, even at least once, and does not run again.
TEST(ClusterWorkTest, PastMaxDeliveriesAJobIsDeadLettered) {
  const std::vector<std::string> once = {"--cluster-max-deliveries", "1"};
  auto c = StartNodes("jobd-cluster-dead",
                      {{"node-a", 1, once}, {"node-b", 8, once}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string& ledger = (*c)->ledger();
  v1::JobService::Stub& stub_a = (*c)->stub(0);
  v1::JobService::Stub& stub_b = (*c)->stub(1);
  std::vector<v1::JobSpec> specs = {Ledger(ledger, "blocker", 500)};
  for (int i = 0; i < 2; ++i) {
    specs.push_back(Ledger(ledger, "least-" + std::to_string(i), 4000,
                           v1::DELIVERY_AT_LEAST_ONCE));
  }
  testing::StreamResult r;
  std::thread submit([&] { r = testing::SubmitAll(stub_a, specs); });
  const bool on_b = testing::WaitFor(
      [&] { return JobsOn(stub_b, {v1::JOB_STATE_RUNNING}).size() == 2; },
      absl::Seconds(15));
  EXPECT_TRUE((*c)->daemon(1).Stop(SIGKILL, absl::Seconds(10)).ok());
  submit.join();
  ASSERT_TRUE(on_b);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto ends = EndsByLine(r, specs);
  ASSERT_EQ(ends.size(), specs.size());
  const auto runs = ReadLedger(ledger);
  for (int i = 0; i < 2; ++i) {
    const std::string line = "least-" + std::to_string(i);
    ASSERT_EQ(ends.at(line).size(), 1u);
    EXPECT_EQ(ends.at(line)[0].type(), v1::EVENT_TYPE_FAILED);
    EXPECT_EQ(ends.at(line)[0].error().reason(), v1::ERROR_REASON_DEAD_LETTER);
    EXPECT_EQ(runs.at(line), 1);
  }
  EXPECT_EQ(testing::GetStats(stub_a).cluster().work().dead_lettered(), 2u);
}

}  // namespace
}  // namespace jobd
