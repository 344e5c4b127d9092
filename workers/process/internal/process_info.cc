#include "workers/process/internal/process_info.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "fmt/format.h"

namespace jobd {

uint64_t ReadRssBytes(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/statm", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<uint64_t>(resident) * sysconf(_SC_PAGESIZE);
}

std::string ProcessStateText(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return "";
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // "PID (COMM) STATE ...": COMM may hold anything, so after the last ')'.
  const char* paren = std::strrchr(buf, ')');
  if (paren == nullptr || paren[1] != ' ' || paren[2] == '\0') return "";
  switch (paren[2]) {
    case 'T':
      return "was stopped (by SIGSTOP or another stop signal)";
    case 't':
      return "was stopped by a debugger (ptrace)";
    case 'D':
      return "was stuck in an uninterruptible system call (state D)";
    case 'Z':
    case 'X':
      return "was exiting";
    default:
      return fmt::format("was running (state {})", paren[2]);
  }
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  const char* text = strsignal(sig);
  return fmt::format("SIG{} ({})", abbrev ? abbrev : std::to_string(sig),
                     text ? text : "unknown signal");
}

std::string MiB(uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

WorkerExit DescribeWorkerExit(int wait_status, bool jobd_killed) {
  WorkerExit exit;
  if (wait_status < 0) {
    exit.how =
        "ended (its exit status is unknown: its fork server was replaced)";
  } else if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    exit.how = "was killed by signal " + SignalName(sig);
    if (sig == SIGKILL && !jobd_killed) {
      exit.reason = v1::ERROR_REASON_OUT_OF_MEMORY;
      exit.how +=
          ", which jobd did not send: most likely the kernel's OOM killer";
    } else if (sig == SIGXCPU) {
      exit.how += ": it used up its CPU time limit (max_worker_cpu_seconds)";
    }
  } else if (WIFEXITED(wait_status)) {
    exit.how = fmt::format("exited with code {}", WEXITSTATUS(wait_status));
  }
  return exit;
}

}  // namespace jobd
