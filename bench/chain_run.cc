// jobd_bench --chain (chain_run.h).
#include "bench/chain_run.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine.h"
#include "grpcpp/grpcpp.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::bench {
namespace {

v1::JobSpec Noop() {
  v1::JobSpec s;
  s.set_task("echo");
  s.set_kind(v1::JOB_KIND_IO_BOUND);  // -> thread pool.
  return s;
}

// The chain sent whole, each item after the previous by tag; jobs/s from
// the first write to the last end.
double ServerChain(v1::JobService::Stub& stub, const ChainRunOptions& o) {
  grpc::ClientContext ctx;
  auto stream = stub.Submit(&ctx);
  const v1::JobSpec spec = Noop();
  const absl::Time start = absl::Now();
  std::thread writer([&] {
    for (int sent = 0; sent < o.jobs;) {
      v1::SubmitRequest req;
      if (sent == 0) {
        req.mutable_options()->set_window(o.window);
        req.mutable_options()->set_terminal_only(true);
      }
      for (int i = 0; i < o.batch && sent < o.jobs; ++i, ++sent) {
        auto* item = req.add_items();
        item->set_client_tag(sent + 1);
        if (sent > 0) item->add_depends_on_tags(sent);
        *item->mutable_spec() = spec;
      }
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  int ended = 0, failed = 0;
  v1::SubmitResponse resp;
  while (ended < o.jobs && stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (e.type() >= v1::EVENT_TYPE_SUCCEEDED) {
        ++ended;
        failed += e.type() != v1::EVENT_TYPE_SUCCEEDED;
      }
    }
  }
  const double rate = ended / absl::ToDoubleSeconds(absl::Now() - start);
  writer.join();
  stream->Finish();
  if (failed > 0) std::fprintf(stderr, "warning: %d jobs failed\n", failed);
  return ended == o.jobs ? rate : 0;
}

// The client waits for each end before it submits the next.
double ClientChain(v1::JobService::Stub& stub, int n) {
  grpc::ClientContext ctx;
  auto stream = stub.Submit(&ctx);
  v1::SubmitRequest req;
  req.mutable_options()->set_terminal_only(true);
  auto* item = req.add_items();
  *item->mutable_spec() = Noop();
  v1::SubmitResponse resp;
  const absl::Time start = absl::Now();
  int done_jobs = 0;
  for (int i = 0; i < n; ++i) {
    item->set_client_tag(i);
    if (!stream->Write(req)) break;
    req.clear_options();
    bool done = false;
    while (!done && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        done |= e.type() >= v1::EVENT_TYPE_SUCCEEDED;
      }
    }
    if (!done) break;
    ++done_jobs;
  }
  const double rate = done_jobs / absl::ToDoubleSeconds(absl::Now() - start);
  stream->WritesDone();
  stream->Finish();
  return rate;
}

}  // namespace

int RunChainBench(const ChainRunOptions& o) {
  std::printf("machine: %s, %ld cores\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("chain=%d batch=%d window=%d workers=%d repeat=%d\n", o.jobs,
              o.batch, o.window, o.workers, o.repeat);
  std::printf("%-48s %12s\n", "dependent jobs (one stream, one chain)",
              "jobs/s");
  char state[] = "/tmp/jobd-chain-bench.XXXXXX";
  if (mkdtemp(state) == nullptr) return 1;
  for (const std::string durability : {"none", "batched"}) {
    std::vector<std::string> args = {"--durability",
                                     durability,
                                     "--log-level",
                                     "warn",
                                     "--thread-workers",
                                     std::to_string(o.workers),
                                     "--max-window",
                                     std::to_string(std::max(o.window, 1)),
                                     "--max-jobs-per-request",
                                     std::to_string(std::max(o.batch, 1)),
                                     "--max-retained",
                                     std::to_string(std::max(o.jobs, 1000))};
    if (durability != "none") {
      args.insert(args.end(),
                  {"--state-dir", std::string(state) + "/" + durability});
    }
    auto daemon = testing::Daemon::Start(args);
    if (!daemon.ok()) {
      std::fprintf(stderr, "%s\n",
                   std::string(daemon.status().message()).c_str());
      return 1;
    }
    auto stub = (*daemon)->NewStub();
    double server = 0, client = 0;
    for (int r = 0; r < o.repeat; ++r) {
      server = std::max(server, ServerChain(*stub, o));
      client = std::max(client, ClientChain(*stub, std::min(o.jobs, 5000)));
    }
    (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
    std::printf("%-48s %12.0f\n",
                ("depends_on_tags, jobd releases (" + durability + ")").c_str(),
                server);
    std::printf("%-48s %12.0f\n",
                ("client waits, then submits (" + durability + ")").c_str(),
                client);
  }
  std::error_code ec;
  std::filesystem::remove_all(state, ec);
  return 0;
}

}  // namespace jobd::bench
