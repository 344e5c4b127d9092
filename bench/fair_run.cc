#include "bench/fair_run.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::bench {
namespace {

// sha256("alice-secret") and sha256("bob-secret").
constexpr char kAliceHash[] =
    "0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376";
constexpr char kBobHash[] =
    "9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99";

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One caller's Submit stream: `n` sleep jobs in batches, then its events
// until all ended. `queued` is notified once `notify_at` were accepted.
struct CallerRun {
  std::vector<uint64_t> started;  // STARTED sequence numbers.
  uint64_t first_accepted = 0;    // The first ACCEPTED's.
  int succeeded = 0, failed = 0;
  double seconds = 0;  // First write to last end.
};

CallerRun RunCaller(v1::JobService::Stub& stub, const std::string& token, int n,
                    const FairRunOptions& o, int notify_at,
                    absl::Notification* queued) {
  CallerRun run;
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
  auto stream = stub.Submit(&ctx);
  v1::JobSpec spec;
  spec.set_task("sleep");
  spec.set_kind(v1::JOB_KIND_IO_BOUND);
  spec.set_executor(v1::EXECUTOR_THREAD);
  spec.add_args()->set_number_value(o.job_ms);
  const absl::Time start = absl::Now();
  std::thread writer([&] {
    for (int sent = 0; sent < n;) {
      v1::SubmitRequest req;
      if (sent == 0) req.mutable_options()->set_window(n + 1);
      for (int i = 0; i < o.batch && sent < n; ++i, ++sent) {
        auto* item = req.add_items();
        item->set_client_tag(sent);
        *item->mutable_spec() = spec;
      }
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  int accepted = 0, ended = 0;
  v1::SubmitResponse resp;
  while (ended < n && stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) {
        if (accepted++ == 0) run.first_accepted = e.sequence();
        if (accepted == notify_at && queued != nullptr) queued->Notify();
      } else if (e.type() == v1::EVENT_TYPE_STARTED) {
        run.started.push_back(e.sequence());
      } else if (e.type() >= v1::EVENT_TYPE_SUCCEEDED ||
                 e.type() == v1::EVENT_TYPE_REJECTED) {
        ++ended;
        run.succeeded += e.type() == v1::EVENT_TYPE_SUCCEEDED;
        if (e.type() != v1::EVENT_TYPE_SUCCEEDED && run.failed++ == 0) {
          std::fprintf(stderr, "job: %s\n", e.ShortDebugString().c_str());
        }
      }
    }
  }
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  writer.join();
  const grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::fprintf(stderr, "stream: %s\n", status.error_message().c_str());
  }
  if (queued != nullptr && !queued->HasBeenNotified()) queued->Notify();
  return run;
}

struct Contest {
  bool ok = false;
  // Bob's share of the starts from his first job queued to his last
  // started (while he had jobs queued).
  double share = 0;
  double bob_s = 0, alice_s = 0;
};

// Alice floods with o.jobs, bob joins with o.jobs / 100 once a tenth of
// alice's are queued.
Contest RunContest(const FairRunOptions& o, const std::string& program,
                   bool weighted) {
  std::vector<std::string> args = {
      "--durability",     "none",
      "--log-level",      "warn",
      "--thread-workers", std::to_string(o.workers),
      "--max-window",     std::to_string(std::max(o.jobs + 1, 65536)),
      "--auth-token",     std::string("alice:submit:") + kAliceHash,
      "--auth-token",     std::string("bob:submit:") + kBobHash};
  if (weighted) {
    args.push_back("--caller-weight");
    args.push_back("alice=3");
  }
  auto daemon = testing::Daemon::Start(args, {}, program);
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return {};
  }
  // Over TCP: on the trusted Unix socket both would be "local".
  auto stub = v1::JobService::NewStub(grpc::CreateChannel(
      (*daemon)->tcp_address(), grpc::InsecureChannelCredentials()));
  const int bobs = std::max(1, o.jobs / 100);
  absl::Notification queued;
  CallerRun alice;
  std::thread flood([&] {
    alice = RunCaller(*stub, "alice-secret", o.jobs, o,
                      std::max(1, o.jobs / 10), &queued);
  });
  queued.WaitForNotification();
  const CallerRun bob = RunCaller(*stub, "bob-secret", bobs, o, 0, nullptr);
  flood.join();
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  Contest c;
  if (bob.started.empty() || alice.succeeded != o.jobs ||
      bob.succeeded != bobs) {
    std::fprintf(stderr, "contest: alice %d/%d, bob %d/%d succeeded\n",
                 alice.succeeded, o.jobs, bob.succeeded, bobs);
    return c;
  }
  // From bob's first job queued to his last one started.
  const uint64_t first = bob.first_accepted;
  const uint64_t last =
      *std::max_element(bob.started.begin(), bob.started.end());
  const auto alices =
      std::count_if(alice.started.begin(), alice.started.end(),
                    [&](uint64_t s) { return s > first && s < last; });
  c.ok = true;
  c.share = static_cast<double>(bob.started.size()) /
            static_cast<double>(bob.started.size() + alices);
  c.bob_s = bob.seconds;
  c.alice_s = alice.seconds;
  return c;
}

// No-op jobs/s through one stream on a fresh daemon without auth.
double HotPath(
    const FairRunOptions& o, const std::string& program,
    const std::function<double(v1::JobService::Stub&, int)>& stream) {
  auto daemon = testing::Daemon::Start(
      {"--durability", "none", "--log-level", "warn", "--thread-workers",
       std::to_string(o.workers), "--max-window",
       std::to_string(std::max(o.window, 1)), "--max-jobs-per-request",
       std::to_string(std::max(o.batch, 1))},
      {}, program);
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return 0;
  }
  auto stub = (*daemon)->NewStub();
  stream(*stub, std::min(o.stream_jobs, 10000));  // Warm-up.
  const double rate = stream(*stub, o.stream_jobs);
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  return rate;
}

}  // namespace

int RunFairBench(
    const FairRunOptions& o,
    const std::function<double(v1::JobService::Stub&, int)>& stream) {
  std::printf("machine: %s, %ld cores (shared: figures are noisy)\n",
              CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  std::printf(
      "fair share: alice submits %d sleep(%d ms) jobs, bob %d once a tenth "
      "of alice's are queued; %d thread workers\n",
      o.jobs, o.job_ms, std::max(1, o.jobs / 100), o.workers);
  std::printf("%-34s %14s %9s %12s %14s\n", "daemon", "bob's share", "expected",
              "bob done s", "alice done s");
  auto print = [](const char* name, const Contest& c, double expected) {
    if (!c.ok) {
      std::printf("%-34s %14s\n", name, "failed");
      return;
    }
    std::printf("%-34s %13.1f%% %8.1f%% %12.2f %14.2f\n", name, 100 * c.share,
                100 * expected, c.bob_s, c.alice_s);
  };
  if (!o.baseline_jobd.empty()) {
    print("baseline (one FIFO per priority)",
          RunContest(o, o.baseline_jobd, false), 0.5);
  }
  print("fair share, 1:1", RunContest(o, "", false), 0.5);
  print("fair share, --caller-weight alice=3", RunContest(o, "", true), 0.25);
  std::fflush(stdout);
  if (o.baseline_jobd.empty()) return 0;
  // The hot path without auth: one caller, alternating fresh daemons.
  std::vector<double> base, fair, ratio;
  for (int i = 0; i < o.repeat; ++i) {
    base.push_back(HotPath(o, o.baseline_jobd, stream));
    fair.push_back(HotPath(o, "", stream));
    ratio.push_back(base.back() > 0 ? fair.back() / base.back() : 0);
    std::printf("pair %d: baseline %.0f, fair share %.0f jobs/s (%.3fx)\n",
                i + 1, base.back(), fair.back(), ratio.back());
  }
  std::printf(
      "no-op stream, no auth (%d jobs, batch %d, %d workers): median "
      "baseline %.0f, fair share %.0f jobs/s; median of pair ratios %.3fx\n",
      o.stream_jobs, o.batch, o.workers, Median(base), Median(fair),
      Median(ratio));
  return 0;
}

}  // namespace jobd::bench
