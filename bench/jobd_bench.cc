// jobd_bench: what jobd costs over gRPC itself, measured in one run.
//
// Starts a bare gRPC echo server (this binary with --echo-server, in its own
// process, like jobd) and the real jobd, both on Unix sockets, then measures
//   stream:     N tiny items through one bidi stream in batches of B
//               (echo items vs no-op `echo` jobs, terminal events only)
//   round trip: R sequential request -> answer (unary echo vs one job
//               submitted on an open Submit stream and its result awaited)
//   durability: the same on fresh daemons with each --durability, and the
//               journal's round-trip goals measured interleaved (a unary
//               and a stream echo, in-memory, at-least-once and at-most-once
//               jobs, fdatasync of an append and of an overwrite: runs of
//               100 of each in turn)
// and prints a table with the ratios. See bench/README.md.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/chain_run.h"
#include "bench/dashboard_run.h"
#include "bench/fair_run.h"
#include "bench/machine.h"
#include "client/client.h"
#include "echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::bench {
namespace {

// ---------------------------------------------------------------- echo server
class EchoService final : public Echo::CallbackService {
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx,
                                  const EchoBatch* req,
                                  EchoBatch* resp) override {
    *resp = *req;
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  // Reads continuously and writes back whatever it has, one write at a time.
  class Pipe : public grpc::ServerBidiReactor<EchoBatch, EchoBatch> {
   public:
    Pipe() { StartRead(&in_); }
    void OnReadDone(bool ok) override {
      bool write = false;
      {
        absl::MutexLock lock(&mu_);
        if (!ok) {
          reads_done_ = true;
        } else {
          queue_.push_back(std::move(in_));
          write = TakeLocked();
        }
        MaybeFinishLocked();
      }
      if (write) StartWrite(&out_);
      if (ok) StartRead(&in_);
    }
    void OnWriteDone(bool ok) override {
      bool write = false;
      {
        absl::MutexLock lock(&mu_);
        writing_ = false;
        write = TakeLocked();
        MaybeFinishLocked();
      }
      if (write) StartWrite(&out_);
    }
    void OnDone() override { delete this; }

   private:
    bool TakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (writing_ || queue_.empty()) return false;
      out_.Clear();
      for (auto& m : queue_) {
        for (auto& item : *m.mutable_items())
          *out_.add_items() = std::move(item);
      }
      queue_.clear();
      writing_ = true;
      return true;
    }
    void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (reads_done_ && !writing_ && queue_.empty() && !finished_) {
        finished_ = true;
        Finish(grpc::Status::OK);
      }
    }
    EchoBatch in_, out_;
    absl::Mutex mu_;
    std::deque<EchoBatch> queue_ ABSL_GUARDED_BY(mu_);
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };
  grpc::ServerBidiReactor<EchoBatch, EchoBatch>* Stream(
      grpc::CallbackServerContext*) override {
    return new Pipe();
  }
};

int ServeEcho(const std::string& socket) {
  EchoService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server) return 1;
  std::printf("echo ready\n");
  std::fflush(stdout);
  server->Wait();  // Until killed.
  return 0;
}

// ---------------------------------------------------------------- helpers
struct Latency {
  std::vector<double> us;
  // Runs `op` (false: it failed) and adds its time if it succeeded.
  template <typename Op>
  bool Time(Op op) {
    const absl::Time t = absl::Now();
    if (!op()) return false;
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
    return true;
  }
  double Pct(double p) {
    std::sort(us.begin(), us.end());
    return us.empty() ? 0 : us[std::min(us.size() - 1, size_t(p * us.size()))];
  }
};

double Seconds(absl::Time start) {
  return absl::ToDoubleSeconds(absl::Now() - start);
}

v1::JobSpec NoopSpec() {
  v1::JobSpec s;
  s.set_task("echo");
  s.set_kind(v1::JOB_KIND_IO_BOUND);  // -> thread pool.
  return s;
}

// ---------------------------------------------------------------- echo runs
double EchoStream(Echo::Stub& stub, int n, int batch) {
  grpc::ClientContext ctx;
  auto stream = stub.Stream(&ctx);
  const absl::Time start = absl::Now();
  std::thread writer([&] {
    for (int sent = 0; sent < n;) {
      EchoBatch b;
      for (int i = 0; i < batch && sent < n; ++i, ++sent) {
        b.add_items()->set_tag(sent);
      }
      if (!stream->Write(b)) break;
    }
    stream->WritesDone();
  });
  int got = 0;
  EchoBatch b;
  while (got < n && stream->Read(&b)) got += b.items_size();
  writer.join();
  stream->Finish();
  return got / Seconds(start);
}

// One unary echo of `req`: false if it failed.
bool EchoUnaryOnce(Echo::Stub& stub, const EchoBatch& req, Latency& lat) {
  return lat.Time([&] {
    grpc::ClientContext ctx;
    EchoBatch resp;
    return stub.Unary(&ctx, req, &resp).ok();
  });
}

Latency EchoUnary(Echo::Stub& stub, int rounds) {
  Latency lat;
  EchoBatch req;
  req.add_items()->set_tag(1);
  for (int i = 0; i < rounds && EchoUnaryOnce(stub, req, lat); ++i) {
  }
  return lat;
}

// ---------------------------------------------------------------- jobd runs
double JobdStream(v1::JobService::Stub& stub, int n, int batch, int window,
                  bool terminal_only, const std::string& key = "") {
  grpc::ClientContext ctx;
  auto stream = stub.Submit(&ctx);
  v1::JobSpec spec = NoopSpec();
  spec.set_concurrency_key(key);
  const absl::Time start = absl::Now();
  std::thread writer([&] {
    for (int sent = 0; sent < n;) {
      v1::SubmitRequest req;
      if (sent == 0) {
        req.mutable_options()->set_window(window);
        req.mutable_options()->set_terminal_only(terminal_only);
      }
      for (int i = 0; i < batch && sent < n; ++i, ++sent) {
        auto* item = req.add_items();
        item->set_client_tag(sent);
        *item->mutable_spec() = spec;
      }
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  int ended = 0, failed = 0;
  v1::SubmitResponse resp;
  while (ended < n && stream->Read(&resp)) {
    for (const auto& e : resp.events()) {
      if (v1::EndsSubmitItem(e.type())) {
        ++ended;
        failed += e.type() != v1::EVENT_TYPE_SUCCEEDED;
      }
    }
  }
  const double rate = ended / Seconds(start);
  writer.join();
  stream->Finish();
  if (failed > 0)
    std::fprintf(stderr, "warning: %d jobs did not succeed\n", failed);
  return rate;
}

// What a job asks of the journal: its delivery policy, or none at all.
enum class Trip { kAtMostOnce, kAtLeastOnce, kInMemory };

// One open Submit stream on which jobs of one kind are sent one at a time,
// each awaited to its end.
class TripStream {
 public:
  TripStream(v1::JobService::Stub& stub, Trip trip)
      : stream_(stub.Submit(&ctx_)) {
    req_.mutable_options()->set_terminal_only(true);
    auto* item = req_.add_items();
    *item->mutable_spec() = NoopSpec();
    item->mutable_spec()->set_in_memory(trip == Trip::kInMemory);
    if (trip == Trip::kAtLeastOnce) {
      item->mutable_spec()->set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
    }
  }
  ~TripStream() {
    stream_->WritesDone();
    stream_->Finish();
  }
  TripStream(const TripStream&) = delete;
  TripStream& operator=(const TripStream&) = delete;

  // Submits one job and waits for its end: false if the stream broke.
  bool Once(Latency& lat) {
    req_.mutable_items(0)->set_client_tag(next_tag_++);
    return lat.Time([&] {
      if (!stream_->Write(req_)) return false;
      req_.clear_options();
      bool done = false;
      while (!done && stream_->Read(&resp_)) {
        for (const auto& e : resp_.events()) {
          done |= v1::EndsSubmitItem(e.type());
        }
      }
      return done;
    });
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
      stream_;
  v1::SubmitRequest req_;
  v1::SubmitResponse resp_;
  int next_tag_ = 0;
};

Latency JobdRoundTrip(v1::JobService::Stub& stub, int rounds,
                      Trip trip = Trip::kAtMostOnce) {
  Latency lat;
  TripStream stream(stub, trip);
  for (int i = 0; i < rounds && stream.Once(lat); ++i) {
  }
  return lat;
}

// The same no-op jobs through the client library's Map (what users call).
double ClientMap(const std::string& address, int n, int batch, int window) {
  auto client = client::Client::Connect({.address = address});
  if (!client.ok()) return 0;
  int next = 0;
  const v1::JobSpec spec = NoopSpec();
  client::MapStream m =
      (*client)->MapSpecs("echo",
                          [&](v1::JobSpec* out, bool) {
                            if (next >= n) return client::InputStatus::kEnd;
                            ++next;
                            *out = spec;
                            return client::InputStatus::kReady;
                          },
                          {.window = static_cast<uint32_t>(window),
                           .kind = v1::JOB_KIND_IO_BOUND,
                           .max_batch = batch});
  const absl::Time start = absl::Now();
  int done = 0;
  for (client::MapResult r; m.Next(&r);) done += r.ok();
  return done / Seconds(start);
}

// --------------------------------------------------------------- metrics
// No-op jobs/s through one stream on a fresh daemon, without the metrics
// endpoint or with it (--http-listen) and a scraper reading /metrics every
// `scrape_every` meanwhile (Prometheus's default is 15 s).
double MetricsRun(bool on, int n, int batch, int window, int workers,
                  absl::Duration scrape_every, int* scrapes) {
  std::vector<std::string> args = {"--durability",
                                   "none",
                                   "--log-level",
                                   "warn",
                                   "--thread-workers",
                                   std::to_string(workers),
                                   "--max-window",
                                   std::to_string(std::max(window, 1)),
                                   "--max-jobs-per-request",
                                   std::to_string(std::max(batch, 1))};
  const int port = on ? testing::FreeLoopbackPort() : -1;
  if (on) {
    args.push_back("--http-listen");
    args.push_back("127.0.0.1:" + std::to_string(port));
  }
  auto daemon = testing::Daemon::Start(args);
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return 0;
  }
  auto stub = (*daemon)->NewStub();
  JobdStream(*stub, std::min(n, 10000), batch, window, true);  // Warm-up.
  absl::Notification done;
  std::thread scraper([&] {
    if (!on) return;
    httplib::Client c("127.0.0.1", port);
    do {
      if (auto r = c.Get("/metrics"); r && r->status == 200) ++*scrapes;
    } while (!done.WaitForNotificationWithTimeout(scrape_every));
  });
  const double rate = JobdStream(*stub, n, batch, window, true);
  done.Notify();
  scraper.join();
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  return rate;
}

// ------------------------------------------------------------ keys
// No-op jobs/s through one stream on one daemon: unkeyed, with a key that
// has no limit, and with a key whose limit is the thread workers (the
// limit binds: every start waits for an end). Interleaved, best of
// `repeat` each.
int KeysRun(int n, int batch, int window, int workers, int repeat) {
  auto daemon = testing::Daemon::Start(
      {"--durability", "none", "--log-level", "warn", "--thread-workers",
       std::to_string(workers), "--max-window",
       std::to_string(std::max(window, 1)), "--max-jobs-per-request",
       std::to_string(std::max(batch, 1)), "--key-limit",
       "capped=" + std::to_string(workers)});
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return 1;
  }
  auto stub = (*daemon)->NewStub();
  JobdStream(*stub, std::min(n, 10000), batch, window, true);  // Warm-up.
  const char* const keys[] = {"", "free", "capped"};
  double best[3] = {0, 0, 0};
  for (int r = 0; r < repeat; ++r) {
    for (int k = 0; k < 3; ++k) {
      best[k] =
          std::max(best[k], JobdStream(*stub, n, batch, window, true, keys[k]));
    }
  }
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  std::printf("machine: %s, %ld cores\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("jobs=%d batch=%d window=%d workers=%d repeat=%d\n", n, batch,
              window, workers, repeat);
  std::printf("%-44s %12s %10s\n", "concurrency keys (one daemon, one stream)",
              "jobs/s", "vs none");
  const char* const names[] = {"no key", "key without a limit",
                               "key with limit = workers"};
  for (int k = 0; k < 3; ++k) {
    std::printf("%-44s %12.0f %9.3fx\n", names[k], best[k],
                best[0] > 0 ? best[k] / best[0] : 0.0);
  }
  return 0;
}

// ------------------------------------------------------------ durability
// The journal's floor: writing a 4 KiB page to a file and fdatasync()ing
// it, in the directory the daemons' journals live in (TMPDIR or /tmp). An
// append grows the file, so its fdatasync commits the new size too (on
// ext4 here, twice the time of an overwrite); an overwrite of a page of a
// file written before is what SQLite's WAL does once it has wrapped (its
// frames reuse the file after each checkpoint).
class SyncFile {
 public:
  enum class Mode { kAppend, kOverwrite };
  explicit SyncFile(Mode mode = Mode::kAppend) : mode_(mode), page_(4096, 'x') {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp != nullptr ? tmp : "/tmp") +
            "/jobd-bench-fdatasync-XXXXXX";
    fd_ = mkstemp(path_.data());
    if (fd_ >= 0 && mode_ == Mode::kOverwrite) {
      bool written = true;
      for (int i = 0; i < kPages && written; ++i) {
        written = write(fd_, page_.data(), page_.size()) ==
                  static_cast<ssize_t>(page_.size());
      }
      if (!written || fdatasync(fd_) != 0) {
        close(fd_);
        unlink(path_.c_str());
        fd_ = -1;
      }
    }
  }
  ~SyncFile() {
    if (fd_ < 0) return;
    close(fd_);
    unlink(path_.c_str());
  }
  SyncFile(const SyncFile&) = delete;
  SyncFile& operator=(const SyncFile&) = delete;

  // One write and its fdatasync: false if either failed.
  bool Once(Latency& lat) {
    if (fd_ < 0) return false;
    const off_t at = next_;
    next_ = (next_ + 4096) % (off_t{kPages} * 4096);
    return lat.Time([&] {
      const ssize_t n = mode_ == Mode::kAppend
                            ? write(fd_, page_.data(), page_.size())
                            : pwrite(fd_, page_.data(), page_.size(), at);
      return n == static_cast<ssize_t>(page_.size()) && fdatasync(fd_) == 0;
    });
  }

 private:
  static constexpr int kPages = 1024;  // 4 MiB: a WAL at its checkpoint.
  const Mode mode_;
  const std::string page_;
  std::string path_;
  int fd_ = -1;
  off_t next_ = 0;  // Overwrite: the page written next.
};

Latency Fdatasync(int rounds) {
  Latency lat;
  SyncFile file;
  for (int i = 0; i < rounds && file.Once(lat); ++i) {
  }
  return lat;
}

// The round trips the journal's goals compare, measured interleaved on one
// journaled daemon: runs of 100 of each kind in turn (a unary echo; an
// in-memory, an at-least-once and an at-most-once job; an fdatasync of an
// append and one of an overwrite), until
// each has `rounds`. Measured in one block each instead, each in its own
// second or two, this machine's drift moves one figure's p50 by a third
// against another's; in short runs taken in turn, it falls on all of them
// alike. Not one of each in turn: each would then follow another kind of
// work (a CPU back from idle, cold caches) and cost 50-80 us more, which a
// bound made of two of them (fdatasync + in-memory) would count twice.
struct InterleavedTrips {
  Latency unary, stream, memory, least, most, sync, sync_over;
};

InterleavedTrips Interleaved(Echo::Stub& echo, v1::JobService::Stub& jobd,
                             int rounds) {
  InterleavedTrips out;
  TripStream memory(jobd, Trip::kInMemory), least(jobd, Trip::kAtLeastOnce),
      most(jobd, Trip::kAtMostOnce);
  SyncFile file, file_over(SyncFile::Mode::kOverwrite);
  EchoBatch req, resp;
  req.add_items()->set_tag(1);
  grpc::ClientContext pipe_ctx;
  auto pipe = echo.Stream(&pipe_ctx);
  const std::function<bool()> kinds[] = {
      [&] { return EchoUnaryOnce(echo, req, out.unary); },
      [&] {
        return out.stream.Time(
            [&] { return pipe->Write(req) && pipe->Read(&resp); });
      },
      [&] { return memory.Once(out.memory); },
      [&] { return least.Once(out.least); },
      [&] { return most.Once(out.most); },
      [&] { return file.Once(out.sync); },
      [&] { return file_over.Once(out.sync_over); },
  };
  constexpr int kRun = 100;
  for (int done = 0; done < rounds; done += kRun) {
    for (const auto& once : kinds) {
      for (int i = done; i < std::min(done + kRun, rounds); ++i) {
        if (!once()) rounds = 0;
      }
    }
  }
  pipe->WritesDone();
  pipe->Finish();
  return out;
}

struct DurabilityRun {
  double rate = 0;      // No-op jobs/s through one stream, terminal events.
  Latency trip;         // One job at a time (at most once, the default).
  Latency least_trip;   // The same, at-least-once jobs (not with "none").
  Latency memory_trip;  // The same, in-memory jobs (not with "none").
  // With a journal: the goals' round trips interleaved (above).
  std::optional<InterleavedTrips> interleaved;
};

DurabilityRun Durability(const std::string& mode, int n, int batch, int window,
                         int rounds, int workers, Echo::Stub& echo) {
  auto daemon = testing::Daemon::Start(
      {"--durability", mode, "--log-level", "warn", "--thread-workers",
       std::to_string(workers), "--max-window",
       std::to_string(std::max(window, 1)), "--max-jobs-per-request",
       std::to_string(std::max(batch, 1))});
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    return {};
  }
  auto stub = (*daemon)->NewStub();
  JobdStream(*stub, std::min(n, 10000), batch, window, true);  // Warm-up.
  DurabilityRun run;
  run.rate = JobdStream(*stub, n, batch, window, true);
  run.trip = JobdRoundTrip(*stub, rounds);
  if (mode != "none") {
    // At-least-once jobs: no claim, their accept and end share a commit.
    run.least_trip = JobdRoundTrip(*stub, rounds, Trip::kAtLeastOnce);
    // In-memory jobs (spec.in_memory) on the same daemon: no commit waited.
    run.memory_trip = JobdRoundTrip(*stub, rounds, Trip::kInMemory);
    if (mode == "batched") run.interleaved = Interleaved(echo, *stub, rounds);
  }
  return run;
}

// Seconds from starting jobd on a journal of `n` queued jobs (left by a
// kill -9) to its ready banner, and what it logged as its restore time.
std::pair<double, std::string> Recovery(int n) {
  char tmpl[] = "/tmp/jobd-recovery-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return {0, ""};
  const std::string state = std::string(tmpl) + "/state";
  const std::vector<std::string> flags = {
      "--state-dir",      state,
      "--thread-workers", "1",
      "--max-queued",     std::to_string(2 * n),
      "--max-window",     std::to_string(std::max(n + 1, 65536)),
      "--log-level",      "info"};
  {
    auto daemon = testing::Daemon::Start(flags);
    if (!daemon.ok()) {
      std::fprintf(stderr, "%s\n",
                   std::string(daemon.status().message()).c_str());
      return {0, ""};
    }
    auto stub = (*daemon)->NewStub();
    // One long job holds the only thread; the rest queue behind it.
    grpc::ClientContext ctx;
    auto stream = stub->Submit(&ctx);
    v1::SubmitRequest req;
    req.mutable_options()->set_window(n + 1);
    auto add = [&](double ms, int tag) {
      auto* item = req.add_items();
      item->set_client_tag(tag);
      v1::JobSpec& spec = *item->mutable_spec();
      spec.set_task("sleep");
      spec.set_kind(v1::JOB_KIND_IO_BOUND);
      spec.set_executor(v1::EXECUTOR_THREAD);
      spec.add_args()->set_number_value(ms);
    };
    add(600000, 0);
    int accepted = 0;
    for (int sent = 1; sent <= n;) {
      while (req.items_size() < 4096 && sent <= n) add(1, sent++);
      stream->Write(req);
      req.Clear();
    }
    v1::SubmitResponse resp;
    while (accepted < n + 1 && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        accepted += e.type() == v1::EVENT_TYPE_ACCEPTED;
      }
    }
    if (accepted < n + 1) {
      const grpc::Status status = stream->Finish();
      std::fprintf(stderr, "recovery: %d of %d accepted: %s\n", accepted, n + 1,
                   status.error_message().c_str());
      std::error_code ec;
      std::filesystem::remove_all(tmpl, ec);
      return {0, ""};
    }
    (void)(*daemon)->Stop(SIGKILL, absl::Seconds(10));
    ctx.TryCancel();
  }
  const absl::Time start = absl::Now();
  auto daemon = testing::Daemon::Start(flags);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::string restored;
  if (daemon.ok()) {
    const std::string log = (*daemon)->Log();
    const size_t at = log.find(" job(s) restored in ");
    if (at != std::string::npos) {
      const size_t from = log.rfind(": ", at);
      restored = log.substr(from + 2, log.find('\n', at) - from - 2);
    }
    (void)(*daemon)->Stop(SIGKILL, absl::Seconds(10));
  }
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  return {seconds, restored};
}

int Run(int argc, char** argv) {
  CLI::App app{"jobd_bench: jobd vs bare gRPC echo, in one run"};
  std::string echo_socket;
  int jobs = 500000, batch = 256, rounds = 5000, workers = 2, window = 65536;
  int repeat = 3;
  app.add_option("--echo-server", echo_socket, "(internal) serve echo here");
  app.add_option("--jobs", jobs, "Items/jobs per stream run")
      ->capture_default_str();
  app.add_option("--batch", batch, "Items/jobs per message")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "Sequential round trips")
      ->capture_default_str();
  app.add_option("--workers", workers, "jobd thread workers")
      ->capture_default_str();
  app.add_option("--window", window, "jobd Submit window")
      ->capture_default_str();
  int durable_jobs = 200000, every_commit_jobs = 5000, recovery_jobs = 100000;
  app.add_option("--durable-jobs", durable_jobs,
                 "Jobs per durability run (none, batched)")
      ->capture_default_str();
  app.add_option("--every-commit-jobs", every_commit_jobs,
                 "Jobs of the every-commit run (one fsync per record)")
      ->capture_default_str();
  app.add_option("--recovery-jobs", recovery_jobs,
                 "Queued jobs in the journal for the restart-recovery run")
      ->capture_default_str();
  app.add_option("--repeat", repeat, "Runs of each stream test (best kept)")
      ->capture_default_str();
  bool dashboard_only = false;
  bool chain_only = false;
  app.add_flag("--chain", chain_only,
               "Only the chain run: --jobs no-op jobs each depending on the "
               "previous (by client tag) through one stream, dependent "
               "jobs/s, and the client-driven chain for scale");
  int viewers = 10;
  app.add_flag("--dashboard", dashboard_only,
               "Only the dashboard run: one daemon with --http-listen, the "
               "stream in phases alternating between no viewer and "
               "--viewers polling the dashboard's API as its page does; "
               "--repeat phases of each, medians");
  app.add_option("--viewers", viewers, "Dashboard viewers (--dashboard)")
      ->capture_default_str();
  bool keys_only = false;
  app.add_flag("--keys", keys_only,
               "Only the concurrency-key run: the no-op stream unkeyed, with "
               "a key without a limit and with a key limited to --workers, "
               "interleaved on one daemon, best of --repeat each");
  bool metrics_only = false;
  app.add_flag("--metrics", metrics_only,
               "Only the metrics run: the stream with the metrics endpoint "
               "off and on (scraped every second), --repeat alternating "
               "pairs, medians");
  std::string metrics_side = "both";
  app.add_option("--metrics-side", metrics_side,
                 "With --metrics: run only the 'off' or the 'on' daemons "
                 "(to count instructions of one side under perf stat)")
      ->check(CLI::IsMember({"both", "off", "on"}))
      ->capture_default_str();
  FairRunOptions fair;
  bool fair_only = false;
  app.add_flag("--fair", fair_only,
               "Only the fair-share run: two callers, one submitting 100x "
               "the other's sleep jobs, the small one's share of the starts "
               "(1:1 and 3:1); with --baseline-jobd, the same on that binary "
               "and the no-op stream without auth alternately on both");
  app.add_option("--fair-jobs", fair.jobs, "The flooding caller's jobs")
      ->capture_default_str();
  app.add_option("--baseline-jobd", fair.baseline_jobd,
                 "(--fair) a jobd binary to compare with");
  CLI11_PARSE(app, argc, argv);
  if (fair_only) {
    fair.workers = workers;
    fair.stream_jobs = jobs;
    fair.batch = batch;
    fair.window = window;
    fair.repeat = repeat;
    return RunFairBench(fair, [&](v1::JobService::Stub& stub, int n) {
      return JobdStream(stub, n, batch, window, true);
    });
  }
  if (chain_only) {
    return RunChainBench({.jobs = jobs,
                          .batch = batch,
                          .window = window,
                          .workers = workers,
                          .repeat = std::min(repeat, 3)});
  }
  if (dashboard_only) {
    return RunDashboardBench({.jobs = jobs,
                              .batch = batch,
                              .window = window,
                              .workers = workers,
                              .repeat = repeat,
                              .viewers = viewers},
                             [&](v1::JobService::Stub& stub, int n) {
                               return JobdStream(stub, n, batch, window, true);
                             });
  }
  if (keys_only) return KeysRun(jobs, batch, window, workers, repeat);
  if (metrics_only) {
    // Alternating off/on pairs on fresh daemons; medians, since a shared
    // machine's noise moves single runs by more than the cost measured.
    std::vector<double> off, on, ratio;
    int scrapes = 0;
    for (int i = 0; i < repeat; ++i) {
      off.push_back(metrics_side == "on"
                        ? 0
                        : MetricsRun(false, jobs, batch, window, workers,
                                     absl::Seconds(1), &scrapes));
      on.push_back(metrics_side == "off"
                       ? 0
                       : MetricsRun(true, jobs, batch, window, workers,
                                    absl::Seconds(1), &scrapes));
      ratio.push_back(off.back() > 0 ? on.back() / off.back() : 0.0);
      std::printf("pair %d: off %.0f on %.0f jobs/s (%.3fx)\n", i + 1,
                  off.back(), on.back(), ratio.back());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      const size_t n = v.size();
      return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    };
    std::printf("machine: %s, %ld cores\n", CpuModel().c_str(),
                sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("jobs=%d batch=%d window=%d workers=%d pairs=%d\n", jobs, batch,
                window, workers, repeat);
    std::printf("%-44s %12s %10s\n", "metrics (fresh daemons, one stream)",
                "jobs/s", "vs off");
    std::printf("%-44s %12.0f %9.3fx  (median)\n", "off", median(off), 1.0);
    std::printf("%-44s %12.0f %9.3fx  (median of pair ratios; %d scrapes)\n",
                "on (--http-listen, scraped every 1 s)", median(on),
                median(ratio), scrapes);
    return 0;
  }
  if (!echo_socket.empty()) return ServeEcho(echo_socket);

  char tmpl[] = "/tmp/jobd-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof(self) - 1) <= 0) return 1;
  auto echo =
      testing::SpawnReady({self, "--echo-server", dir + "/echo.sock"},
                          "echo ready", dir + "/echo.log", absl::Seconds(20));
  if (!echo.ok()) {
    std::fprintf(stderr, "%s\n", std::string(echo.status().message()).c_str());
    return 1;
  }
  // Without the journal: these runs measure the dispatch path against
  // gRPC; what the journal adds is measured in the durability runs.
  auto daemon = testing::Daemon::Start(
      {"--durability", "none", "--thread-workers", std::to_string(workers),
       "--log-level", "warn", "--max-window",
       std::to_string(std::max(window, 1)), "--max-jobs-per-request",
       std::to_string(std::max(batch, 1))});
  if (!daemon.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(daemon.status().message()).c_str());
    (void)testing::StopProcess(echo->pid, SIGTERM, absl::Seconds(5));
    return 1;
  }
  auto echo_stub = Echo::NewStub(grpc::CreateChannel(
      "unix:" + dir + "/echo.sock", grpc::InsecureChannelCredentials()));
  auto jobd_stub = (*daemon)->NewStub();

  utsname u{};
  uname(&u);
  std::printf("machine: %s, %ld cores, %s %s\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release);
  std::printf("jobs=%d batch=%d window=%d workers=%d rounds=%d repeat=%d\n\n",
              jobs, batch, window, workers, rounds, repeat);

  // Warm up both paths.
  EchoStream(*echo_stub, 10000, batch);
  JobdStream(*jobd_stub, 10000, batch, window, true);

  double echo_rate = 0, jobd_rate = 0, jobd_all_rate = 0, map_rate = 0;
  for (int i = 0; i < repeat; ++i) {
    echo_rate = std::max(echo_rate, EchoStream(*echo_stub, jobs, batch));
    jobd_rate =
        std::max(jobd_rate, JobdStream(*jobd_stub, jobs, batch, window, true));
    jobd_all_rate = std::max(
        jobd_all_rate, JobdStream(*jobd_stub, jobs, batch, window, false));
    map_rate = std::max(
        map_rate, ClientMap((*daemon)->unix_address(), jobs, batch, window));
  }
  Latency unary = EchoUnary(*echo_stub, rounds);
  Latency trip = JobdRoundTrip(*jobd_stub, rounds);

  std::printf("%-48s %14s %12s\n", "stream (one bidi stream, batched)",
              "items/s", "vs echo");
  std::printf("%-48s %14.0f %12s\n", "bare gRPC echo stream", echo_rate,
              "1.00x");
  std::printf("%-48s %14.0f %11.2fx\n",
              "jobd Submit, no-op jobs, terminal_only", jobd_rate,
              jobd_rate / echo_rate);
  std::printf("%-48s %14.0f %11.2fx\n", "jobd Submit, no-op jobs, all events",
              jobd_all_rate, jobd_all_rate / echo_rate);
  std::printf("%-48s %14.0f %11.2fx\n", "jobd_client Map, no-op jobs", map_rate,
              map_rate / echo_rate);
  std::printf("\n%-48s %10s %10s %10s\n", "round trip (sequential)", "p50 us",
              "p99 us", "p50 ratio");
  const double u50 = unary.Pct(0.5), u99 = unary.Pct(0.99);
  const double t50 = trip.Pct(0.5), t99 = trip.Pct(0.99);
  std::printf("%-48s %10.1f %10.1f %10s\n", "bare gRPC unary echo", u50, u99,
              "1.00x");
  std::printf("%-48s %10.1f %10.1f %9.2fx\n",
              "jobd submit -> result (open stream)", t50, t99, t50 / u50);
  std::fflush(stdout);

  // Durability: the same no-op stream with each --durability, in this run;
  // one job at a time at most once (the default), at least once, in memory.
  std::printf("\n%-24s %8s %10s %8s %13s %13s %16s\n",
              "durability (fresh daemons)", "jobs", "jobs/s", "vs none",
              "at-most p50us", "at-least p50", "in-memory p50us");
  auto p50 = [](Latency& l) {
    return l.us.empty() ? std::string("-")
                        : absl::StrFormat("%.1f", l.Pct(0.5));
  };
  double none_rate = 0;
  DurabilityRun batched;
  for (const std::string mode : {"none", "batched", "every-commit"}) {
    const int n = mode == "every-commit" ? every_commit_jobs : durable_jobs;
    DurabilityRun d =
        Durability(mode, n, batch, window, rounds / 5, workers, *echo_stub);
    if (mode == "none") none_rate = d.rate;
    std::printf("%-24s %8d %10.0f %7.2fx %13.1f %13s %16s\n", mode.c_str(), n,
                d.rate, none_rate > 0 ? d.rate / none_rate : 0.0,
                d.trip.Pct(0.5), p50(d.least_trip).c_str(),
                d.memory_trip.us.empty()
                    ? "-"
                    : absl::StrFormat("%.1f (%.2fx)", d.memory_trip.Pct(0.5),
                                      d.memory_trip.Pct(0.5) / u50)
                          .c_str());
    if (mode == "batched") batched = std::move(d);
  }
  // The goals of a journaled job's round trip, against the disk's own
  // fdatasync measured now: at least once, one commit (fdatasync + the
  // in-memory trip); at most once, two.
  Latency sync = Fdatasync(rounds / 5);
  const double f50 = sync.Pct(0.5), m50 = batched.memory_trip.Pct(0.5);
  std::printf(
      "fdatasync of a 4 KiB append: p50 %.1f us, p99 %.1f us\n"
      "batched at-least-once p50 %.1f us vs fdatasync + in-memory %.1f us "
      "(%.2fx)\n"
      "batched at-most-once  p50 %.1f us vs 2 x fdatasync + in-memory %.1f us "
      "(%.2fx)\n",
      f50, sync.Pct(0.99), batched.least_trip.Pct(0.5), f50 + m50,
      batched.least_trip.Pct(0.5) / (f50 + m50), batched.trip.Pct(0.5),
      2 * f50 + m50, batched.trip.Pct(0.5) / (2 * f50 + m50));
  if (batched.interleaved.has_value()) {
    // The same goals, their figures taken in the same runs (Interleaved).
    InterleavedTrips& in = *batched.interleaved;
    const double iu = in.unary.Pct(0.5), ie = in.stream.Pct(0.5),
                 im = in.memory.Pct(0.5), il = in.least.Pct(0.5),
                 io = in.most.Pct(0.5), is = in.sync.Pct(0.5),
                 iw = in.sync_over.Pct(0.5);
    std::printf(
        "interleaved, %zu of each in runs of 100, on the batched daemon, p50 "
        "us:\n"
        "  unary echo %.1f; echo on an open stream %.1f; fdatasync %.1f\n"
        "  in-memory job %.1f (%.2fx the unary echo, %.2fx the stream's)\n"
        "  at-least-once %.1f vs fdatasync + in-memory %.1f (%.2fx)\n"
        "  at-most-once  %.1f vs 2 x fdatasync + in-memory %.1f (%.2fx)\n"
        "  fdatasync of an overwrite (the journal's, once its WAL has "
        "wrapped) %.1f:\n"
        "  at-least-once vs it + in-memory %.1f (%.2fx), at-most-once vs 2 x "
        "it + in-memory %.1f (%.2fx)\n",
        std::min({in.unary.us.size(), in.stream.us.size(), in.memory.us.size(),
                  in.least.us.size(), in.most.us.size(), in.sync.us.size(),
                  in.sync_over.us.size()}),
        iu, ie, is, im, im / iu, im / ie, il, is + im, il / (is + im), io,
        2 * is + im, io / (2 * is + im), iw, iw + im, il / (iw + im),
        2 * iw + im, io / (2 * iw + im));
  }
  const auto [ready_s, restored] = Recovery(recovery_jobs);
  std::printf(
      "\nrestart with %d queued jobs in the journal: ready in %.2f s\n"
      "  its log: %s\n",
      recovery_jobs, ready_s, restored.c_str());
  std::fflush(stdout);

  (void)testing::StopProcess(echo->pid, SIGTERM, absl::Seconds(5));
  (void)(*daemon)->Stop(SIGTERM, absl::Seconds(15));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) { return jobd::bench::Run(argc, argv); }
