// memory_bench: what hostile or careless callers cost the daemon in bytes —
// its RSS and its journal's size — each workload on a fresh jobd with the
// same extra flags (bench/README.md "Byte budgets"):
//   retained: N `echo` jobs of a P-byte payload through one Submit stream
//             whose client reads everything; RSS before, peak and after,
//             the journal's size, the retained jobs and bytes.
//   unread:   a Submit stream that sends such jobs for T seconds and never
//             reads: the daemon's RSS while it is ignored.
//   streams:  W WatchJobs (all jobs) and S Submit streams on one
//             connection, never read, while J small jobs run through another
//             stream; then every stream is closed: RSS before, with them
//             open, and after they closed (sampled until it settles).
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/daemon_harness.h"

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

std::string Mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

std::unique_ptr<testing::Daemon> StartDaemon(
    const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--log-level", "warn", "--process-workers",
                                   "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto daemon = testing::Daemon::Start(args);
  if (!daemon.ok()) {
    std::fprintf(stderr, "jobd: %s\n", daemon.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(daemon);
}

std::shared_ptr<grpc::Channel> Channel(const testing::Daemon& daemon) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(daemon.unix_address(),
                                   grpc::InsecureChannelCredentials(), args);
}

v1::GetStatsResponse Stats(v1::JobService::Stub& stub) {
  grpc::ClientContext ctx;
  testing::Deadline(ctx, absl::Seconds(10));
  v1::GetStatsResponse stats;
  (void)stub.GetStats(&ctx, {}, &stats);
  return stats;
}

std::string JournalLine(const v1::GetStatsResponse& s) {
  if (!s.has_journal()) return "no journal";
  return absl::StrCat("journal ", Mb(s.journal().file_bytes()), " + WAL ",
                      Mb(s.journal().wal_bytes()), ", ", s.journal().rows(),
                      " rows, healthy ", s.journal().healthy() ? "yes" : "NO");
}

v1::JobSpec Echo(size_t payload) {
  v1::JobSpec spec = testing::Spec("echo");
  spec.set_payload(std::string(payload, 'x'));
  return spec;
}

void Retained(const std::vector<std::string>& flags, int jobs, size_t payload) {
  auto daemon = StartDaemon(flags);
  auto stub = v1::JobService::NewStub(Channel(*daemon));
  const uint64_t rss0 = ProcStatusBytes(daemon->pid(), "VmRSS");
  grpc::ClientContext ctx;
  auto stream = stub->Submit(&ctx);
  const absl::Time start = absl::Now();
  std::thread writer([&] {
    const v1::JobSpec spec = Echo(payload);
    for (int i = 0; i < jobs; ++i) {
      v1::SubmitRequest req;
      if (i == 0) req.mutable_options()->set_terminal_only(true);
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = spec;
      if (!stream->Write(req)) return;
    }
    stream->WritesDone();
  });
  int ok = 0, rejected = 0;
  std::string first_rejection;
  v1::SubmitResponse resp;
  while (stream->Read(&resp)) {
    for (const v1::JobEvent& e : resp.events()) {
      ok += e.type() == v1::EVENT_TYPE_SUCCEEDED;
      if (e.type() == v1::EVENT_TYPE_REJECTED) {
        if (rejected++ == 0) first_rejection = e.error().message();
      }
    }
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  const uint64_t hwm = ProcStatusBytes(daemon->pid(), "VmHWM");
  const uint64_t rss = ProcStatusBytes(daemon->pid(), "VmRSS");
  const v1::GetStatsResponse s = Stats(*stub);
  std::printf("retained: %d x echo of %zu B, client reads all, %.1f s\n", jobs,
              payload, wall);
  std::printf("  %d succeeded, %d rejected%s%s; stream %s\n", ok, rejected,
              rejected > 0 ? " (first: " : "",
              rejected > 0 ? (first_rejection + ")").c_str() : "",
              status.ok() ? "OK" : status.error_message().c_str());
  std::printf("  RSS %s before, peak %s, %s after; %llu retained\n",
              Mb(rss0).c_str(), Mb(hwm).c_str(), Mb(rss).c_str(),
              static_cast<unsigned long long>(s.retained()));
  std::printf("  %s\n", JournalLine(s).c_str());
}

void Unread(const std::vector<std::string>& flags, int seconds,
            size_t payload) {
  auto daemon = StartDaemon(flags);
  auto stub = v1::JobService::NewStub(Channel(*daemon));
  const uint64_t rss0 = ProcStatusBytes(daemon->pid(), "VmRSS");
  grpc::ClientContext ctx;
  auto stream = stub->Submit(&ctx);
  std::atomic<int> written{0};
  std::thread writer([&] {
    const v1::JobSpec spec = Echo(payload);
    for (int i = 0;; ++i) {
      v1::SubmitRequest req;
      auto* item = req.add_items();
      item->set_client_tag(i);
      *item->mutable_spec() = spec;
      if (!stream->Write(req)) return;  // Blocks once jobd stops reading.
      ++written;
    }
  });
  uint64_t peak = 0;
  for (int i = 0; i < seconds * 10; ++i) {
    absl::SleepFor(absl::Milliseconds(100));  // Sampling RSS over time.
    peak = std::max(peak, ProcStatusBytes(daemon->pid(), "VmRSS"));
  }
  const v1::GetStatsResponse s = Stats(*stub);
  ctx.TryCancel();
  writer.join();
  (void)stream->Finish();
  std::printf("unread: a Submit stream of echo %zu B never read, %d s\n",
              payload, seconds);
  std::printf("  %d requests written, %llu jobs accepted\n", written.load(),
              static_cast<unsigned long long>(s.accepted()));
  std::printf("  RSS %s before, at most %s while ignored\n", Mb(rss0).c_str(),
              Mb(peak).c_str());
  std::printf("  %s\n", JournalLine(s).c_str());
}

void Streams(const std::vector<std::string>& flags, int watchers,
             int submitters, int jobs, size_t payload, int settle_s) {
  // Every stream on one connection, as one caller: the limits that keep a
  // caller from doing that (1,024 calls per connection, 256 streams per
  // caller, 4,096 in all by default) would queue or refuse them, and this
  // run measures what they cost open.
  std::vector<std::string> with_room = flags;
  const std::string room = std::to_string(watchers + submitters + 16);
  for (const char* limit : {"--max-calls-per-connection",
                            "--max-streams-per-caller", "--max-streams"}) {
    with_room.insert(with_room.end(), {limit, room});
  }
  auto daemon = StartDaemon(with_room);
  auto channel = Channel(*daemon);
  auto stub = v1::JobService::NewStub(channel);
  const uint64_t rss0 = ProcStatusBytes(daemon->pid(), "VmRSS");
  struct Open {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::WatchJobsResponse>> watch;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
        submit;
  };
  std::vector<std::unique_ptr<Open>> open;
  for (int i = 0; i < watchers; ++i) {
    auto o = std::make_unique<Open>();
    v1::WatchJobsRequest req;
    req.set_include_progress(true);
    o->watch = stub->WatchJobs(&o->ctx, req);
    open.push_back(std::move(o));
  }
  for (int i = 0; i < submitters; ++i) {
    auto o = std::make_unique<Open>();
    o->submit = stub->Submit(&o->ctx);
    v1::SubmitRequest req;
    auto* item = req.add_items();
    item->set_client_tag(1);
    *item->mutable_spec() = Echo(payload);
    o->submit->Write(req);
    open.push_back(std::move(o));
  }
  // Small jobs through a stream that reads: every unread watcher gets their
  // events.
  {
    grpc::ClientContext ctx;
    auto stream = stub->Submit(&ctx);
    const v1::JobSpec spec = Echo(payload);
    for (int i = 0; i < jobs; i += 256) {
      v1::SubmitRequest req;
      if (i == 0) req.mutable_options()->set_terminal_only(true);
      for (int k = i; k < std::min(jobs, i + 256); ++k) {
        auto* item = req.add_items();
        item->set_client_tag(k);
        *item->mutable_spec() = spec;
      }
      stream->Write(req);
    }
    stream->WritesDone();
    v1::SubmitResponse resp;
    while (stream->Read(&resp)) {
    }
    (void)stream->Finish();
  }
  const uint64_t with_streams = ProcStatusBytes(daemon->pid(), "VmRSS");
  const absl::Time closed_at = absl::Now();
  for (auto& o : open) o->ctx.TryCancel();
  for (auto& o : open) {
    if (o->watch) (void)o->watch->Finish();
    if (o->submit) (void)o->submit->Finish();
  }
  open.clear();
  const uint64_t closed = ProcStatusBytes(daemon->pid(), "VmRSS");
  uint64_t settled = closed;
  absl::Duration settle_time;
  for (int i = 0; i < settle_s * 10; ++i) {
    absl::SleepFor(absl::Milliseconds(100));  // Sampling RSS over time.
    const uint64_t now = ProcStatusBytes(daemon->pid(), "VmRSS");
    if (now < settled) {
      settled = now;
      settle_time = absl::Now() - closed_at;
    }
  }
  std::printf(
      "streams: %d WatchJobs + %d Submit streams on one connection, unread, "
      "%d jobs of %zu B\n",
      watchers, submitters, jobs, payload);
  std::printf(
      "  RSS %s before, %s with them open, %s when closed, %s lowest within "
      "%d s (at %s)\n",
      Mb(rss0).c_str(), Mb(with_streams).c_str(), Mb(closed).c_str(),
      Mb(settled).c_str(), settle_s,
      absl::FormatDuration(absl::Trunc(settle_time, absl::Milliseconds(100)))
          .c_str());
}

int Main(int argc, char** argv) {
  CLI::App app{"memory_bench: RSS and journal size under byte-heavy callers"};
  int retained = 1500, unread_s = 25, watchers = 3000, submitters = 2000,
      stream_jobs = 2000, settle_s = 30;
  size_t payload = 1 << 20, small = 100;
  std::vector<std::string> flags;
  std::string only;
  app.add_option("--retained", retained, "Jobs of the retained run")
      ->capture_default_str();
  app.add_option("--payload", payload, "Payload of the big echo jobs")
      ->capture_default_str();
  app.add_option("--unread-seconds", unread_s, "Length of the unread run")
      ->capture_default_str();
  app.add_option("--watchers", watchers)->capture_default_str();
  app.add_option("--submitters", submitters)->capture_default_str();
  app.add_option("--stream-jobs", stream_jobs)->capture_default_str();
  app.add_option("--small", small, "Payload of the streams run's jobs")
      ->capture_default_str();
  app.add_option("--settle-seconds", settle_s)->capture_default_str();
  app.add_option("--only", only, "retained, unread or streams");
  app.add_option("--jobd-flag", flags,
                 "A flag for every daemon (repeat; e.g. --jobd-flag=--tcp "
                 "--jobd-flag=none)");
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("memory_bench on %s, %ld cores; jobd flags: %s\n\n",
              CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN),
              flags.empty() ? "(defaults)" : absl::StrJoin(flags, " ").c_str());
  if (only.empty() || only == "retained") Retained(flags, retained, payload);
  if (only.empty() || only == "unread") Unread(flags, unread_s, payload);
  if (only.empty() || only == "streams") {
    Streams(flags, watchers, submitters, stream_jobs, small, settle_s);
  }
  return 0;
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) { return jobd::bench::Main(argc, argv); }
