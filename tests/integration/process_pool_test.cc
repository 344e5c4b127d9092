// Integration tests of the process pool through the real daemon: crash
// isolation (segfault, abort, exit, out of memory, corrupt frames), hard
// timeout and cancel, recycling, fork-server recovery, quarantine, chunks,
// AUTO routing, per-worker stats, shutdown with a wedged worker, and
// workers stopped by SIGSTOP (liveness pings).
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/daemon_harness.h"

namespace jobd {
namespace {

using testing::Daemon;
using testing::Deadline;
using ::testing::HasSubstr;
using testing::Spec;
using testing::StreamResult;
using testing::SubmitAll;
using testing::WaitFor;

// CPU time `pid` has used, in clock ticks (-1 if it cannot be read).
long CpuTicks(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return -1;
  char buf[1024];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // Then: state, and 11 more.
  long utime = -1, stime = -1;
  if (p == nullptr ||
      std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld",
                  &utime, &stime) != 2) {
    return -1;
  }
  return utime + stime;
}

v1::JobSpec Primes(double n) {
  return Spec("primes.count", {n}, v1::JOB_KIND_CPU_BOUND);
}

// The `crash` testing task: how to die, plus extra integer kwargs.
v1::JobSpec Crash(const std::string& how,
                  std::map<std::string, double> kwargs = {}) {
  v1::JobSpec s = Spec("crash", {}, v1::JOB_KIND_CPU_BOUND);
  auto& fields = *s.mutable_kwargs()->mutable_fields();
  fields["how"].set_string_value(how);
  for (const auto& [k, v] : kwargs) fields[k].set_number_value(v);
  return s;
}

class ProcessPoolTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args) {
    auto d = Daemon::Start(std::move(args));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }

  // Runs one job to its end; returns its terminal event.
  v1::JobEvent RunOne(const v1::JobSpec& spec) {
    return testing::RunOne(*stub_, spec);
  }

  v1::GetStatsResponse Stats() { return testing::GetStats(*stub_); }

  // True once every slot has a live worker process and every spare is
  // warmed up.
  bool PoolFull() {
    const v1::GetStatsResponse s = Stats();
    for (const v1::WorkerStats& w : s.process_pool().workers()) {
      if (w.pid() == 0) return false;
    }
    for (const v1::WorkerStats& w : s.process_pool().spares()) {
      if (w.state() != "spare") return false;
    }
    return s.process_pool().workers_size() > 0;
  }

  // Submits `specs`, expects every one but `bad` (0-based) to succeed, and
  // returns the bad one's terminal event.
  v1::JobEvent RunBatchWithOneBad(std::vector<v1::JobSpec> specs, size_t bad) {
    StreamResult r = SubmitAll(*stub_, specs);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    v1::JobEvent bad_event;
    size_t succeeded = 0;
    for (const v1::JobEvent& e : r.Terminal()) {
      if (e.client_tag() == bad + 1) {
        bad_event = e;
      } else {
        EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED)
            << e.client_tag() << ": " << e.error().message();
        succeeded += e.type() == v1::EVENT_TYPE_SUCCEEDED;
      }
    }
    EXPECT_EQ(succeeded, specs.size() - 1);
    return bad_event;
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

struct CrashCase {
  std::string how;
  std::string expected;  // In the error message.
  friend void PrintTo(const CrashCase& c, std::ostream* os) { *os << c.how; }
};

class CrashIsolationTest : public ProcessPoolTest,
                           public ::testing::WithParamInterface<CrashCase> {};

TEST_P(CrashIsolationTest, OneBadJobAmongHundredFailsAlone) {
  StartDaemon({"--process-workers", "2"});
  std::vector<v1::JobSpec> specs(100, Primes(20000));
  specs[50] = Crash(GetParam().how);
  const v1::JobEvent bad = RunBatchWithOneBad(specs, 50);
  EXPECT_EQ(bad.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(bad.error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(bad.error().message(), HasSubstr(GetParam().expected));
  EXPECT_EQ(bad.executor(), v1::EXECUTOR_PROCESS);
  // The pool is back to full size and the next batch runs clean.
  EXPECT_TRUE(WaitFor([&] { return PoolFull(); }));
  StreamResult next =
      SubmitAll(*stub_, std::vector<v1::JobSpec>(50, Primes(20000)));
  for (const v1::JobEvent& e : next.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
  }
  EXPECT_EQ(next.Terminal().size(), 50u);
  EXPECT_EQ(Stats().process_pool().retired().at("crashed"), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Ways, CrashIsolationTest,
    ::testing::Values(CrashCase{"segv", "killed by signal SIGSEGV"},
                      CrashCase{"abort", "killed by signal SIGABRT"},
                      CrashCase{"stack", "killed by signal SIGSEGV"},
                      CrashCase{"exit", "exited with code 3"}),
    [](const auto& info) { return info.param.how; });

TEST_F(ProcessPoolTest, ASpareWorkerTakesTheSlotOfACrashedOne) {
  StartDaemon({"--process-workers", "1"});
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));
  const v1::ProcessPoolStats before = Stats().process_pool();
  ASSERT_EQ(before.spares_size(), 1);
  const int spare = before.spares(0).pid();
  const v1::JobEvent bad = RunOne(Crash("segv"));
  EXPECT_THAT(bad.error().message(), HasSubstr("SIGSEGV"));
  // The spare serves the slot at once; a new spare is forked behind it.
  EXPECT_EQ(Stats().process_pool().workers(0).pid(), spare);
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_TRUE(WaitFor([&] { return PoolFull(); }));
  const v1::ProcessPoolStats after = Stats().process_pool();
  EXPECT_EQ(after.workers(0).pid(), spare);
  EXPECT_NE(after.spares(0).pid(), spare);
  EXPECT_EQ(after.workers_spawned(), 3u);
}

TEST_F(ProcessPoolTest, WithoutSparesACrashedWorkerIsForkedAgain) {
  StartDaemon({"--process-workers", "1", "--spare-workers", "0"});
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));
  EXPECT_EQ(Stats().process_pool().spares_size(), 0);
  std::vector<v1::JobSpec> specs(20, Primes(20000));
  specs[5] = Crash("abort");
  const v1::JobEvent bad = RunBatchWithOneBad(specs, 5);
  EXPECT_THAT(bad.error().message(), HasSubstr("SIGABRT"));
  EXPECT_EQ(Stats().process_pool().workers_spawned(), 2u);
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif

TEST_F(ProcessPoolTest, AllocationPastAddressSpaceLimitIsOutOfMemory) {
  if (kAddressSanitizer) {
    GTEST_SKIP() << "ASan reserves terabytes of address space: RLIMIT_AS "
                    "cannot be tested under it (the RSS limit test covers OOM)";
  }
  StartDaemon({"--process-workers", "2", "--worker-rlimit-as", "1G"});
  std::vector<v1::JobSpec> specs(100, Primes(20000));
  specs[30] = Crash("oom", {{"mb", 2048}});
  const v1::JobEvent bad = RunBatchWithOneBad(specs, 30);
  EXPECT_EQ(bad.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(bad.error().reason(), v1::ERROR_REASON_OUT_OF_MEMORY);
  EXPECT_THAT(bad.error().message(), HasSubstr("out of memory"));
  // The worker that saw bad_alloc is replaced, not trusted again.
  EXPECT_TRUE(WaitFor([&] {
    return Stats().process_pool().retired().contains("out_of_memory");
  }));
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(ProcessPoolTest, WorkerOverRssLimitIsKilledWhileRunning) {
  StartDaemon({"--process-workers", "2", "--max-worker-rss", "200M"});
  std::vector<v1::JobSpec> specs(40, Primes(20000));
  specs[10] = Crash("oom", {{"mb", 600}, {"hold_ms", 10000}});
  const absl::Time start = absl::Now();
  const v1::JobEvent bad = RunBatchWithOneBad(specs, 10);
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));  // Not after hold_ms.
  EXPECT_EQ(bad.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(bad.error().reason(), v1::ERROR_REASON_OUT_OF_MEMORY);
  EXPECT_THAT(bad.error().message(), HasSubstr("max_worker_rss"));
  EXPECT_EQ(Stats().process_pool().retired().at("max_worker_rss"), 1u);
}

TEST_F(ProcessPoolTest, TimeoutStopsABusyLoopAndReplacesTheWorker) {
  StartDaemon({"--process-workers", "1", "--cancel-grace", "100ms",
               "--kill-grace", "100ms"});
  const pid_t before = Stats().process_pool().workers(0).pid();
  v1::JobSpec hang = Crash("hang");
  hang.mutable_timeout()->set_nanos(200 * 1000 * 1000);
  const v1::JobEvent e = RunOne(hang);
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_TIMEOUT);
  // The one worker was stopped for real: the next job runs in a new one.
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
  const v1::GetStatsResponse s = Stats();
  EXPECT_NE(s.process_pool().workers(0).pid(), before);
  EXPECT_EQ(s.process_pool().retired().at("killed"), 1u);
}

TEST_F(ProcessPoolTest, CancelEscalatesToSigkillWhenSigtermIsIgnored) {
  StartDaemon({"--process-workers", "1", "--cancel-grace", "50ms",
               "--kill-grace", "100ms"});
  grpc::ClientContext ctx;
  Deadline(ctx);
  auto stream = stub_->Submit(&ctx);
  v1::SubmitRequest req;
  auto* item = req.add_items();
  item->set_client_tag(1);
  *item->mutable_spec() = Crash("hang_ignore_term");
  ASSERT_TRUE(stream->Write(req));
  std::string id;
  v1::SubmitResponse resp;
  while (id.empty() && stream->Read(&resp)) {
    for (const auto& ev : resp.events()) {
      if (ev.type() == v1::EVENT_TYPE_STARTED) id = ev.job_id();
    }
  }
  ASSERT_FALSE(id.empty());
  // STARTED can reach us a moment before the job is handed to the worker
  // (both wait for the same commit); a cancel in between would end it
  // before it ran, and no worker would need killing.
  pid_t worker = 0;
  ASSERT_TRUE(WaitFor([&] {
    const v1::WorkerStats w = Stats().process_pool().workers(0);
    worker = w.pid();
    return std::to_string(w.current_job_id()) == id;
  }));
  ASSERT_GT(worker, 0);
  {
    grpc::ClientContext cctx;
    Deadline(cctx);
    v1::CancelJobRequest creq;
    creq.set_job_id(id);
    v1::CancelJobResponse cresp;
    ASSERT_TRUE(stub_->CancelJob(&cctx, creq, &cresp).ok());
  }
  v1::JobEvent end;
  while (end.type() == v1::EVENT_TYPE_UNSPECIFIED && stream->Read(&resp)) {
    for (const auto& ev : resp.events()) {
      if (v1::EndsSubmitItem(ev.type())) end = ev;
    }
  }
  EXPECT_EQ(end.type(), v1::EVENT_TYPE_CANCELLED);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  // SIGTERM is ignored, so only SIGKILL (after 50 + 100 ms) ends it.
  EXPECT_TRUE(WaitFor([&] { return kill(worker, 0) != 0; }, absl::Seconds(5)));
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_EQ(Stats().process_pool().retired().at("killed"), 1u);
}

TEST_F(ProcessPoolTest, WorkersAreRecycledAfterMaxJobs) {
  StartDaemon({"--process-workers", "1", "--max-jobs-per-worker", "5"});
  StreamResult r =
      SubmitAll(*stub_, std::vector<v1::JobSpec>(12, Primes(1000)));
  ASSERT_EQ(r.Terminal().size(), 12u);
  for (const v1::JobEvent& e : r.Terminal()) {
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
  }
  // The worker and the spare, then a new spare after each retirement.
  EXPECT_TRUE(WaitFor([&] {
    const v1::ProcessPoolStats p = Stats().process_pool();
    return p.retired().contains("max_jobs_per_worker") &&
           p.retired().at("max_jobs_per_worker") == 2 &&
           p.workers_spawned() == 4;
  })) << Stats().DebugString();
}

TEST_F(ProcessPoolTest, RecoversFromAKilledForkServer) {
  StartDaemon({"--process-workers", "2"});
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));  // Spare included.
  const pid_t old_server = Stats().process_pool().fork_server_pid();
  ASSERT_GT(old_server, 0);
  ASSERT_EQ(kill(old_server, SIGKILL), 0);
  EXPECT_TRUE(WaitFor([&] {
    const v1::ProcessPoolStats p = Stats().process_pool();
    return p.fork_server_restarts() == 1 && p.fork_server_pid() != 0 &&
           p.fork_server_pid() != old_server && PoolFull();
  })) << Stats().DebugString();
  // Later CPU jobs succeed, and a crash is still isolated and explained by
  // the new fork server.
  std::vector<v1::JobSpec> specs(21, Primes(20000));
  specs[10] = Crash("segv");
  const v1::JobEvent bad = RunBatchWithOneBad(specs, 10);
  EXPECT_THAT(bad.error().message(), HasSubstr("SIGSEGV"));
  // Its two workers and the spare.
  EXPECT_EQ(Stats().process_pool().retired().at("fork_server_restart"), 3u);
}

TEST_F(ProcessPoolTest, CorruptOrOversizedFrameFailsOnlyThatJob) {
  StartDaemon({"--process-workers", "2"});
  for (const auto& [how, expected] :
       std::vector<std::pair<std::string, std::string>>{
           {"corrupt_frame", "is not a valid"},
           {"huge_frame", "exceeds the limit"}}) {
    std::vector<v1::JobSpec> specs(30, Primes(20000));
    specs[7] = Crash(how);
    const v1::JobEvent bad = RunBatchWithOneBad(specs, 7);
    EXPECT_EQ(bad.error().reason(), v1::ERROR_REASON_WORKER_CRASHED) << how;
    EXPECT_THAT(bad.error().message(), HasSubstr("IPC protocol")) << how;
    EXPECT_THAT(bad.error().message(), HasSubstr(expected)) << how;
  }
  EXPECT_EQ(Stats().process_pool().retired().at("protocol_error"), 2u);
}

TEST_F(ProcessPoolTest, TaskThatKeepsKillingWorkersIsQuarantined) {
  StartDaemon({"--process-workers", "1", "--quarantine-after", "2"});
  EXPECT_EQ(RunOne(Crash("segv")).error().reason(),
            v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(RunOne(Crash("exit")).error().reason(),
            v1::ERROR_REASON_WORKER_CRASHED);
  const v1::JobEvent q = RunOne(Crash("segv"));
  EXPECT_EQ(q.error().reason(), v1::ERROR_REASON_QUARANTINED);
  EXPECT_THAT(q.error().message(), HasSubstr("jobctl unquarantine crash"));
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_THAT(Stats().process_pool().quarantined_tasks(),
              ::testing::ElementsAre("crash"));
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListTasksResponse tasks;
    ASSERT_TRUE(stub_->ListTasks(&ctx, {}, &tasks).ok());
    for (const v1::TaskInfo& t : tasks.tasks()) {
      EXPECT_EQ(t.quarantined(), t.name() == "crash") << t.name();
    }
  }
  v1::ClearQuarantineRequest req;
  v1::ClearQuarantineResponse resp;
  req.set_task("crash");
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    ASSERT_TRUE(stub_->ClearQuarantine(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.was_quarantined());
  }
  EXPECT_EQ(RunOne(Crash("segv")).error().reason(),
            v1::ERROR_REASON_WORKER_CRASHED);
  req.set_task("no.such.task");
  grpc::ClientContext ctx;
  Deadline(ctx);
  EXPECT_EQ(stub_->ClearQuarantine(&ctx, req, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ProcessPoolTest, ChunksRunInOrderAndSurviveACrashInside) {
  StartDaemon({"--process-workers", "1"});
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 2000; ++i) {
    v1::JobSpec s = Spec("echo", {static_cast<double>(i)});
    s.set_executor(v1::EXECUTOR_PROCESS);
    s.set_chunksize(100);
    specs.push_back(s);
  }
  StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_EQ(r.Terminal().size(), 2000u);
  for (const v1::JobEvent& e : r.Terminal()) {
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
    EXPECT_EQ(e.result().value().number_value(), e.client_tag() - 1);
    EXPECT_EQ(e.executor(), v1::EXECUTOR_PROCESS);
  }
  // A crash in the middle of a chunk: the jobs after it go to the
  // replacement worker and succeed.
  std::vector<v1::JobSpec> mixed(21, Primes(1000));
  mixed[10] = Crash("segv");
  for (v1::JobSpec& s : mixed) s.set_chunksize(32);
  const v1::JobEvent bad = RunBatchWithOneBad(mixed, 10);
  EXPECT_EQ(bad.error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
}

TEST_F(ProcessPoolTest, ChunksCarryBigInputsAndResultsInOrder) {
  StartDaemon({"--process-workers", "1", "--max-message-bytes", "67108864"});
  // 300 KiB results do not fit the result ring (they go by socket,
  // announced in the ring), and 60 such inputs overflow one chunk frame
  // (16 MiB); small ones in between must keep their places.
  const auto big = [](int i) {
    return std::string(300 << 10, static_cast<char>('a' + i % 26));
  };
  std::vector<v1::JobSpec> specs;
  for (int i = 0; i < 120; ++i) {
    v1::JobSpec s = Spec("echo", {});
    if (i % 2 == 0) {
      s.add_args()->set_string_value(big(i));
    } else {
      s.add_args()->set_number_value(i);
    }
    s.set_executor(v1::EXECUTOR_PROCESS);
    s.set_chunksize(120);
    specs.push_back(s);
  }
  StreamResult r = SubmitAll(*stub_, specs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.Terminal().size(), specs.size());
  for (const v1::JobEvent& e : r.Terminal()) {
    ASSERT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
    const int i = static_cast<int>(e.client_tag()) - 1;
    if (i % 2 == 0) {
      EXPECT_EQ(e.result().value().string_value(), big(i));
    } else {
      EXPECT_EQ(e.result().value().number_value(), i);
    }
  }
  // One chunk, one worker (and the spare): nothing crashed or was re-sent.
  v1::GetStatsResponse stats = Stats();
  EXPECT_EQ(stats.process_pool().workers_spawned(), 2u);
}

TEST_F(ProcessPoolTest, AutoRoutingMovesAMeasuredCpuHogToTheProcessPool) {
  StartDaemon({"--process-workers", "1"});
  v1::JobSpec burn = Spec("burn", {20}, v1::JOB_KIND_AUTO);
  std::vector<v1::Executor> ran_on;
  for (int i = 0; i < 12; ++i) {
    const v1::JobEvent e = RunOne(burn);
    EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED);
    ran_on.push_back(e.executor());
    if (e.executor() == v1::EXECUTOR_PROCESS) break;
  }
  // Its default kind (IO-bound) until 3 runs are measured, then the pool.
  // Measured CPU/wall is lower on a machine busy with other tests, so the
  // ratio's average may need a few more runs to pass 0.5.
  ASSERT_GE(ran_on.size(), 4u);
  EXPECT_THAT(std::vector<v1::Executor>(ran_on.begin(), ran_on.begin() + 3),
              ::testing::Each(v1::EXECUTOR_THREAD));
  EXPECT_EQ(ran_on.back(), v1::EXECUTOR_PROCESS)
      << "still on threads after " << ran_on.size() << " runs";
}

TEST_F(ProcessPoolTest, StatsShowEachWorker) {
  StartDaemon({"--process-workers", "2"});
  StreamResult r =
      SubmitAll(*stub_, std::vector<v1::JobSpec>(40, Primes(1000)));
  ASSERT_EQ(r.Terminal().size(), 40u);
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));
  const v1::ProcessPoolStats p = Stats().process_pool();
  ASSERT_EQ(p.workers_size(), 2);
  uint64_t done = 0;
  for (const v1::WorkerStats& w : p.workers()) {
    EXPECT_GT(w.pid(), 0);
    EXPECT_GT(w.rss_bytes(), 0u);
    EXPECT_EQ(w.state(), "idle");
    EXPECT_EQ(w.current_job_id(), 0u);
    EXPECT_TRUE(w.has_started());
    done += w.jobs_done();
  }
  EXPECT_EQ(done, 40u);
  ASSERT_EQ(p.spares_size(), 1);
  EXPECT_EQ(p.spares(0).slot(), 2u);
  EXPECT_GT(p.spares(0).pid(), 0);
  EXPECT_EQ(p.spares(0).state(), "spare");
  EXPECT_EQ(p.spares(0).jobs_done(), 0u);
  EXPECT_GT(p.fork_server_pid(), 0);
  EXPECT_EQ(p.workers_spawned(), 3u);
}

// Pings every 100 ms, unanswered after 1 s: a stopped worker is noticed
// within about 1.1 s (and a live one answers, even on a loaded machine).
const std::vector<std::string> kQuickPings = {"--worker-ping-interval", "100ms",
                                              "--worker-ping-timeout", "1s"};

TEST_F(ProcessPoolTest, StoppedIdleWorkerAndSpareAreReplacedAndTheJobMovesOn) {
  std::vector<std::string> args = {"--process-workers", "1"};
  args.insert(args.end(), kQuickPings.begin(), kQuickPings.end());
  StartDaemon(args);
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));
  const v1::ProcessPoolStats before = Stats().process_pool();
  const pid_t worker = before.workers(0).pid();
  const pid_t spare = before.spares(0).pid();
  ASSERT_EQ(kill(worker, SIGSTOP), 0);
  ASSERT_EQ(kill(spare, SIGSTOP), 0);
  // No timeout; handed to the stopped worker (the only slot) at once.
  const absl::Time start = absl::Now();
  const v1::JobEvent e = RunOne(Primes(1000));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_SUCCEEDED) << e.error().message();
  EXPECT_EQ(e.result().value().number_value(), 168);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  // It never began in the stopped worker: it went to a new one.
  EXPECT_THAT(daemon_->Log(),
              HasSubstr(absl::StrCat("sent to unresponsive worker pid ", worker,
                                     " never began")));
  EXPECT_THAT(daemon_->Log(), HasSubstr("was stopped (by SIGSTOP"));
  // Both stopped processes were killed (not left stopped) and replaced.
  EXPECT_TRUE(WaitFor([&] { return kill(worker, 0) != 0; }));
  EXPECT_TRUE(WaitFor([&] { return kill(spare, 0) != 0; }));
  EXPECT_TRUE(WaitFor([&] { return PoolFull(); }));
  const v1::ProcessPoolStats after = Stats().process_pool();
  EXPECT_GE(after.retired().at("unresponsive"), 2u);
  EXPECT_NE(after.workers(0).pid(), worker);
  EXPECT_NE(after.spares(0).pid(), spare);
  EXPECT_EQ(after.workers(0).jobs_done() + after.spares(0).jobs_done(), 1u);
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
}

TEST_F(ProcessPoolTest, WorkerStoppedMidJobFailsItsJobAndIsReplaced) {
  std::vector<std::string> args = {"--process-workers", "1"};
  args.insert(args.end(), kQuickPings.begin(), kQuickPings.end());
  StartDaemon(args);
  ASSERT_TRUE(WaitFor([&] { return PoolFull(); }));
  const pid_t worker = Stats().process_pool().workers(0).pid();
  const long idle_ticks = CpuTicks(worker);
  ASSERT_GE(idle_ticks, 0);
  StreamResult result;
  std::thread submitter([&] { result = SubmitAll(*stub_, {Crash("hang")}); });
  // It began: the worker burns CPU (a busy loop), 200 ms of it.
  EXPECT_TRUE(WaitFor([&] { return CpuTicks(worker) >= idle_ticks + 20; }));
  ASSERT_EQ(kill(worker, SIGSTOP), 0);
  const absl::Time stopped = absl::Now();
  submitter.join();  // No timeout on the job: the pool ends it.
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(10));
  ASSERT_EQ(result.Terminal().size(), 1u);
  const v1::JobEvent e = result.Terminal()[0];
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_FAILED);
  EXPECT_EQ(e.error().reason(), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(e.error().message(),
              HasSubstr(absl::StrCat("the worker process (pid ", worker,
                                     ") was stopped (by SIGSTOP")));
  EXPECT_THAT(e.error().message(), HasSubstr("liveness check"));
  EXPECT_TRUE(WaitFor([&] { return kill(worker, 0) != 0; }));
  EXPECT_EQ(RunOne(Primes(1000)).type(), v1::EVENT_TYPE_SUCCEEDED);
  EXPECT_GE(Stats().process_pool().retired().at("unresponsive"), 1u);
}

TEST_F(ProcessPoolTest, IsolatedTaskIsRejectedWithoutAPool) {
  StartDaemon({"--process-workers", "0"});
  const v1::JobEvent e = RunOne(Crash("segv"));
  EXPECT_EQ(e.type(), v1::EVENT_TYPE_REJECTED);
  EXPECT_EQ(e.error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(e.error().message(), HasSubstr("process pool"));
  EXPECT_FALSE(Stats().has_process_pool());
}

TEST_F(ProcessPoolTest, ShutdownStopsAWedgedWorkerAndLeavesNoProcess) {
  StartDaemon({"--process-workers", "2", "--shutdown-grace", "100ms",
               "--cancel-grace", "100ms", "--kill-grace", "100ms"});
  StreamResult result;
  std::thread submitter(
      [&] { result = SubmitAll(*stub_, {Crash("hang_ignore_term")}); });
  // The hung job runs, and every worker has its process (a slot still
  // spawning shows pid 0, which kill() would take for the process group).
  std::vector<pid_t> pids;
  ASSERT_TRUE(WaitFor([&] {
    const v1::GetStatsResponse stats = Stats();
    bool busy = false;
    for (const auto& e : stats.executors()) {
      busy |= e.executor() == v1::EXECUTOR_PROCESS && e.busy() == 1;
    }
    pids = {static_cast<pid_t>(stats.process_pool().fork_server_pid())};
    for (const v1::WorkerStats& w : stats.process_pool().workers()) {
      pids.push_back(w.pid());
    }
    return busy && std::find(pids.begin(), pids.end(), 0) == pids.end();
  }));
  absl::StatusOr<int> status = daemon_->Stop(SIGTERM, absl::Seconds(10));
  submitter.join();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  ASSERT_EQ(result.Terminal().size(), 1u);
  EXPECT_EQ(result.Terminal()[0].error().reason(), v1::ERROR_REASON_SHUTDOWN);
  for (pid_t pid : pids) {
    EXPECT_TRUE(WaitFor([&] { return kill(pid, 0) != 0; }, absl::Seconds(5)))
        << "pid " << pid << " outlived jobd";
  }
}

}  // namespace
}  // namespace jobd
