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
#include "tests/integration/daemon_harness.h"
#include "workers/builtin_tasks.h"
#include "workers/fork_server.h"
#include "workers/process_pool.h"

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
  Pool(const TaskRegistry& registry, int workers) : registry_(registry) {
    ProcessPoolOptions options;
    options.workers = workers;
    options.fork_server_args = {"--testing-tasks"};
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

// Seconds for `jobs` jobs of `task` (argument i: arg(i)) through the
// client's Map on a jobd started with `daemon_args`; 0 if any failed.
double DaemonMap(std::vector<std::string> daemon_args, const std::string& task,
                 int jobs, const std::function<double(int)>& arg,
                 client::MapOptions options) {
  daemon_args.insert(daemon_args.end(), {"--log-level", "warn"});
  auto daemon = testing::Daemon::Start(std::move(daemon_args));
  if (!daemon.ok()) return 0;
  auto client = client::Client::Connect({.address = (*daemon)->unix_address()});
  if (!client.ok()) return 0;
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
  return ok == jobs ? Seconds(start) : 0;
}

// End to end: `jobs` primes.count(n) through jobd with `workers` processes.
double DaemonPrimes(int workers, int jobs, double n) {
  return DaemonMap({"--process-workers", std::to_string(workers)},
                   "primes.count", jobs, [n](int) { return n; },
                   {.kind = v1::JOB_KIND_CPU_BOUND});
}

// Tiny jobs per second end to end through jobd's client Map.
double DaemonTiny(v1::Executor executor, int chunksize, int jobs) {
  const double seconds =
      DaemonMap({}, "echo", jobs, [](int i) { return i + 1; },
                {.window = 65536,
                 .kind = v1::JOB_KIND_CPU_BOUND,
                 .executor = executor,
                 .chunksize = static_cast<uint32_t>(chunksize)});
  return seconds > 0 ? jobs / seconds : 0;
}

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
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);

  TaskRegistry registry;
  (void)RegisterBuiltinTasks(registry, {.testing_tasks = true});
  std::printf("pool_bench on %s, %ld cores\n\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));

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
    Pool p(registry, 1);
    for (int i = 0; i < crashes; ++i) {
      const absl::Time t0 = absl::Now();
      p.pool().Start(p.Run("crash", {}));
      p.listener().Take(1);
      const absl::Time t1 = absl::Now();
      p.pool().Start(p.Run("echo", {1}));
      p.listener().Take(1);
      report_us.push_back(absl::ToDoubleMicroseconds(t1 - t0));
      next_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    }
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

  // --- tiny jobs end to end
  const double thread = DaemonTiny(v1::EXECUTOR_THREAD, 1, tiny);
  const double chunk1 = DaemonTiny(v1::EXECUTOR_PROCESS, 1, tiny / 4);
  const double chunk256 = DaemonTiny(v1::EXECUTOR_PROCESS, 256, tiny);
  std::printf("%-44s %12s\n", "tiny echo jobs end to end (client Map)",
              "jobs/s");
  std::printf("%-44s %12.0f\n", "thread pool", thread);
  std::printf("%-44s %12.0f\n", "process pool, chunksize 1", chunk1);
  std::printf("%-44s %12.0f\n", "process pool, chunksize 256", chunk256);
  return 0;
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) {
  jobd::RunForkServerIfInvoked(argc, argv);  // The pools' fork servers.
  return jobd::bench::Run(argc, argv);
}
