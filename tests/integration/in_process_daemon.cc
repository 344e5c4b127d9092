#include "tests/integration/in_process_daemon.h"

#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "spdlog/sinks/base_sink.h"
#include "spdlog/spdlog.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::testing {
namespace {

// The log of this process's daemons, kept in memory (up to kMaxBytes; the
// rest is counted, not kept). Cleared when a daemon starts while none runs.
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  static constexpr size_t kMaxBytes = size_t{64} << 20;

  // Where the next line will start.
  size_t Mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    return text_.size();
  }
  std::string Since(size_t mark) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out = text_.substr(std::min(mark, text_.size()));
    if (dropped_ > 0) {
      out += "[" + std::to_string(dropped_) + " bytes of log not kept]\n";
    }
    return out;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    text_.clear();
    dropped_ = 0;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    if (text_.size() + line.size() > kMaxBytes) {
      dropped_ += line.size();
      return;
    }
    text_.append(line.data(), line.size());
  }
  void flush_() override {}

 private:
  std::string text_;
  size_t dropped_ = 0;
};

struct Logs {
  absl::Mutex mu;
  std::shared_ptr<CaptureSink> sink ABSL_GUARDED_BY(mu);
  int live ABSL_GUARDED_BY(mu) = 0;  // Harnesses alive.
};

Logs& TheLogs() {
  static Logs* logs = new Logs();  // Never destroyed: loggers outlive tests.
  return *logs;
}

// Installs the capturing logger (once) at `level`; returns where the log
// of a daemon starting now begins.
size_t AttachLog(const std::string& level) {
  Logs& logs = TheLogs();
  absl::MutexLock lock(&logs.mu);
  if (logs.sink == nullptr) {
    logs.sink = std::make_shared<CaptureSink>();
    auto logger = std::make_shared<spdlog::logger>("jobd", logs.sink);
    logger->flush_on(spdlog::level::err);
    spdlog::set_default_logger(logger);
    // A test's writes to a client that went away are errors, not signals.
    signal(SIGPIPE, SIG_IGN);
  }
  if (logs.live++ == 0) logs.sink->Clear();
  spdlog::set_level(spdlog::level::from_str(level));
  return logs.sink->Mark();
}

void DetachLog() {
  Logs& logs = TheLogs();
  absl::MutexLock lock(&logs.mu);
  --logs.live;
}

std::string LogSince(size_t mark) {
  Logs& logs = TheLogs();
  absl::MutexLock lock(&logs.mu);
  return logs.sink == nullptr ? "" : logs.sink->Since(mark);
}

}  // namespace

absl::StatusOr<std::unique_ptr<InProcessDaemon>> InProcessDaemon::Start(
    std::vector<std::string> extra_args) {
  auto d = std::unique_ptr<InProcessDaemon>(new InProcessDaemon());
  char tmpl[] = "/tmp/jobd-test-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  d->dir_ = tmpl;
  std::vector<std::string> args = DaemonArgs("jobd", d->dir_, extra_args);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  absl::StatusOr<ParsedArgs> parsed =
      ParseConfig(static_cast<int>(args.size()), argv.data());
  if (!parsed.ok()) return parsed.status();
  if (parsed->exit_now) return absl::InvalidArgumentError("--help/--version");
  DaemonConfig config = parsed->config;
  // The fork server is jobd's, executed: this process is not jobd.
  config.process_pool.self_exe = JobdPath();

  d->log_mark_ = AttachLog(config.log_level);
  d->log_attached_ = true;
  absl::StatusOr<std::unique_ptr<jobd::Daemon>> daemon =
      jobd::Daemon::Start(std::move(config));
  if (!daemon.ok()) return daemon.status();
  d->daemon_ = *std::move(daemon);
  for (const std::string& addr : d->daemon_->listening()) {
    (addr.starts_with("unix:") ? d->unix_address_ : d->tcp_address_) = addr;
  }
  return d;
}

InProcessDaemon::~InProcessDaemon() {
  if (daemon_ != nullptr) {
    daemon_->Stop();
    daemon_.reset();
  }
  if (::testing::Test::HasFailure()) {
    const std::string log = Log();
    constexpr size_t kTail = 32 << 10;
    std::fprintf(
        stderr, "--- the in-process jobd's log (its end) ---\n%s\n",
        log.substr(log.size() > kTail ? log.size() - kTail : 0).c_str());
  }
  if (log_attached_) DetachLog();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::unique_ptr<v1::JobService::Stub> InProcessDaemon::NewStub() const {
  grpc::ChannelArguments args;  // Tests may raise the daemon's limit.
  args.SetMaxReceiveMessageSize(256 << 20);
  return v1::JobService::NewStub(grpc::CreateCustomChannel(
      unix_address_, grpc::InsecureChannelCredentials(), args));
}

bool InProcessDaemon::WaitStopRequested(absl::Duration timeout) {
  return daemon_->WaitStopRequested(absl::Now() + timeout);
}

DaemonStopped InProcessDaemon::Stop() { return daemon_->Stop(); }

std::string InProcessDaemon::Log() const {
  return log_attached_ ? LogSince(log_mark_) : "";
}

}  // namespace jobd::testing
