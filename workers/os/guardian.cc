#include "workers/os/guardian.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace jobd {
namespace {

int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// Sends `sig` to the process a pidfd or a /proc/PID directory fd names
// (never to a later process that reused its pid).
bool SendSignal(int fd, int sig) {
  return syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0) == 0;
}

// Up to `limit` bytes of the file `name` under directory `dir`.
std::string ReadAt(int dir, const char* name, size_t limit) {
  std::string out;
  UniqueFd fd(openat(dir, name, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return out;
  char buf[8192];
  while (out.size() < limit) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// The numbers in `text`, separated by blanks.
std::vector<uint64_t> Numbers(const std::string& text) {
  std::vector<uint64_t> out;
  std::istringstream in(text);
  for (uint64_t n = 0; in >> n;) out.push_back(n);
  return out;
}

std::vector<pid_t> ParsePids(const std::string& text) {
  std::vector<pid_t> pids;
  for (uint64_t n : Numbers(text)) {
    if (n > 0 && n < (1u << 31)) pids.push_back(static_cast<pid_t>(n));
  }
  return pids;
}

// The numeric fields of /proc/PID/stat after the 3rd (state): [0] is the
// 4th (ppid), [18] the 22nd (starttime). Empty if there is no such process.
std::vector<uint64_t> StatFields(pid_t pid) {
  UniqueFd dir(open(absl::StrCat("/proc/", pid).c_str(),
                    O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  if (!dir.valid()) return {};
  const std::string stat = ReadAt(dir.get(), "stat", 4096);
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 >= stat.size()) return {};
  return Numbers(stat.substr(close + 4));  // Past ") S ".
}

// The guardian's children: processes that lost their parent inside its
// namespace (it starts none itself).
std::vector<pid_t> OwnChildren() {
  UniqueFd self(open("/proc/thread-self", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  return self.valid() ? ParsePids(ReadAt(self.get(), "children", 1 << 20))
                      : std::vector<pid_t>();
}

// Reaps the children that ended; false if it has none left at all.
bool ReapAll() {
  pid_t pid;
  while ((pid = waitpid(-1, nullptr, WNOHANG)) > 0) {
  }
  return !(pid < 0 && errno == ECHILD);
}

// Kills every child (and, as they are reparented here in turn, theirs).
void SweepChildren() {
  for (int pass = 0; pass < 100; ++pass) {
    // Mostly there is none (a program left nothing behind): then the sweep
    // costs one system call, not a read of /proc.
    if (!ReapAll()) return;
    const std::vector<pid_t> children = OwnChildren();
    if (children.empty()) return;
    for (pid_t child : children) {
      UniqueFd dir(open(absl::StrCat("/proc/", child).c_str(),
                        O_DIRECTORY | O_RDONLY | O_CLOEXEC));
      if (dir.valid()) SendSignal(dir.get(), SIGKILL);
    }
    poll(nullptr, 0, 5);
  }
}

[[noreturn]] void RunGuardian(int notify_fd, int ready_fd, bool namespaced,
                              const std::string& entry) {
  // In a namespace of its own, jobd's end is its end (and everything in
  // it dies with it); else it outlives jobd long enough to clean up.
  if (namespaced) prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "jobd-guardian");
  setsid();  // No terminal's signals.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT, SIGTSTP, SIGTTIN,
                  SIGTTOU, SIGUSR1, SIGUSR2}) {
    signal(sig, SIG_IGN);
  }
  char state = 'N';  // No namespaces.
  if (namespaced) {
    state = 'P';  // A PID namespace; and a /proc of it, if it mounts:
    if (unshare(CLONE_NEWNS) == 0 &&
        mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) == 0 &&
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) == 0) {
      state = 'M';
    }
  }
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3 && null_fd >= 0; ++fd) dup2(null_fd, fd);
  (void)!write(ready_fd, &state, 1);
  if (notify_fd > 3) close_range(3, notify_fd - 1, 0);
  close_range(notify_fd + 1, ~0U, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  for (;;) {
    pollfd p{.fd = notify_fd, .events = POLLIN};
    const int r = poll(&p, 1, 1000);
    if (r < 0 && errno != EINTR) break;
    if (r > 0) {
      char buf[512];
      const ssize_t n = read(notify_fd, buf, sizeof(buf));
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) break;
    }
    if (namespaced) {
      SweepChildren();
    } else {
      ReapAll();
    }
  }
  // jobd is gone. In the namespace, leaving is enough: the kernel kills the
  // rest. Else find this run's programs by their environment.
  if (!namespaced) KillProcessesWithEnv(entry, absl::Seconds(10));
  _exit(0);
}

}  // namespace

std::string NewInstanceId() {
  unsigned char bytes[16] = {};
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) abort();  // No randomness at all: nothing sane to do.
    got += static_cast<size_t>(n);
  }
  std::string id;
  for (unsigned char b : bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

absl::StatusOr<Guardian> StartGuardian(const std::string& instance_id) {
  int notify[2], ready[2];
  if (pipe2(notify, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  UniqueFd notify_read(notify[0]), notify_write(notify[1]);
  if (pipe2(ready, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  // The next child is the init of a new PID namespace, if jobd may make
  // one (CAP_SYS_ADMIN); jobd's later children go back to its own.
  UniqueFd own_ns(open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
  const bool namespaced = own_ns.valid() && unshare(CLONE_NEWPID) == 0;
  const std::string entry = absl::StrCat(kInstanceEnv, "=", instance_id);
  const pid_t pid = fork();
  if (pid == 0) {
    notify_write.reset();
    ready_read.reset();
    RunGuardian(notify_read.release(), ready_write.release(), namespaced,
                entry);
  }
  const int fork_errno = errno;
  if (namespaced && setns(own_ns.get(), CLONE_NEWPID) != 0) {
    const int e = errno;
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    return absl::InternalError(
        absl::StrCat("setns back to jobd's PID namespace: ", std::strerror(e)));
  }
  if (pid < 0) {
    return absl::InternalError(
        absl::StrCat("fork: ", std::strerror(fork_errno)));
  }
  notify_read.reset();
  ready_write.reset();
  Guardian g;
  g.pid = pid;
  g.pidfd.reset(PidfdOpen(pid));
  char state = 0;
  ssize_t n;
  do {
    n = read(ready_read.get(), &state, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1 || !g.pidfd.valid()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return absl::InternalError("the guardian process did not start");
  }
  if (state != 'N') {
    g.pid_ns.reset(open(absl::StrCat("/proc/", pid, "/ns/pid").c_str(),
                        O_RDONLY | O_CLOEXEC));
  }
  if (state == 'M') {
    g.mount_ns.reset(open(absl::StrCat("/proc/", pid, "/ns/mnt").c_str(),
                          O_RDONLY | O_CLOEXEC));
  }
  if (state != 'N' && !g.pid_ns.valid()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return absl::InternalError("cannot open the guardian's PID namespace");
  }
  // A sweep request never blocks jobd: a full pipe has one pending anyway.
  fcntl(notify_write.get(), F_SETFL, O_NONBLOCK);
  g.notify = std::move(notify_write);
  return g;
}

uint64_t ProcessStartTime(pid_t pid) {
  const std::vector<uint64_t> f = StatFields(pid);
  return f.size() > 18 ? f[18] : 0;
}

namespace {

// The parent pid in /proc/PID/stat, or 0.
pid_t ParentOf(pid_t pid) {
  const std::vector<uint64_t> f = StatFields(pid);
  return f.empty() ? 0 : static_cast<pid_t>(f[0]);
}

}  // namespace

int SignalDescendants(pid_t root, int sig) {
  constexpr size_t kMaxProcesses = 1 << 16;
  std::vector<pid_t> todo = {root};
  int signalled = 0;
  for (size_t i = 0; i < todo.size() && todo.size() < kMaxProcesses; ++i) {
    const pid_t parent = todo[i];
    DIR* tasks = opendir(absl::StrCat("/proc/", parent, "/task").c_str());
    if (tasks == nullptr) continue;
    std::vector<pid_t> children;
    while (const dirent* e = readdir(tasks)) {
      if (e->d_name[0] == '.') continue;
      UniqueFd task(
          openat(dirfd(tasks), e->d_name, O_DIRECTORY | O_RDONLY | O_CLOEXEC));
      if (!task.valid()) continue;
      for (pid_t child : ParsePids(ReadAt(task.get(), "children", 1 << 20))) {
        children.push_back(child);
      }
    }
    closedir(tasks);
    for (pid_t child : children) {
      // Still the child it was listed as (not a later process that took
      // its pid): then the pidfd is that child.
      UniqueFd pidfd(PidfdOpen(child));
      if (!pidfd.valid() || ParentOf(child) != parent) continue;
      if (SendSignal(pidfd.get(), sig)) ++signalled;
      todo.push_back(child);
    }
  }
  return signalled;
}

bool KillIfStartedAt(pid_t pid, uint64_t start_time, absl::Duration limit) {
  UniqueFd pidfd(PidfdOpen(pid));
  // While the process the pidfd holds lives, /proc/PID is that process.
  if (!pidfd.valid() || start_time == 0 ||
      ProcessStartTime(pid) != start_time) {
    return false;
  }
  SendSignal(pidfd.get(), SIGKILL);
  pollfd p{.fd = pidfd.get(), .events = POLLIN};
  poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(limit)));
  return true;
}

int KillProcessesWithEnv(const std::string& entry, absl::Duration limit) {
  const std::string needle = entry + '\0';
  const std::string inner = '\0' + needle;
  const absl::Time deadline = absl::Now() + limit;
  absl::flat_hash_set<pid_t> killed;
  for (;;) {
    int found = 0;
    DIR* proc = opendir("/proc");
    if (proc == nullptr) break;
    while (const dirent* e = readdir(proc)) {
      const std::vector<pid_t> name = ParsePids(e->d_name);
      if (name.size() != 1 || name[0] == getpid()) continue;
      const pid_t pid = name[0];
      UniqueFd dir(
          openat(dirfd(proc), e->d_name, O_DIRECTORY | O_RDONLY | O_CLOEXEC));
      if (!dir.valid()) continue;
      const std::string env = ReadAt(dir.get(), "environ", 4 << 20);
      if (!env.starts_with(needle) && env.find(inner) == std::string::npos) {
        continue;
      }
      ++found;
      if (SendSignal(dir.get(), SIGKILL)) killed.insert(pid);
    }
    closedir(proc);
    // A killed process keeps its environment until it has let go of its
    // memory: look again until none is left.
    if (found == 0 || absl::Now() >= deadline) break;
    poll(nullptr, 0, 10);
  }
  return static_cast<int>(killed.size());
}

}  // namespace jobd
