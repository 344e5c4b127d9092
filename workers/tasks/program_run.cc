// RunProgram (program_run.h): starts a program as a child of the daemon in
// jobd's sandbox and waits for it on the reactor, without a thread.
#include "workers/tasks/program_run.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/detached.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/read.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"
#include "workers/os/fd_limit.h"
#include "workers/os/guardian.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// How long the output pipes may stay open after the program exited (a
// process it left behind in another group may hold them) before jobd stops
// reading.
constexpr absl::Duration kOutputDrainGrace = absl::Seconds(1);
// The stack a program's process starts on, until it executes the program.
constexpr size_t kSpawnStackBytes = 256 << 10;
// Descriptors a run opens: three pipes (two ends each) while spawning, then
// three ends and a pidfd. While jobd is short of descriptors a run waits
// this long for them, then fails RESOURCE_EXHAUSTED.
constexpr size_t kExecFds = 7;
constexpr absl::Duration kFdWait = absl::Seconds(30);
constexpr absl::Duration kFdPoll = absl::Milliseconds(50);

// One child's pipes and what came out of them; shared with the coroutines
// that read and write them, which may outlive the task's frame by a turn.
struct Child {
  explicit Child(asio::io_context& io)
      : out(io), err(io), in(io), pidfd(io), streams_done(io) {}
  // The task's frame was destroyed before it reaped the program (the
  // reactor stopped): the group is killed and the program reaped here.
  ~Child() {
    if (pid > 0 && !reaped) {
      KillAll();
      waitpid(pid, nullptr, 0);
    }
  }
  // SIGKILL to the program's descendants (while it lives they are all
  // below it: it is their subreaper) and its group.
  void KillAll() const {
    SignalDescendants(pid, SIGKILL);
    kill(-pid, SIGKILL);
  }
  asio::posix::stream_descriptor out, err, in, pidfd;
  std::string stdout_bytes, stderr_bytes;
  bool stdout_truncated = false, stderr_truncated = false;
  size_t limit = 0;
  OutputFn sink;  // The job's output, live (all of it: jobd bounds it).
  int open_streams = 0;
  asio::steady_timer streams_done;  // Cancelled when both streams hit EOF.
  pid_t pid = 0;
  bool reaped = false;
};

asio::awaitable<void> Drain(std::shared_ptr<Child> child, bool is_stdout) {
  asio::posix::stream_descriptor& sd = is_stdout ? child->out : child->err;
  std::string& buf = is_stdout ? child->stdout_bytes : child->stderr_bytes;
  bool& truncated =
      is_stdout ? child->stdout_truncated : child->stderr_truncated;
  constexpr size_t kChunk = 16384;
  const auto chunk = std::make_unique_for_overwrite<char[]>(kChunk);
  for (;;) {
    asio::error_code ec;
    const size_t n = co_await sd.async_read_some(
        asio::buffer(chunk.get(), kChunk),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;  // EOF, or closed by the task.
    if (child->sink) {
      child->sink(
          is_stdout ? v1::OUTPUT_STREAM_STDOUT : v1::OUTPUT_STREAM_STDERR,
          std::string_view(chunk.get(), n));
    }
    const size_t keep = std::min(n, child->limit - buf.size());
    buf.append(chunk.get(), keep);
    truncated |= keep < n;  // Read on (and drop), so the program never blocks.
  }
  if (--child->open_streams == 0) child->streams_done.cancel();
}

asio::awaitable<void> Feed(std::shared_ptr<Child> child, std::string data) {
  asio::error_code ec;
  co_await asio::async_write(child->in, asio::buffer(data),
                             asio::redirect_error(asio::use_awaitable, ec));
  child->in.close(ec);  // EOF for the program (or it stopped reading).
}

struct Pipe {
  int read = -1, write = -1;
  ~Pipe() {
    if (read >= 0) close(read);
    if (write >= 0) close(write);
  }
  bool Open() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return false;
    read = fds[0];
    write = fds[1];
    return true;
  }
  int TakeRead() { return std::exchange(read, -1); }
  int TakeWrite() { return std::exchange(write, -1); }
};

// What the new process needs until it executes the program (it shares
// the daemon's memory and runs on a stack of its own meanwhile), and what
// went wrong if it could not.
struct SpawnArgs {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* cwd;
  int fds[3];         // Its stdin, stdout and stderr.
  int mount_ns = -1;  // The guardian's mount namespace, or -1.
  pid_t parent = 0;   // The daemon, if the child can see it (else 0).
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  // RLIMIT_AS, RLIMIT_CPU, RLIMIT_NOFILE: 0 leaves jobd's.
  rlim_t limits[3] = {0, 0, 0};
  uint64_t changed_signals = 0;  // Bit sig-1: reset to SIG_DFL (see there).
  int error = 0;                 // Out: errno of the failed step, or 0.
  const char* step = nullptr;
};

// The kernel's struct sigaction (the raw system call's).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

// The signals whose disposition this process set (a handler, or SIG_IGN),
// as bit sig-1; read once, at the first spawn. A caught signal is reset by
// execve anyway, but the child must not run the daemon's handler between
// unblocking signals and execve, and an ignored one would stay ignored in
// the program. jobd sets its dispositions once, at start, before any
// executor runs (dispositions are process-wide: tasks must not change
// them), so the first spawn's view holds; the child then makes one system
// call per changed signal instead of 62.
uint64_t ChangedSignals() {
  static const uint64_t changed = [] {
    uint64_t mask = 0;
    for (int sig = 1; sig <= 64; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      KernelSigaction now{};
      if (syscall(SYS_rt_sigaction, sig, nullptr, &now, sizeof(uint64_t)) !=
              0 ||
          now.handler != SIG_DFL) {
        mask |= uint64_t{1} << (sig - 1);  // Unknown counts as changed.
      }
    }
    return mask;
  }();
  return changed;
}

// The new process: raw system calls only (no allocation, no lock, nothing
// a sanitizer intercepts), since it shares the memory of a multi-threaded
// daemon whose other threads run on.
__attribute__((no_sanitize("address", "undefined"))) int SpawnChild(void* raw) {
  SpawnArgs& a = *static_cast<SpawnArgs*>(raw);
  const char* step = "setpgid";
  KernelSigaction dfl = {SIG_DFL, 0, nullptr, 0};
  uint64_t no_signals = 0;
  // Its own process group (killed as one).
  if (syscall(SYS_setpgid, 0, 0) != 0) goto fail;
  // Killed when the daemon's thread that started it ends (the daemon's
  // death included), and the reaper of what it starts and leaves orphaned,
  // so that jobd can find all of it while it runs.
  step = "prctl";
  if (syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 ||
      syscall(SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    goto fail;
  }
  if (a.parent != 0 && syscall(SYS_getppid) != a.parent) {
    errno = ESRCH;  // The daemon died meanwhile.
    goto fail;
  }
  // Default dispositions, nothing blocked (the daemon blocks SIGTERM and
  // friends, ignores SIGPIPE, and blocked everything around the clone).
  // Only the signals jobd changed need it (a system call each).
  for (int sig = 1; sig <= 64; ++sig) {
    if ((a.changed_signals >> (sig - 1)) & 1) {
      syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(uint64_t));
    }
  }
  step = "setns";
  if (a.mount_ns >= 0 && syscall(SYS_setns, a.mount_ns, CLONE_NEWNS) != 0) {
    goto fail;
  }
  step = "dup";
  for (int fd = 0; fd < 3; ++fd) {
    if (a.fds[fd] == fd ? syscall(SYS_fcntl, fd, F_SETFD, 0) != 0
                        : syscall(SYS_dup3, a.fds[fd], fd, 0) < 0) {
      goto fail;
    }
  }
  syscall(SYS_close_range, 3, ~0U, 0);
  step = "setrlimit";
  {
    constexpr int kResources[3] = {RLIMIT_AS, RLIMIT_CPU, RLIMIT_NOFILE};
    for (int i = 0; i < 3; ++i) {
      if (a.limits[i] == 0) continue;
      const rlimit limit{.rlim_cur = a.limits[i], .rlim_max = a.limits[i]};
      if (syscall(SYS_prlimit64, 0, kResources[i], &limit, nullptr) != 0) {
        goto fail;
      }
    }
  }
  if (a.switch_user) {  // For good: no supplementary group, no way back.
    step = "switching to --worker-user";
    if (syscall(SYS_setgroups, 0, nullptr) != 0 ||
        syscall(SYS_setresgid, a.gid, a.gid, a.gid) != 0 ||
        syscall(SYS_setresuid, a.uid, a.uid, a.uid) != 0 ||
        syscall(SYS_setresuid, 0, 0, 0) == 0) {
      goto fail;
    }
  }
  step = "chdir";  // As that user: a directory it may not enter fails.
  if (syscall(SYS_chdir, a.cwd) != 0) goto fail;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &no_signals, nullptr,
          sizeof(uint64_t));
  step = "exec";
  syscall(SYS_execve, a.path, a.argv, a.envp);
fail:
  a.error = errno != 0 ? errno : EINVAL;
  a.step = step;
  syscall(SYS_exit, 127);
  return 127;
}

// Whether the child behind `pidfd` has ended (it stays unreaped). Its
// pidfd can be reported readable before that: asio's epoll registration is
// per descriptor number, and while a spawned child still holds copies of
// jobd's descriptors (until its exec), the event of a closed descriptor can
// reach the new descriptor of the same number (seen under ASan's load).
bool HasExited(int pidfd) {
  siginfo_t info{};
  if (waitid(P_PIDFD, static_cast<id_t>(pidfd), &info,
             WEXITED | WNOHANG | WNOWAIT) != 0) {
    return errno != EINTR && errno != EAGAIN;  // Let the reap report it.
  }
  return info.si_pid != 0;
}

// A stack for SpawnChild, mapped on first use, unmapped with its owner.
class SpawnStack {
 public:
  SpawnStack() = default;
  SpawnStack(const SpawnStack&) = delete;
  SpawnStack& operator=(const SpawnStack&) = delete;
  ~SpawnStack() {
    if (base_ != nullptr) munmap(base_, kSpawnStackBytes);
  }
  // Null (errno set) if it cannot be mapped.
  void* get() {
    if (base_ == nullptr) {
      void* m = mmap(nullptr, kSpawnStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
      if (m == MAP_FAILED) return nullptr;
      base_ = m;
    }
    return base_;
  }

 private:
  void* base_ = nullptr;
};

// Starts `path` in its own process group, in the guardian's namespaces, as
// the sandbox's user, with `env`, `stdin_fd` as its stdin and the two pipes'
// write ends as stdout/stderr. Returns the pid or the error.
absl::StatusOr<pid_t> Spawn(const ExecSandbox& sandbox, const std::string& path,
                            const std::vector<std::string>& argv,
                            const std::vector<std::string>& env,
                            const std::string& cwd, int stdin_fd, Pipe& out,
                            Pipe& err) {
  // Children of this thread are started in the guardian's PID namespace
  // (a per-thread setting, made once per thread).
  thread_local int joined_pid_ns = -1;
  if (sandbox.pid_ns_fd >= 0 && joined_pid_ns != sandbox.pid_ns_fd) {
    if (setns(sandbox.pid_ns_fd, CLONE_NEWPID) != 0) {
      return absl::InternalError(absl::StrCat(
          "exec: cannot enter jobd's PID namespace: ", std::strerror(errno)));
    }
    joined_pid_ns = sandbox.pid_ns_fd;
  }
  std::vector<char*> cargv, cenv;
  for (const std::string& a : argv)
    cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const std::string& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  SpawnArgs args{.path = path.c_str(),
                 .argv = cargv.data(),
                 .envp = cenv.data(),
                 .cwd = cwd.c_str(),
                 .fds = {stdin_fd, out.write, err.write},
                 .mount_ns = sandbox.mount_ns_fd,
                 .parent = sandbox.pid_ns_fd >= 0 ? 0 : getpid()};
  args.limits[0] = static_cast<rlim_t>(sandbox.max_address_space);
  args.limits[1] = static_cast<rlim_t>(sandbox.max_cpu_seconds);
  args.limits[2] = static_cast<rlim_t>(sandbox.max_open_files);
  args.changed_signals = ChangedSignals();
  if (sandbox.run_as.has_value()) {
    args.switch_user = true;
    args.uid = sandbox.run_as->first;
    args.gid = sandbox.run_as->second;
  }
  // The child's stack: one per spawning thread, kept for the thread's life
  // (the thread waits while its child uses it: CLONE_VFORK). An munmap per
  // spawn would interrupt every CPU running one of jobd's threads.
  thread_local SpawnStack stack_of_thread;
  void* stack = stack_of_thread.get();
  if (stack == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("exec: mmap: ", std::strerror(errno)));
  }
  // No signal handler may run in the child (it shares this memory).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  // CLONE_VFORK: this thread waits until the child executed the program
  // (or failed to).
  const pid_t pid =
      clone(SpawnChild, static_cast<char*>(stack) + kSpawnStackBytes,
            CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("exec ", path, ": clone: ", std::strerror(clone_errno)));
  }
  if (args.error != 0) {
    waitpid(pid, nullptr, 0);
    return absl::FailedPreconditionError(absl::StrCat(
        "exec ", path, ": ",
        std::string_view(args.step) == "exec" ? ""
                                              : absl::StrCat(args.step, ": "),
        std::strerror(args.error)));
  }
  return pid;
}

// A descriptor of /dev/null for programs without input, opened once and
// kept (close-on-exec: a program gets it only as its stdin); -1 if it
// cannot be opened.
int DevNull() {
  static const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

// Waits until the daemon can spare a run's descriptors (above
// kExecKeepFree): exec backs off before the daemon runs out, so that its
// listeners, journal and workers keep theirs.
asio::awaitable<absl::Status> WaitForFds(AsyncTaskContext& ctx) {
  const absl::Time give_up = absl::Now() + kFdWait;
  asio::steady_timer timer(ctx.io());
  while (!TakeFds(kExecFds, kExecKeepFree)) {
    if (ctx.cancelled()) co_return absl::CancelledError("exec: cancelled");
    if (absl::Now() >= give_up) {
      const FdUsage u = CurrentFdUsage();
      co_return absl::ResourceExhaustedError(absl::StrCat(
          "exec: jobd is short of file descriptors (", u.open, " of ", u.limit,
          " open) and could not start the program within ",
          absl::FormatDuration(kFdWait)));
    }
    timer.expires_after(absl::ToChronoNanoseconds(kFdPoll));
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return absl::OkStatus();
}

}  // namespace

// Output as result text: invalid UTF-8 bytes replaced by U+FFFD, then cut
// to `limit` bytes on a character boundary (*cut set if it was), so that
// the text is never longer than the bytes kept.
std::string OutputText(std::string_view bytes, size_t limit, bool* cut) {
  std::string text = MakeValidUtf8(bytes);
  if (text.size() > limit) {
    text.resize(Utf8Prefix(text, limit).size());
    *cut = true;
  }
  return text;
}

// The last `max_bytes` or fewer bytes of `s` as text, starting on a
// character boundary.
std::string TailText(std::string_view s, size_t max_bytes) {
  if (s.size() > max_bytes) {
    s.remove_prefix(s.size() - max_bytes);
    for (int i = 0; i < 3 && !s.empty() && (s[0] & 0xC0) == 0x80; ++i) {
      s.remove_prefix(1);
    }
  }
  return MakeValidUtf8(s);
}

std::string ExitSignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat(sig);
}

asio::awaitable<absl::StatusOr<ProgramEnd>> RunProgram(
    AsyncTaskContext& ctx, const ExecSandbox& sandbox, ProgramRun run) {
  // This run cleans up after a cancel itself: its awaits must not throw.
  co_await asio::this_coro::throw_if_cancelled(false);
  std::vector<std::string> env = {kProgramPath};
  if (!sandbox.instance_env.empty()) env.push_back(sandbox.instance_env);
  for (std::string& e : run.env) env.push_back(std::move(e));

  if (absl::Status s = co_await WaitForFds(ctx); !s.ok()) co_return s;
  // No input: stdin is /dev/null (at EOF at once, as an empty pipe would
  // be), which saves a pipe and its writer.
  const bool feed = !run.input.empty();
  Pipe in, out, err;
  if ((feed && !in.Open()) || !out.Open() || !err.Open()) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  const int stdin_fd = feed ? in.read : DevNull();
  if (stdin_fd < 0) {
    co_return absl::InternalError("exec: cannot open /dev/null");
  }
  absl::StatusOr<pid_t> pid =
      Spawn(sandbox, run.path, run.argv, env, run.cwd, stdin_fd, out, err);
  if (!pid.ok()) co_return pid.status();
  const absl::Time start = absl::Now();
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, *pid, 0));
  if (pidfd < 0) {
    const int e = errno;
    kill(-*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    co_return absl::InternalError(
        absl::StrCat("exec: pidfd_open: ", std::strerror(e)));
  }
  auto child = std::make_shared<Child>(ctx.io());
  child->pid = *pid;
  child->limit = run.limit;
  child->sink = ctx.OutputWriter();
  child->pidfd.assign(pidfd);
  child->out.assign(out.TakeRead());
  child->err.assign(err.TakeRead());
  // The child's ends: only it has them now.
  close(out.TakeWrite());
  close(err.TakeWrite());
  child->open_streams = 2;
  child->streams_done.expires_at(asio::steady_timer::time_point::max());
  asio::co_spawn(ctx.io(), Drain(child, true), asio::detached);
  asio::co_spawn(ctx.io(), Drain(child, false), asio::detached);
  if (feed) {
    close(in.TakeRead());
    child->in.assign(in.TakeWrite());
    asio::co_spawn(ctx.io(), Feed(child, std::move(run.input)), asio::detached);
  }

  // Wait for the exit; a cancel or timeout interrupts the wait. A wake-up
  // can come before the exit (HasExited): then wait again.
  asio::error_code ec;
  do {
    co_await child->pidfd.async_wait(
        asio::posix::descriptor_base::wait_read,
        asio::redirect_error(asio::use_awaitable, ec));
  } while (!ec && !ctx.cancelled() && !HasExited(pidfd));
  const bool stopped = ec || ctx.cancelled();
  if (stopped) {
    // SIGTERM to the group and every descendant (in a session of its own
    // too) now, SIGKILL after the grace if the program is still there.
    co_await asio::this_coro::reset_cancellation_state();
    SignalDescendants(child->pid, SIGTERM);
    kill(-child->pid, SIGTERM);
    asio::steady_timer killer(ctx.io(),
                              absl::ToChronoNanoseconds(run.kill_grace));
    killer.async_wait([child](const asio::error_code& e) {
      if (!e && !child->reaped) child->KillAll();
    });
    do {
      ec.clear();
      co_await child->pidfd.async_wait(
          asio::posix::descriptor_base::wait_read,
          asio::redirect_error(asio::use_awaitable, ec));
      // Not the exit: again.
    } while (ec == asio::error::operation_aborted ||
             (!ec && !HasExited(pidfd)));
    killer.cancel();
  }
  // What it left behind in its group goes with it: killed while the
  // unreaped leader still holds the group id (after the reap, the id could
  // name someone else's group). Its other descendants were reparented to
  // the guardian when it ended: the guardian kills them now.
  kill(-child->pid, SIGKILL);
  // The exit is known by now; should waitid still say EAGAIN (the pidfd is
  // non-blocking, asio made it so), wait again rather than report nonsense.
  // A cancel no longer interrupts these waits: the child is gone or dying.
  co_await asio::this_coro::reset_cancellation_state();
  siginfo_t info{};
  int wait_errno = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    info = siginfo_t{};
    if (waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) == 0) {
      wait_errno = 0;
      break;
    }
    wait_errno = errno;
    if (wait_errno == EINTR) continue;
    if (wait_errno != EAGAIN) break;
    ec.clear();
    co_await child->pidfd.async_wait(
        asio::posix::descriptor_base::wait_read,
        asio::redirect_error(asio::use_awaitable, ec));
  }
  child->reaped = true;
  ProgramEnd end;
  end.elapsed = absl::Now() - start;

  // The output's end of file mostly came with the exit, its handlers queued
  // behind this one: they run first, before a grace timer is armed.
  if (child->open_streams > 0) co_await asio::post(asio::use_awaitable);
  if (child->open_streams > 0) {
    child->streams_done.expires_after(
        absl::ToChronoNanoseconds(kOutputDrainGrace));
    co_await child->streams_done.async_wait(
        asio::redirect_error(asio::use_awaitable, ec));
  }
  // What is left after the program, the descriptors and the guardian's
  // sweep of what it left behind in its namespace, waits until the job's
  // end went out: two turns of the loop later (this coroutine's return
  // posts the end first), so that the system calls and the guardian's
  // wake-up do not delay the result (~20 us at p50 on 2 vCPUs). The
  // guardian outlives the executors (the daemon's members' order).
  asio::post(ctx.io(), [&io = ctx.io(), child, fd = sandbox.notify_fd] {
    asio::post(io, [child, fd] {
      if (fd >= 0) (void)!write(fd, "k", 1);
      asio::error_code ignored;
      child->out.close(ignored);
      child->err.close(ignored);
      child->in.close(ignored);
      child->pidfd.close(ignored);
    });
  });
  if (stopped) {
    co_return absl::CancelledError(
        absl::StrCat("exec ", run.path,
                     " was stopped (it and its descendants were killed)"));
  }
  if (wait_errno != 0) {
    co_return absl::InternalError(absl::StrCat(
        "exec ", run.path,
        ": cannot learn how it ended: waitid: ", std::strerror(wait_errno)));
  }
  end.exited = info.si_code == CLD_EXITED;
  (end.exited ? end.exit_code : end.signal) = info.si_status;
  end.stdout_bytes = std::move(child->stdout_bytes);
  end.stderr_bytes = std::move(child->stderr_bytes);
  end.stdout_truncated = child->stdout_truncated;
  end.stderr_truncated = child->stderr_truncated;
  co_return end;
}

}  // namespace jobd
