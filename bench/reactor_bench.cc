// reactor_bench: the coroutine reactor's numbers against Python's asyncio
// and ThreadPoolExecutor on the same workloads, measured in the same run
// (bench/README.md):
//   fan-out:  1,000 sleep jobs of 100 ms from one client (client Map)
//   mass:     100,000 sleep jobs of 1 s in flight at once: wall time and the
//             daemon's peak RSS growth per job (1,000,000 with --million),
//             and its RSS growth when the first result is read, if every
//             job was sent and none can have ended by then ("B/job wait");
//             and the reactor alone (in this process): its RSS growth per
//             waiting job, the job records it is handed made beforehand
//   http:     1,000 http.get against a local server that answers after
//             100 ms (tests/integration/http_test_server.h)
// Python runs bench/py_baseline.py with /usr/bin/python3.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "client/client.h"
#include "client/json.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/http_test_server.h"
#include "workers/reactor/reactor.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd::bench {
namespace {

// A field of /proc/PID/status in bytes (VmRSS, VmHWM), or 0.
uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) != 0) continue;
    uint64_t kb = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    if (absl::SimpleAtoi(digits, &kb)) return kb * 1024;
  }
  return 0;
}

struct Run {
  double wall_s = 0;
  double rss_per_job = 0;  // Bytes: peak RSS growth per job.
  // jobd: RSS growth per job when the first result is read, if by then all
  // were sent and none can have ended: what waiting jobs hold.
  double waiting_rss_per_job = 0;
  int ok = 0;
};

// `jobs` jobs of `task` with kwargs from `fill` through one jobd's client
// Map (window = jobs: all in flight at once). `waits`: how long every job
// waits (sleeps), if the RSS of all waiting at once is to be measured.
Run DaemonRun(testing::Daemon& daemon, const std::string& task, int jobs,
              const std::function<void(v1::JobSpec*)>& fill,
              absl::Duration waits = absl::ZeroDuration()) {
  auto client = client::Client::Connect({.address = daemon.unix_address()});
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return {};
  }
  const uint64_t rss0 = ProcStatusBytes(daemon.pid(), "VmRSS");
  int next = 0;
  Run run;
  const absl::Time start = absl::Now();
  absl::Time all_sent = absl::InfiniteFuture();
  client::MapStream m =
      (*client)->MapSpecs(task,
                          [&](v1::JobSpec* spec, bool) {
                            if (next >= jobs) return client::InputStatus::kEnd;
                            if (++next == jobs) all_sent = absl::Now();
                            fill(spec);
                            return client::InputStatus::kReady;
                          },
                          {.window = static_cast<uint32_t>(jobs),
                           .kind = v1::JOB_KIND_IO_BOUND,
                           .max_batch = 4096});
  for (client::MapResult r; m.Next(&r);) {
    // All were sent before the first could end: all wait now but the few
    // whose results come first.
    if (run.ok == 0 && all_sent - start < waits) {
      const uint64_t rss = ProcStatusBytes(daemon.pid(), "VmRSS");
      run.waiting_rss_per_job =
          rss > rss0 ? static_cast<double>(rss - rss0) / jobs : 0.0;
    }
    run.ok += r.ok();
  }
  run.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  const uint64_t hwm = ProcStatusBytes(daemon.pid(), "VmHWM");
  run.rss_per_job = hwm > rss0 ? static_cast<double>(hwm - rss0) / jobs : 0.0;
  if (!m.status().ok()) {
    std::fprintf(stderr, "map: %s\n", m.status().ToString().c_str());
  }
  return run;
}

// The reactor alone: RSS growth of this process per waiting sleep job, its
// inputs (spec, bound arguments, cancel token) made before the baseline.
double ReactorBytesPerWaitingJob(int jobs, int ms) {
  struct Counter : ExecutorListener {
    std::atomic<int> ended{0};
    void OnJobProgress(uint64_t, double, std::string_view) override {}
    void OnJobFinished(uint64_t, JobOutcome) override { ++ended; }
  } counter;
  TaskRegistry registry;
  (void)RegisterBuiltinTasks(registry, {});
  const TaskDef* sleep = registry.Find("sleep");
  std::vector<JobRun> runs(jobs);
  for (int i = 0; i < jobs; ++i) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task("sleep");
    spec->add_args()->set_number_value(ms);
    runs[i].job_id = i + 1;
    runs[i].task = sleep;
    runs[i].args =
        std::make_shared<const TaskArgs>(*TaskRegistry::Bind(*sleep, spec));
    runs[i].cancel = std::make_shared<CancelToken>();
  }
  ReactorExecutor reactor({.threads = 1}, counter);
  const uint64_t before = ProcStatusBytes(getpid(), "VmRSS");
  for (JobRun& run : runs) reactor.Start(std::move(run));
  // Every job has started (posted and spawned) well before `ms` passes.
  absl::SleepFor(absl::Milliseconds(ms) / 2);
  const uint64_t waiting = ProcStatusBytes(getpid(), "VmRSS");
  const int ended = counter.ended;
  reactor.Shutdown(absl::Now() + absl::Milliseconds(ms) * 3);
  if (ended != 0) return 0;  // Not measured while all waited.
  return static_cast<double>(waiting - before) / jobs;
}

std::unique_ptr<testing::Daemon> StartDaemon(int jobs) {
  auto daemon = testing::Daemon::Start(
      {"--log-level", "warn", "--process-workers", "0", "--max-window",
       std::to_string(std::max(jobs, 65536)), "--max-queued",
       std::to_string(std::max(jobs, 100000)), "--max-retained",
       std::to_string(std::max(jobs, 100000)),
       // A million tiny jobs in flight on one stream pass its default byte
       // window (~170,000 of them).
       "--stream-buffer-bytes", "0"});
  if (!daemon.ok()) {
    std::fprintf(stderr, "jobd: %s\n", daemon.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(daemon);
}

// bench/py_baseline.py ARGS, parsed.
Run Python(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {
      "/usr/bin/python3",
      std::string(JOBD_BENCH_SOURCE_DIR) + "/bench/py_baseline.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  const testing::CommandResult r =
      testing::RunCommand(argv, "", absl::Minutes(10));
  Run run;
  absl::StatusOr<google::protobuf::Value> v = client::ParseJson(r.out);
  if (r.exit_code != 0 || !v.ok()) {
    std::fprintf(stderr, "python %s: %s%s\n", args[0].c_str(), r.err.c_str(),
                 r.out.c_str());
    return run;
  }
  const auto& f = v->struct_value().fields();
  run.wall_s = f.at("wall_s").number_value();
  run.rss_per_job = f.at("rss_per_job").number_value();
  run.ok = static_cast<int>(f.at("done").number_value());
  return run;
}

void Print(const char* name, const Run& r, int jobs) {
  std::printf(
      "%-46s %9.3f %10.0f %9s %11s\n", name, r.wall_s, r.rss_per_job,
      r.ok == jobs ? "yes" : absl::StrCat(r.ok, "!").c_str(),
      r.waiting_rss_per_job > 0
          ? absl::StrCat(static_cast<int>(r.waiting_rss_per_job)).c_str()
          : "-");
}

void Header(const std::string& title) {
  std::printf("%-46s %9s %10s %9s %11s\n", title.c_str(), "wall s", "B/job",
              "all ok", "B/job wait");
}

int Main(int argc, char** argv) {
  CLI::App app{"reactor_bench: the reactor against Python on the same work"};
  int fanout = 1000, fanout_ms = 100, mass = 100000, mass_ms = 1000,
      http = 1000, http_ms = 100;
  bool million = false;
  app.add_option("--fanout", fanout, "Sleep jobs of the fan-out run")
      ->capture_default_str();
  app.add_option("--fanout-ms", fanout_ms)->capture_default_str();
  app.add_option("--mass", mass, "Sleep jobs in flight at once")
      ->capture_default_str();
  app.add_option("--mass-ms", mass_ms)->capture_default_str();
  app.add_flag("--million", million, "Also 1,000,000 sleeps in flight");
  app.add_option("--http", http, "http.get jobs at once")
      ->capture_default_str();
  app.add_option("--http-ms", http_ms, "Server delay per request")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("reactor_bench on %s, %ld cores\n\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));

  auto sleep_spec = [](int ms) {
    return [ms](v1::JobSpec* s) { s->add_args()->set_number_value(ms); };
  };
  const std::string ms = std::to_string(fanout_ms);
  Header(absl::StrCat("fan-out: ", fanout, " x sleep ", fanout_ms, " ms"));
  {
    auto daemon = StartDaemon(fanout);
    DaemonRun(*daemon, "sleep", fanout, sleep_spec(fanout_ms));  // Warm-up.
    Print("jobd reactor (client Map)",
          DaemonRun(*daemon, "sleep", fanout, sleep_spec(fanout_ms)), fanout);
  }
  Print("python asyncio.gather",
        Python({"sleep", "asyncio", std::to_string(fanout), ms}), fanout);
  Print("python ThreadPoolExecutor(max_workers=N)",
        Python({"sleep", "threads", std::to_string(fanout), ms,
                std::to_string(fanout)}),
        fanout);
  Print("python ThreadPoolExecutor(max_workers=32)",
        Python({"sleep", "threads", std::to_string(fanout), ms, "32"}), fanout);

  std::vector<int> masses = {mass};
  if (million) masses.push_back(1000000);
  for (int n : masses) {
    std::printf("\n");
    Header(absl::StrCat("mass: ", n, " x sleep ", mass_ms, " ms in flight"));
    {
      auto daemon = StartDaemon(n);
      Print("jobd reactor (client Map), fresh daemon",
            DaemonRun(*daemon, "sleep", n, sleep_spec(mass_ms),
                      absl::Milliseconds(mass_ms)),
            n);
    }
    Print("python asyncio.gather",
          Python(
              {"sleep", "asyncio", std::to_string(n), std::to_string(mass_ms)}),
          n);
    std::printf("%-46s %9s %10.0f\n", "jobd reactor alone (in-process)", "-",
                ReactorBytesPerWaitingJob(n, std::max(mass_ms, 1000)));
  }

  std::printf("\n");
  auto server = testing::HttpTestServer::Start();
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string url = (*server)->Url("/slow/" + std::to_string(http_ms));
  Header(absl::StrCat("http: ", http, " x GET (server answers after ", http_ms,
                      " ms)"));
  {
    auto daemon = StartDaemon(http);
    auto fill = [&url](v1::JobSpec* s) {
      auto& f = *s->mutable_kwargs()->mutable_fields();
      f["url"].set_string_value(url);
      f["body"].set_bool_value(false);
    };
    DaemonRun(*daemon, "http.get", http, fill);  // Warm-up.
    Print("jobd reactor http.get (client Map)",
          DaemonRun(*daemon, "http.get", http, fill), http);
  }
  Print("python asyncio streams",
        Python({"http", "asyncio", std::to_string(http), url}), http);
  Print("python ThreadPoolExecutor(max_workers=N) urllib",
        Python({"http", "threads", std::to_string(http), url,
                std::to_string(http)}),
        http);
  return 0;
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) { return jobd::bench::Main(argc, argv); }
