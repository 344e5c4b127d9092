// waiting_bench: a million WAITING jobs in one scheduler (no gRPC): their
// memory against as many queued ones, how late each starts against its
// due time, and how long a restart takes to have them back from the
// journal (bench/README.md "Waiting jobs").
//
//   waiting_bench --mode queued    # RSS per queued job (the reference)
//   waiting_bench --mode waiting   # RSS per waiting job; start lateness
//   waiting_bench --mode restart   # journal them, reopen, Restore: time
//
// Each mode runs in a process of its own (RSS does not go back down).
// The executor here starts every job at once and ends it on a thread of
// its own: what is measured is the scheduler's waiting set and timer.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/machine.h"
#include "server/jobs/proto_time.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

uint64_t RssBytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * 4096;
}

// Starts each job at once, records how late it started against its
// not_before, and ends it from its own thread (never from Start).
class InstantExecutor : public JobExecutor {
 public:
  InstantExecutor(ExecutorListener& listener, int slots)
      : listener_(listener), slots_(slots), thread_([this] { Loop(); }) {}
  ~InstantExecutor() override { Shutdown(absl::InfiniteFuture()); }
  v1::Executor kind() const override { return v1::EXECUTOR_THREAD; }
  int capacity() const override { return slots_; }
  void Start(JobRun run) override {
    const absl::Time now = absl::Now();
    if (hold_) return;  // --mode queued: never ends, holds its slot.
    if (run.spec->has_not_before()) {
      late_.push_back(now - FromProtoTime(run.spec->not_before()));
    }
    std::lock_guard lock(mu_);
    done_.push_back(run.job_id);
    cv_.notify_one();
  }
  bool Shutdown(absl::Time) override {
    {
      std::lock_guard lock(mu_);
      if (stop_) return true;
      stop_ = true;
      cv_.notify_one();
    }
    thread_.join();
    return true;
  }
  void set_hold(bool hold) { hold_ = hold; }
  // Start lateness, in start order (Start runs under the scheduler lock:
  // one at a time).
  std::vector<absl::Duration> late_;

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !done_.empty(); });
      if (done_.empty() && stop_) return;
      std::vector<FinishedJob> batch;
      while (!done_.empty()) {
        FinishedJob f;
        f.job_id = done_.front();
        f.outcome.frees_slot = true;
        batch.push_back(std::move(f));
        done_.pop_front();
      }
      lock.unlock();
      listener_.OnJobsFinished(batch);
      lock.lock();
    }
  }
  ExecutorListener& listener_;
  const int slots_;
  bool hold_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> done_;
  bool stop_ = false;
  std::thread thread_;
};

struct Sink : EventSink {
  bool Deliver(const Event&, uint64_t) override { return false; }
  void Flush() override {}
};

// Submits `n` jobs in batches; `due(i)` is job i's not_before (or
// InfinitePast for none).
void SubmitAll(Scheduler& scheduler, const TaskDef& task, size_t n,
               const std::function<absl::Time(size_t)>& due) {
  auto sink = std::make_shared<Sink>();
  const Subscriber sub{sink, 0, kTerminalEvents};
  std::vector<Admission> out;
  for (size_t i = 0; i < n;) {
    std::vector<NewJob> jobs;
    for (size_t j = 0; j < 4096 && i < n; ++j, ++i) {
      auto spec = std::make_shared<v1::JobSpec>();
      spec->set_kind(v1::JOB_KIND_IO_BOUND);
      const absl::Time t = due(i);
      if (t != absl::InfinitePast())
        *spec->mutable_not_before() = ToProtoTime(t);
      NewJob& nj = jobs.emplace_back();
      nj.task = &task;
      nj.spec = std::shared_ptr<const v1::JobSpec>(std::move(spec));
      nj.tag = i;
    }
    out.clear();
    scheduler.Submit(jobs, sub, out);
    for (const Admission& a : out) {
      if (!a.status.ok()) {
        std::fprintf(stderr, "rejected: %s\n", a.status.ToString().c_str());
        std::exit(1);
      }
    }
  }
}

absl::Duration Percentile(std::vector<absl::Duration> v, double p) {
  if (v.empty()) return absl::ZeroDuration();
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Run(const std::string& mode, size_t n, double spread_s, double lead_s,
        const std::string& dir) {
  std::printf("machine: %s, %u CPUs\n", bench::CpuModel().c_str(),
              std::thread::hardware_concurrency());
  const TaskDef task{.name = "noop",
                     .default_kind = v1::JOB_KIND_IO_BOUND,
                     .variadic = true,
                     .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
                       return TaskOutput{};
                     }};
  RealClock clock;
  SchedulerOptions options;
  options.max_queued = n + 16;
  options.max_live_bytes = 0;
  options.max_retained = 1000;
  options.event_log_size = 1024;
  if (mode == "restart") {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    JournalOptions jo;
    jo.path = dir + "/jobd.db";
    absl::Duration submit;
    {
      Recovered none;
      auto journal = Journal::Open(jo, &none);
      if (!journal.ok())
        return std::fprintf(stderr, "%s\n",
                            journal.status().ToString().c_str()),
               1;
      Scheduler scheduler(options, clock, journal->get());
      auto exec = std::make_unique<InstantExecutor>(
          scheduler.listener_for(v1::EXECUTOR_THREAD), 64);
      scheduler.AddExecutor(std::move(exec));
      const absl::Time t0 = absl::Now();
      SubmitAll(scheduler, task, n,
                [&](size_t) { return t0 + absl::Hours(1); });
      (*journal)->Flush(absl::InfiniteFuture());
      submit = absl::Now() - t0;
    }
    std::printf("submitted and journaled %zu waiting jobs in %s\n", n,
                absl::FormatDuration(submit).c_str());
    TaskRegistry registry;
    if (!registry.Add(task).ok()) return 1;
    const absl::Time t1 = absl::Now();
    Recovered recovered;
    auto journal = Journal::Open(jo, &recovered);
    if (!journal.ok()) return 1;
    const absl::Time read = absl::Now();
    Scheduler scheduler(options, clock, journal->get());
    scheduler.AddExecutor(std::make_unique<InstantExecutor>(
        scheduler.listener_for(v1::EXECUTOR_THREAD), 64));
    const RestoreSummary s = scheduler.Restore(std::move(recovered), registry);
    const absl::Time done = absl::Now();
    std::printf(
        "restart: %zu waiting back in %s (journal read %s, Restore %s); "
        "journal %.1f MiB\n",
        s.waiting, absl::FormatDuration(done - t1).c_str(),
        absl::FormatDuration(read - t1).c_str(),
        absl::FormatDuration(done - read).c_str(),
        std::filesystem::file_size(jo.path) / 1048576.0);
    return s.waiting == n ? 0 : 1;
  }
  Scheduler scheduler(options, clock);
  auto exec = std::make_unique<InstantExecutor>(
      scheduler.listener_for(v1::EXECUTOR_THREAD), mode == "queued" ? 1 : 4096);
  InstantExecutor& executor = *exec;
  executor.set_hold(mode == "queued");
  scheduler.AddExecutor(std::move(exec));
  const uint64_t rss0 = RssBytes();
  const absl::Time t0 = absl::Now();
  // Due from `lead_s` on (after the submits), spread evenly over
  // `spread_s` (n / spread jobs/s).
  const absl::Time first = t0 + absl::Seconds(lead_s);
  SubmitAll(scheduler, task, n, [&](size_t i) {
    if (mode == "queued") return absl::InfinitePast();
    return first + absl::Seconds(spread_s * static_cast<double>(i) /
                                 static_cast<double>(n));
  });
  const absl::Time submitted = absl::Now();
  const uint64_t rss1 = RssBytes();
  std::printf("%s: %zu jobs submitted in %s; RSS +%.1f MiB = %.0f B/job\n",
              mode.c_str(), n, absl::FormatDuration(submitted - t0).c_str(),
              (rss1 - rss0) / 1048576.0,
              static_cast<double>(rss1 - rss0) / static_cast<double>(n));
  if (mode == "queued") return 0;
  if (submitted > first) {
    std::printf("warning: submitting took longer than the lead time\n");
  }
  // Until every job ended (bounded: the spread plus a minute).
  const absl::Time limit = first + absl::Seconds(spread_s) + absl::Minutes(1);
  while (absl::Now() < limit) {
    const v1::GetStatsResponse stats = scheduler.GetStats();
    if (stats.waiting() == 0 && stats.live() == 0) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  scheduler.StopExecutors(absl::Now() + absl::Seconds(10));
  const std::vector<absl::Duration>& late = executor.late_;
  std::printf("started %zu of %zu; lateness p50 %s p99 %s p99.9 %s max %s\n",
              late.size(), n,
              absl::FormatDuration(Percentile(late, 0.5)).c_str(),
              absl::FormatDuration(Percentile(late, 0.99)).c_str(),
              absl::FormatDuration(Percentile(late, 0.999)).c_str(),
              absl::FormatDuration(Percentile(late, 1.0)).c_str());
  return late.size() == n ? 0 : 1;
}

}  // namespace
}  // namespace jobd

int main(int argc, char** argv) {
  CLI::App app{"A million WAITING jobs: memory, start lateness, restart"};
  std::string mode = "waiting", dir = "/tmp/jobd-waiting-bench";
  size_t n = 1000000;
  double spread = 20, lead = 10;
  app.add_option("--mode", mode, "queued, waiting or restart")
      ->check(CLI::IsMember({"queued", "waiting", "restart"}));
  app.add_option("--jobs", n, "Jobs")->capture_default_str();
  app.add_option("--spread", spread,
                 "Seconds over which their due times spread")
      ->capture_default_str();
  app.add_option("--lead", lead, "Seconds before the first is due")
      ->capture_default_str();
  app.add_option("--dir", dir, "Journal directory (restart)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  return jobd::Run(mode, n, spread, lead, dir);
}
