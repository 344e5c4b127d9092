// pool_bench: the process pool's numbers against baselines measured in the
// same run (bench/README.md):
//   dispatch:  one tiny job at a time through a ProcessPoolExecutor (Start ->
//              worker -> result) vs a raw 1-byte round trip over a pipe pair
//              between two processes
//   respawn:   a worker crash (segfault) -> crash reported -> the next job
//              done in the replacement worker
//   speedup:   8 primes.count jobs of ~250 ms each: pool of 1 worker vs the
//              pool of 2 (executor level, and end to end through jobd)
//   chunks:    tiny jobs end to end through jobd (client Map) on the process
//              pool with chunksize 1 and 256, and on the thread pool
//   plugin:    a task plugin's echo (tests/plugins/test_tasks.cc) against
//              the built-in echo, one at a time through the pool and end to
//              end through jobd (--only plugin runs this part alone)
// The pools here get fresh fork servers by executing this binary in
// fork-server mode, as jobd replaces a dead one.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string_view>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "client/client.h"
#include "spdlog/spdlog.h"
#include "tests/integration/daemon_harness.h"
#include "workers/plugins/plugin_loader.h"
#include "workers/process/fork_server.h"
#include "workers/process/process_pool.h"
#include "workers/tasks/builtin_tasks.h"

namespace jobd::bench {
namespace {

double Seconds(absl::Time start) {
  return absl::ToDoubleSeconds(absl::Now() - start);
}

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0;
};

Percentiles Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[static_cast<size_t>(q * (us.size() - 1))];
  };
  return {at(0.5), at(0.9), at(0.99)};
}

// --pipeline-depth: given to every pool and jobd here (0: their default).
int pipeline_depth = 0;

// Round trips of one byte between this process and a child over two pipes.
std::vector<double> PipeRoundTrips(int rounds) {
  int to_child[2], to_parent[2];
  if (pipe(to_child) != 0 || pipe(to_parent) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    close(to_child[1]);  // Else its read never sees EOF.
    close(to_parent[0]);
    char c;
    while (read(to_child[0], &c, 1) == 1) {
      if (write(to_parent[1], &c, 1) != 1) break;
    }
    _exit(0);
  }
  close(to_child[0]);
  close(to_parent[1]);
  std::vector<double> us;
  char c = 'x';
  for (int i = 0; i < rounds; ++i) {
    const absl::Time t0 = absl::Now();
    if (write(to_child[1], &c, 1) != 1 || read(to_parent[0], &c, 1) != 1) break;
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  close(to_child[1]);
  close(to_parent[0]);
  waitpid(pid, nullptr, 0);
  return us;
}

// Collects job ends reported by a pool.
class Listener : public ExecutorListener {
 public:
  void OnJobProgress(uint64_t, double, std::string_view) override {}
  void OnJobFinished(uint64_t job_id, JobOutcome outcome) override {
    if (then_ && then_()) return;  // Chained: the next job is started.
    absl::MutexLock lock(&mu_);
    outcomes_.emplace_back(job_id, std::move(outcome));
  }
  // Called on the pool's thread at each job end, before it is recorded;
  // returns true to not record it (set while no job runs).
  void Chain(std::function<bool()> then) { then_ = std::move(then); }
  // Waits for `n` more ends than taken so far.
  std::vector<std::pair<uint64_t, JobOutcome>> Take(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return outcomes_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(60));
    auto out = std::move(outcomes_);
    outcomes_.clear();
    return out;
  }

 private:
  std::function<bool()> then_;
  absl::Mutex mu_;
  std::vector<std::pair<uint64_t, JobOutcome>> outcomes_ ABSL_GUARDED_BY(mu_);
};

class Pool {
 public:
  Pool(const TaskRegistry& registry, int workers,
       const std::vector<std::string>& plugins = {})
      : registry_(registry) {
    ProcessPoolOptions options;
    options.workers = workers;
    if (pipeline_depth > 0) options.pipeline_depth = pipeline_depth;
    options.fork_server_args = {"--testing-tasks"};
    for (const std::string& p : plugins) {
      options.fork_server_args.insert(options.fork_server_args.end(),
                                      {"--plugin", p});
    }
    options.quarantine_after = 0;  // The respawn benchmark crashes on purpose.
    auto server = SpawnForkServer("/proc/self/exe", options.fork_server_args);
    if (!server.ok()) {
      std::fprintf(stderr, "fork server: %s\n",
                   server.status().ToString().c_str());
      std::exit(1);
    }
    pool_ = std::make_unique<ProcessPoolExecutor>(options, *std::move(server),
                                                  listener_);
    // Wait for the workers: one no-op job per slot at once.
    for (int i = 0; i < workers; ++i) pool_->Start(Run("echo", {}));
    listener_.Take(workers);
  }
  ~Pool() { pool_->Shutdown(absl::Now() + absl::Seconds(5)); }

  JobRun Run(const std::string& task, std::vector<double> args) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task);
    for (double a : args) spec->add_args()->set_number_value(a);
    const TaskDef* def = registry_.Find(task);
    JobRun run;
    run.job_id = ++next_id_;
    run.task = def;
    run.spec = spec;
    run.args =
        std::make_shared<const TaskArgs>(*TaskRegistry::Bind(*def, spec));
    run.cancel = std::make_shared<CancelToken>();
    return run;
  }
  ProcessPoolExecutor& pool() { return *pool_; }
  // Polls the pool's stats until every spare worker is warm (at most 5 s).
  void WaitForWarmSpares() {
    const absl::Time end = absl::Now() + absl::Seconds(5);
    while (absl::Now() < end) {
      v1::GetStatsResponse stats;
      pool_->AddStats(stats);
      bool warm = true;
      for (const v1::WorkerStats& w : stats.process_pool().spares()) {
        warm &= w.state() == "spare";
      }
      if (warm) return;
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  Listener& listener() { return listener_; }

 private:
  const TaskRegistry& registry_;
  Listener listener_;
  std::unique_ptr<ProcessPoolExecutor> pool_;
  uint64_t next_id_ = 0;
};

// Wall seconds for `jobs` primes.count(n) jobs on a pool of `workers`.
double PoolPrimes(const TaskRegistry& registry, int workers, int jobs,
                  double n) {
  Pool p(registry, workers);
  const absl::Time start = absl::Now();
  int started = 0, done = 0;
  while (started < std::min(jobs, workers)) {
    p.pool().Start(p.Run("primes.count", {n}));
    ++started;
  }
  while (done < jobs) {
    done += p.listener().Take(1).size();
    while (started < jobs && started - done < workers) {
      p.pool().Start(p.Run("primes.count", {n}));
      ++started;
    }
  }
  return Seconds(start);
}

// Seconds for each of `passes` runs of `jobs` jobs of `task` (argument i:
// arg(i)) through the client's Map, one after another on one jobd started
// with `daemon_args`; a run where any job failed counts 0.
std::vector<double> DaemonMap(std::vector<std::string> daemon_args,
                              const std::string& task, int jobs,
                              const std::function<double(int)>& arg,
                              client::MapOptions options, int passes = 1) {
  daemon_args.insert(daemon_args.end(), {"--log-level", "warn"});
  std::vector<double> seconds(passes, 0.0);
  auto daemon = testing::Daemon::Start(std::move(daemon_args));
  if (!daemon.ok()) return seconds;
  auto client = client::Client::Connect({.address = (*daemon)->unix_address()});
  if (!client.ok()) return seconds;
  for (double& pass_seconds : seconds) {
    int next = 0;
    const absl::Time start = absl::Now();
    client::MapStream m = (*client)->MapSpecs(
        task,
        [&](v1::JobSpec* out, bool) {
          if (next >= jobs) return client::InputStatus::kEnd;
          out->add_args()->set_number_value(arg(next++));
          return client::InputStatus::kReady;
        },
        options);
    int ok = 0;
    for (client::MapResult r; m.Next(&r);) ok += r.ok();
    pass_seconds = ok == jobs ? Seconds(start) : 0;
  }
  return seconds;
}

// End to end: `jobs` primes.count(n) through jobd with `workers` processes.
double DaemonPrimes(int workers, int jobs, double n) {
  return DaemonMap({"--process-workers", std::to_string(workers)},
                   "primes.count", jobs, [n](int) { return n; },
                   {.kind = v1::JOB_KIND_CPU_BOUND})[0];
}

// Tiny jobs per second end to end through jobd's client Map: a first run on
// a fresh daemon (cold: its heap grows to hold the retained jobs and events,
// and every new page costs a fault) and a second run on the same daemon
// (warm: the steady state of a daemon in service).
struct Throughput {
  double cold = 0, warm = 0;
};

Throughput DaemonTiny(v1::Executor executor, int chunksize, int jobs,
                      const std::string& durability,
                      const std::string& task = "echo",
                      std::vector<std::string> extra = {}) {
  extra.insert(extra.end(), {"--durability", durability});
  if (pipeline_depth > 0) {
    extra.insert(extra.end(),
                 {"--pipeline-depth", std::to_string(pipeline_depth)});
  }
  const std::vector<double> seconds = DaemonMap(
      extra, task, jobs, [](int i) { return i + 1; },
      {.window = 65536,
       .kind = v1::JOB_KIND_CPU_BOUND,
       .executor = executor,
       .chunksize = static_cast<uint32_t>(chunksize)},
      2);
  auto rate = [jobs](double s) { return s > 0 ? jobs / s : 0; };
  return {rate(seconds[0]), rate(seconds[1])};
}

// One tiny job of `task` at a time through a pool of one worker whose fork
// server loaded `plugins`, `rounds` times (µs each).
std::vector<double> OneAtATime(const TaskRegistry& registry,
                               const std::string& task, int rounds,
                               const std::vector<std::string>& plugins) {
  std::vector<double> us;
  Pool p(registry, 1, plugins);
  for (int i = 0; i < rounds; ++i) {
    const absl::Time t0 = absl::Now();
    p.pool().Start(p.Run(task, {1}));
    p.listener().Take(1);
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  return us;
}

// The plugin's echo against the built-in one, alternating, in the same
// pools (both load the plugin) and the same jobd (started with it).
void PluginVsBuiltin(TaskRegistry& registry, int rounds, int tiny) {
  const std::vector<std::string> plugins = {JOBD_BENCH_TEST_PLUGIN};
  if (absl::Status s = LoadPlugins(plugins, registry, false); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    std::exit(1);
  }
  std::vector<double> builtin_us, plugin_us;
  for (int pass = 0; pass < 4; ++pass) {
    for (double us : OneAtATime(registry, "echo", rounds / 4, plugins)) {
      builtin_us.push_back(us);
    }
    for (double us :
         OneAtATime(registry, "plugintest.echo", rounds / 4, plugins)) {
      plugin_us.push_back(us);
    }
  }
  const Percentiles b = Summarize(builtin_us), q = Summarize(plugin_us);
  std::printf("%-44s %9s %9s %9s\n",
              "process pool, one tiny job at a time (µs)", "p50", "p90", "p99");
  std::printf("%-44s %9.1f %9.1f %9.1f\n", "built-in echo", b.p50, b.p90,
              b.p99);
  std::printf("%-44s %9.1f %9.1f %9.1f\n\n", "plugin echo (plugintest.echo)",
              q.p50, q.p90, q.p99);
  const std::vector<std::string> with_plugin = {"--plugin",
                                                JOBD_BENCH_TEST_PLUGIN};
  std::printf("%-44s %9s %9s\n", "jobd, process pool, chunksize 1 (client Map)",
              "cold/s", "warm/s");
  for (int pass = 0; pass < 2; ++pass) {
    const Throughput builtin = DaemonTiny(v1::EXECUTOR_PROCESS, 1, tiny / 4,
                                          "none", "echo", with_plugin);
    const Throughput plugin =
        DaemonTiny(v1::EXECUTOR_PROCESS, 1, tiny / 4, "none", "plugintest.echo",
                   with_plugin);
    std::printf("%-44s %9.0f %9.0f\n", "built-in echo", builtin.cold,
                builtin.warm);
    std::printf("%-44s %9.0f %9.0f\n", "plugin echo", plugin.cold, plugin.warm);
  }
}

void TinyJobs(int tiny);  // Below.

int Run(int argc, char** argv) {
  CLI::App app{"pool_bench: the process pool against same-run baselines"};
  int rounds = 5000, crashes = 50, tiny = 200000;
  double primes_ms = 250;
  app.add_option("--rounds", rounds, "Sequential round trips")
      ->capture_default_str();
  app.add_option("--crashes", crashes, "Crash/respawn samples")
      ->capture_default_str();
  app.add_option("--tiny-jobs", tiny, "Jobs per end-to-end tiny-job run")
      ->capture_default_str();
  app.add_option("--primes-ms", primes_ms, "Target run time of one CPU job")
      ->capture_default_str();
  std::string only;
  app.add_option("--only", only,
                 "Run one part only: plugin, or tiny (the tiny jobs end to "
                 "end)")
      ->check(CLI::IsMember({"plugin", "tiny"}));
  app.add_option("--pipeline-depth", pipeline_depth,
                 "The pools' and jobd's --pipeline-depth (0: default)")
      ->check(CLI::Range(0, 64));
  bool verbose = false;
  app.add_flag("--verbose", verbose,
               "Log the pool's debug lines with microsecond timestamps");
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (verbose) {
    spdlog::set_level(spdlog::level::debug);
    spdlog::set_pattern("%M:%S.%f %v");
  }

  TaskRegistry registry;
  (void)RegisterBuiltinTasks(registry, {.testing_tasks = true});
  std::printf("pool_bench on %s, %ld cores\n\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  if (only == "plugin") {
    PluginVsBuiltin(registry, rounds, tiny);
    return 0;
  }

  if (only == "tiny") {
    TinyJobs(tiny);
    return 0;
  }

  // --- dispatch overhead
  const Percentiles pipe = Summarize(PipeRoundTrips(rounds));
  std::vector<double> pool_us;
  {
    Pool p(registry, 1);
    for (int i = 0; i < rounds; ++i) {
      const absl::Time t0 = absl::Now();
      p.pool().Start(p.Run("echo", {1}));
      p.listener().Take(1);
      pool_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    }
  }
  const Percentiles pool = Summarize(pool_us);
  // As the scheduler feeds a worker: the next job is started from the
  // previous one's completion callback, on the pool's own thread.
  double chained_us = 0;
  {
    Pool p(registry, 1);
    int left = rounds;
    p.listener().Chain([&] {
      if (--left <= 0) return false;
      p.pool().Start(p.Run("echo", {1}));
      return true;
    });
    const absl::Time t0 = absl::Now();
    p.pool().Start(p.Run("echo", {1}));
    p.listener().Take(1);
    chained_us = absl::ToDoubleMicroseconds(absl::Now() - t0) / rounds;
    p.listener().Chain(nullptr);
  }
  std::printf("%-44s %9s %9s %9s\n", "one tiny job at a time (µs)", "p50",
              "p90", "p99");
  std::printf("%-44s %9.1f %9.1f %9.1f\n", "pipe round trip, 2 processes",
              pipe.p50, pipe.p90, pipe.p99);
  std::printf("%-44s %9.1f %9.1f %9.1f\n", "pool, from another thread",
              pool.p50, pool.p90, pool.p99);
  std::printf("%-44s %9.1f %9s %9s\n", "pool, chained from completion (mean)",
              chained_us, "-", "-");
  std::printf("%-44s %9.2fx %8.2fx\n\n",
              "ratio to pipe p50: other thread, chained", pool.p50 / pipe.p50,
              chained_us / pipe.p50);

  // --- respawn after a crash
  std::vector<double> report_us, next_us;
  {
    // As the scheduler does it: the next job is started from the pool's
    // report of the crashed one (on the pool's thread), and both times are
    // taken there, so no bench-thread wake-up is in the figures.
    Pool p(registry, 1);
    absl::Time t0, reported, done;
    bool crash_pending = false;
    p.listener().Chain([&] {
      if (crash_pending) {
        reported = absl::Now();
        crash_pending = false;
        p.pool().Start(p.Run("echo", {1}));
        return true;
      }
      done = absl::Now();
      return false;
    });
    for (int i = 0; i < crashes; ++i) {
      // One crash at a time, as in service: the pool back to steady state
      // (its spare forked and warmed up) before each.
      p.WaitForWarmSpares();
      crash_pending = true;
      t0 = absl::Now();
      p.pool().Start(p.Run("crash", {}));
      p.listener().Take(1);  // The echo.
      report_us.push_back(absl::ToDoubleMicroseconds(reported - t0));
      next_us.push_back(absl::ToDoubleMicroseconds(done - t0));
    }
    p.listener().Chain(nullptr);
  }
  const Percentiles report = Summarize(report_us), next = Summarize(next_us);
  std::printf("%-44s %9s %9s %9s\n", "worker crash (ms)", "p50", "p90", "p99");
  std::printf("%-44s %9.2f %9.2f %9.2f\n", "crash -> job reported failed",
              report.p50 / 1000, report.p90 / 1000, report.p99 / 1000);
  std::printf("%-44s %9.2f %9.2f %9.2f\n\n",
              "crash -> next job done (respawned)", next.p50 / 1000,
              next.p90 / 1000, next.p99 / 1000);

  // --- CPU speedup: calibrate n so that one job takes ~primes_ms.
  double n = 100000;
  for (int i = 0; i < 20; ++i) {
    const absl::Time t0 = absl::Now();
    CountPrimesInRange(0, static_cast<int64_t>(n));
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (ms > primes_ms * 0.9 && ms < primes_ms * 1.1) break;
    n = std::round(n * std::pow(primes_ms / std::max(ms, 1.0), 0.66));
  }
  const double one = PoolPrimes(registry, 1, 8, n);
  const double two = PoolPrimes(registry, 2, 8, n);
  const double d_one = DaemonPrimes(1, 8, n);
  const double d_two = DaemonPrimes(2, 8, n);
  std::printf(
      "8 x primes.count(%.0f), wall seconds        1 worker  2 workers  "
      "speedup\n",
      n);
  std::printf("%-44s %8.3f %10.3f %8.2fx\n", "executor level", one, two,
              one / two);
  std::printf("%-44s %8.3f %10.3f %8.2fx\n\n", "end to end (jobd, client Map)",
              d_one, d_two, d_one / d_two);

  TinyJobs(tiny);
  PluginVsBuiltin(registry, rounds, tiny);
  return 0;
}

// Tiny jobs end to end: without the journal (what the executors cost), then
// the same with it (--durability batched, jobd's default: what a durable
// daemon costs).
void TinyJobs(int tiny) {
  std::printf("%-44s %9s %9s %16s %9s\n",
              "tiny echo jobs end to end (client Map)", "cold/s", "warm/s",
              "+journal cold/s", "warm/s");
  for (const auto& [name, executor, chunksize, jobs] :
       {std::tuple{"thread pool", v1::EXECUTOR_THREAD, 1, tiny},
        std::tuple{"process pool, chunksize 1", v1::EXECUTOR_PROCESS, 1,
                   tiny / 4},
        std::tuple{"process pool, chunksize 256", v1::EXECUTOR_PROCESS, 256,
                   tiny}}) {
    const Throughput bare = DaemonTiny(executor, chunksize, jobs, "none");
    const Throughput durable = DaemonTiny(executor, chunksize, jobs, "batched");
    std::printf("%-44s %9.0f %9.0f %16.0f %9.0f\n", name, bare.cold, bare.warm,
                durable.cold, durable.warm);
  }
  std::printf("\n");
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) {
  jobd::RunForkServerIfInvoked(argc, argv);  // The pools' fork servers.
  return jobd::bench::Run(argc, argv);
}
