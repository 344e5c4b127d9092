// Systemd integration: the sd_notify protocol (libsystemd) for a
// Type=notify service, and a log format journald understands.
//
//   READY=1       once jobd accepts connections
//   STATUS=...    live counts, every few seconds
//   RELOADING=1   while SIGHUP reloads the configuration, then READY=1
//   STOPPING=1    when the drain begins
//   WATCHDOG=1    every WatchdogSec/2 while the scheduler answers and jobd
//                 can accept connections (a wedged scheduler or a listener
//                 that cannot accept stops the pings: systemd restarts jobd)
//
// Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
//
// Thread-safety: all methods are thread-safe. The notifier owns its status
// thread and joins it in Stop() / the destructor.
#ifndef JOBD_SERVER_DAEMON_SYSTEMD_H_
#define JOBD_SERVER_DAEMON_SYSTEMD_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace jobd {

class SystemdNotifier {
 public:
  // `status` makes the STATUS= line and is the watchdog's liveness probe:
  // it must go through the scheduler (taking its lock). `problem` says why
  // jobd cannot serve clients now (e.g. it cannot accept connections), or
  // "": while it says something, the watchdog gets no pings and STATUS=
  // leads with it.
  explicit SystemdNotifier(std::function<std::string()> status,
                           std::function<std::string()> problem = {});
  ~SystemdNotifier();

  // True if jobd runs under a service manager that wants notifications.
  bool enabled() const { return enabled_; }
  void Ready();
  void Reloading();
  void Stopping();
  // Ends the status/watchdog thread (after Stopping, before exit).
  void Stop();

 private:
  void Loop();

  const std::function<std::string()> status_;
  const std::function<std::string()> problem_;
  const bool enabled_;
  absl::Duration watchdog_;  // Zero: no watchdog.
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// True when stderr goes to the systemd journal ($JOURNAL_STREAM matches it).
bool StderrIsJournal();

// Installs the log format: "text" is "<N>message" (sd-daemon priority
// prefixes, no time: journald adds it) when stderr is the journal, else
// timestamped colour lines; "json" is one JSON object per line
// (server/jobs/job_log.h), after "<N>" when stderr is the journal.
void ConfigureLogging(const std::string& level,
                      const std::string& format = "text");

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_SYSTEMD_H_
