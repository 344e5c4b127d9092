#include "bench/dashboard_run.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::bench {
namespace {

// CPU time of every thread of `pid` so far, in ns.
uint64_t ProcessCpuNs(pid_t pid) {
  uint64_t ns = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "schedstat");
    uint64_t on_cpu = 0;
    if (in >> on_cpu) ns += on_cpu;
  }
  return ns;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A client that polls as the page does, once a second, until `stop`.
void Viewer(int port, const absl::Notification& stop,
            std::atomic<int>& requests, std::atomic<int>& errors) {
  int64_t after = 0;
  while (true) {
    const absl::Time tick = absl::Now();
    for (const std::string& path :
         {std::string("/api/stats"), std::string("/api/jobs"),
          "/api/throughput?after=" + std::to_string(after)}) {
      httplib::Client c("127.0.0.1", port);
      c.set_connection_timeout(5);
      c.set_read_timeout(5);
      httplib::Result r = c.Get(path.c_str());
      if (r && r->status == 200) {
        ++requests;
      } else {
        ++errors;
      }
    }
    after = absl::ToUnixMillis(tick) - 2000;
    if (stop.WaitForNotificationWithTimeout(absl::Seconds(1) -
                                            (absl::Now() - tick))) {
      return;
    }
  }
}

}  // namespace

int RunDashboardBench(
    const DashboardRunOptions& o,
    const std::function<double(v1::JobService::Stub&, int)>& stream) {
  const int port = testing::FreeLoopbackPort();
  auto daemon = testing::Daemon::Start(
      {"--durability", "none", "--log-level", "warn", "--thread-workers",
       std::to_string(o.workers), "--max-window",
       std::to_string(std::max(o.window, 1)), "--max-jobs-per-request",
       std::to_string(std::max(o.batch, 1)), "--http-listen",
       "127.0.0.1:" + std::to_string(port)});
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return 1;
  }
  auto stub = (*daemon)->NewStub();
  stream(*stub, std::min(o.jobs, 20000));  // Warm-up.
  std::printf("machine: %s, %ld cores\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf(
      "jobs=%d per phase, batch=%d window=%d workers=%d, %d phases "
      "of each, alternating; viewers=%d\n",
      o.jobs, o.batch, o.window, o.workers, o.repeat, o.viewers);
  std::printf("%-6s %-10s %12s %14s %10s\n", "phase", "viewers", "jobs/s",
              "jobd CPU us/job", "requests");
  std::vector<double> rate[2], cpu[2];
  for (int i = 0; i < 2 * o.repeat; ++i) {
    // off, on, on, off, off, on, ...: each kind as often first as second.
    const bool on = ((i + i / 2) % 2) == 1;
    absl::Notification stop;
    std::atomic<int> requests = 0, errors = 0;
    std::vector<std::thread> viewers;
    for (int v = 0; on && v < o.viewers; ++v) {
      viewers.emplace_back(Viewer, port, std::cref(stop), std::ref(requests),
                           std::ref(errors));
    }
    const uint64_t cpu0 = ProcessCpuNs((*daemon)->pid());
    const double r = stream(*stub, o.jobs);
    const uint64_t cpu1 = ProcessCpuNs((*daemon)->pid());
    stop.Notify();
    for (std::thread& t : viewers) t.join();
    const double us_per_job = (cpu1 - cpu0) / 1000.0 / o.jobs;
    rate[on].push_back(r);
    cpu[on].push_back(us_per_job);
    std::printf("%-6d %-10s %12.0f %14.3f %10d%s\n", i + 1, on ? "on" : "none",
                r, us_per_job, requests.load(),
                errors > 0 ? " (some requests failed)" : "");
  }
  const double off = Median(rate[0]), with = Median(rate[1]);
  std::printf("median jobs/s: none %.0f, %d viewers %.0f: %.4fx (%+.2f%%)\n",
              off, o.viewers, with, off > 0 ? with / off : 0,
              off > 0 ? (with / off - 1) * 100 : 0);
  std::printf(
      "median jobd CPU us/job: none %.3f, %d viewers %.3f: %+.2f%%\n",
      Median(cpu[0]), o.viewers, Median(cpu[1]),
      Median(cpu[0]) > 0 ? (Median(cpu[1]) / Median(cpu[0]) - 1) * 100 : 0);
  // The viewers' own cost, apart from the stream's noise: jobd's CPU time
  // per second while idle (holding the jobs retained above), with and
  // without them.
  for (const bool on : {false, true, false, true}) {
    absl::Notification stop;
    std::atomic<int> requests = 0, errors = 0;
    std::vector<std::thread> viewers;
    const uint64_t cpu0 = ProcessCpuNs((*daemon)->pid());
    const absl::Time t0 = absl::Now();
    for (int v = 0; on && v < o.viewers; ++v) {
      viewers.emplace_back(Viewer, port, std::cref(stop), std::ref(requests),
                           std::ref(errors));
    }
    absl::SleepFor(absl::Seconds(5));
    stop.Notify();
    for (std::thread& t : viewers) t.join();
    const double ms_per_s = (ProcessCpuNs((*daemon)->pid()) - cpu0) / 1e6 /
                            absl::ToDoubleSeconds(absl::Now() - t0);
    std::printf("idle, %-10s jobd CPU %.2f ms/s (%d requests)\n",
                on ? "viewers:" : "no viewer:", ms_per_s, requests.load());
  }
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  return 0;
}

}  // namespace jobd::bench
