#include "server/daemon/systemd.h"

#include <pthread.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "server/jobs/job_log.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

constexpr absl::Duration kStatusInterval = absl::Seconds(5);

// %Q: the sd-daemon priority of the message's level ("<3>" for errors).
class PriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPriority[] = {
        SD_DEBUG, SD_DEBUG, SD_INFO, SD_WARNING, SD_ERR, SD_CRIT, SD_INFO};
    const char* p = kPriority[static_cast<int>(msg.level) % 7];
    dest.append(p, p + std::char_traits<char>::length(p));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return spdlog::details::make_unique<PriorityFlag>();
  }
};

}  // namespace

bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long dev = 0, ino = 0;
  return std::sscanf(stream, "%lu:%lu", &dev, &ino) == 2 &&
         dev == static_cast<unsigned long>(st.st_dev) &&
         ino == static_cast<unsigned long>(st.st_ino);
}

void ConfigureLogging(const std::string& level, const std::string& format) {
  auto logger = spdlog::stderr_color_mt("jobd");
  spdlog::set_default_logger(logger);
  if (format == "json") {
    spdlog::set_formatter(MakeJsonLogFormatter(StderrIsJournal()));
    SetJsonLogFormat(true);
  } else if (StderrIsJournal()) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<PriorityFlag>('Q').set_pattern("%Q%v");
    spdlog::set_formatter(std::move(formatter));
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

SystemdNotifier::SystemdNotifier(std::function<std::string()> status,
                                 std::function<std::string()> problem)
    : status_(std::move(status)),
      problem_(std::move(problem)),
      enabled_(std::getenv("NOTIFY_SOCKET") != nullptr) {
  uint64_t usec = 0;
  if (enabled_ && sd_watchdog_enabled(0, &usec) > 0) {
    watchdog_ = absl::Microseconds(usec);
  }
  if (enabled_) thread_ = std::thread([this] { Loop(); });
}

SystemdNotifier::~SystemdNotifier() { Stop(); }

void SystemdNotifier::Ready() {
  if (!enabled_) return;
  sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=%s", getpid(), status_().c_str());
}

void SystemdNotifier::Reloading() {
  if (enabled_) sd_notify(0, "RELOADING=1\nSTATUS=reloading configuration");
}

void SystemdNotifier::Stopping() {
  if (enabled_) sd_notify(0, "STOPPING=1\nSTATUS=draining");
}

void SystemdNotifier::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void SystemdNotifier::Loop() {
  pthread_setname_np(pthread_self(), "jobd-notify");
  const absl::Duration tick = watchdog_ > absl::ZeroDuration()
                                  ? std::min(watchdog_ / 2, kStatusInterval)
                                  : kStatusInterval;
  absl::Time next_status = absl::Now();
  bool had_problem = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]()
                          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), tick)) return;
    }
    // The probe goes through the scheduler's lock: if it hangs, so do the
    // pings, and systemd's watchdog restarts jobd.
    const std::string status = status_();
    const std::string problem = problem_ ? problem_() : std::string();
    std::string message;
    if (watchdog_ > absl::ZeroDuration() && problem.empty()) {
      message += "WATCHDOG=1\n";
    }
    if (absl::Now() >= next_status || problem.empty() == had_problem) {
      message +=
          "STATUS=" + (problem.empty() ? status : problem + "; " + status);
      next_status = absl::Now() + kStatusInterval;
    }
    had_problem = !problem.empty();
    if (!message.empty()) sd_notify(0, message.c_str());
  }
}

}  // namespace jobd
