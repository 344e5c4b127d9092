// The `exec` task (workers/io_tasks.h): runs an allowlisted program as a
// child of the daemon and waits for it on the reactor, without a thread.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "asio/detached.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/read.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"
#include "workers/os/fd_limit.h"
#include "workers/os/guardian.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/utf8.h"
#include "workers/tasks/io_tasks.h"

namespace jobd {
namespace {

using google::protobuf::Value;

// How long the output pipes may stay open after the program exited (a
// process it left behind in another group may hold them) before jobd stops
// reading.
constexpr absl::Duration kOutputDrainGrace = absl::Seconds(1);
constexpr char kDefaultPath[] = "PATH=/usr/local/bin:/usr/bin:/bin";
// The stack a program's process starts on, until it executes the program.
constexpr size_t kSpawnStackBytes = 256 << 10;
// Descriptors a run opens: three pipes (two ends each) while spawning, then
// three ends and a pidfd. While jobd is short of descriptors a run waits
// this long for them, then fails RESOURCE_EXHAUSTED.
constexpr size_t kExecFds = 7;
constexpr absl::Duration kFdWait = absl::Seconds(30);
constexpr absl::Duration kFdPoll = absl::Milliseconds(50);

// Why the job may not set variable `name` under `options`, or "".
absl::Status EnvNameStatus(const ExecOptions& options,
                           const std::string& name) {
  const std::string problem = ExecEnvNameProblem(name);
  if (!problem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("env.", ClipUtf8(name, 128), ": ", problem));
  }
  if (std::find(options.env_allow.begin(), options.env_allow.end(), name) ==
      options.env_allow.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "env.", name,
        ": not on this daemon's exec environment allowlist "
        "(--exec-env-allow: ",
        options.env_allow.empty() ? "empty"
                                  : absl::StrJoin(options.env_allow, ", "),
        ")"));
  }
  return absl::OkStatus();
}

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The allowlisted path `program` names: the path itself, or a bare name
// that is the basename of exactly one allowlisted path.
absl::StatusOr<std::string> Resolve(const ExecOptions& options,
                                    const std::string& program) {
  if (options.allow.empty()) {
    return absl::FailedPreconditionError(
        "exec is disabled: this daemon's exec allowlist (--exec-allow) is "
        "empty");
  }
  std::vector<std::string> matches;
  for (const std::string& allowed : options.allow) {
    if (program.find('/') != std::string::npos ? program == allowed
                                               : Basename(allowed) == program) {
      matches.push_back(allowed);
    }
  }
  if (matches.size() == 1) return matches.front();
  if (matches.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("argv[0]: '", program, "' is ambiguous (",
                     absl::StrJoin(matches, ", "), "): give the full path"));
  }
  return absl::PermissionDeniedError(
      absl::StrCat("argv[0]: '", ClipUtf8(program, 256),
                   "' is not on this daemon's exec allowlist (--exec-allow: ",
                   absl::StrJoin(options.allow, ", "), ")"));
}

absl::Status Validate(const ExecOptions& options, size_t max_message_bytes,
                      const TaskArgs& args) {
  const auto& argv = args.Find("argv")->list_value().values();
  if (argv.empty()) {
    return absl::InvalidArgumentError("argv: must name a program");
  }
  for (int i = 0; i < argv.size(); ++i) {
    if (argv[i].kind_case() != Value::kStringValue ||
        argv[i].string_value().find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("argv[", i, "]: must be a string without NUL bytes"));
    }
  }
  if (const Value* env = args.Find("env")) {
    for (const auto& [name, value] : env->struct_value().fields()) {
      if (absl::Status s = EnvNameStatus(options, name); !s.ok()) return s;
      if (value.kind_case() != Value::kStringValue ||
          value.string_value().find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("env.", name, ": must be a string without NUL bytes"));
      }
    }
  }
  const std::string& cwd = args.String("cwd");
  if (cwd.empty() || cwd[0] != '/') {
    return absl::InvalidArgumentError("cwd: must be an absolute path");
  }
  const int64_t limit = args.Int("max_output_bytes");
  if (limit < 0 || limit > kMaxIoTaskBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_output_bytes: must be between 0 and ", kMaxIoTaskBytes));
  }
  // The result holds stdout twice (text and payload) and stderr once, at
  // most `limit` bytes each, in one message with the spec.
  const size_t room = ResultRoom(max_message_bytes, args);
  const int64_t fits =
      static_cast<int64_t>(room > 1024 ? (room - 1024) / 3 : 0);
  if (limit > fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_output_bytes: ", limit,
        " does not fit: stdout comes back twice "
        "(text and payload) and stderr once, in one message with the spec; "
        "at most ",
        fits, " with this daemon's --max-message-bytes (", max_message_bytes,
        ")"));
  }
  return Resolve(options, argv[0].string_value()).status();
}

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

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat(sig);
}

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
  std::string chunk(16384, '\0');
  for (;;) {
    asio::error_code ec;
    const size_t n = co_await sd.async_read_some(
        asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;  // EOF, or closed by the task.
    const size_t keep = std::min(n, child->limit - buf.size());
    buf.append(chunk.data(), keep);
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
  int error = 0;  // Out: errno of the failed step, or 0.
  const char* step = nullptr;
};

// The kernel's struct sigaction (the raw system call's).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

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
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) {
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

// Starts `path` in its own process group, in the guardian's namespaces, as
// the sandbox's user, with `env` and the three pipes as
// stdin/stdout/stderr. Returns the pid or the error.
absl::StatusOr<pid_t> Spawn(const ExecSandbox& sandbox, const std::string& path,
                            const std::vector<std::string>& argv,
                            const std::vector<std::string>& env,
                            const std::string& cwd, Pipe& in, Pipe& out,
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
                 .fds = {in.read, out.write, err.write},
                 .mount_ns = sandbox.mount_ns_fd,
                 .parent = sandbox.pid_ns_fd >= 0 ? 0 : getpid()};
  if (sandbox.run_as.has_value()) {
    args.switch_user = true;
    args.uid = sandbox.run_as->first;
    args.gid = sandbox.run_as->second;
  }
  void* stack = mmap(nullptr, kSpawnStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
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
  munmap(stack, kSpawnStackBytes);
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

asio::awaitable<absl::StatusOr<TaskOutput>> Exec(
    AsyncTaskContext& ctx, std::shared_ptr<const ExecOptions> current,
    std::shared_ptr<const ExecSandbox> sandbox) {
  const ExecOptions& options = *current;  // Kept for the whole run.
  // This task cleans up after a cancel itself: its awaits must not throw.
  co_await asio::this_coro::throw_if_cancelled(false);
  const TaskArgs& a = ctx.args();
  std::vector<std::string> argv;
  for (const Value& v : a.Find("argv")->list_value().values()) {
    argv.push_back(v.string_value());
  }
  absl::StatusOr<std::string> path = Resolve(options, argv[0]);
  if (!path.ok()) co_return path.status();
  // A fixed base, never jobd's own environment, and what the job set of
  // the allowlisted names (checked again: a reload may have narrowed the
  // allowlist since the job was accepted).
  std::map<std::string, std::string> env_map;
  if (const Value* env = a.Find("env")) {
    for (const auto& [name, value] : env->struct_value().fields()) {
      if (absl::Status s = EnvNameStatus(options, name); !s.ok()) co_return s;
      env_map[name] = value.string_value();
    }
  }
  std::vector<std::string> env = {kDefaultPath};
  if (!sandbox->instance_env.empty()) env.push_back(sandbox->instance_env);
  for (const auto& [name, value] : env_map) env.push_back(name + "=" + value);
  const Value* stdin_arg = a.Find("stdin");
  std::string input =
      stdin_arg != nullptr ? stdin_arg->string_value() : a.payload();

  if (absl::Status s = co_await WaitForFds(ctx); !s.ok()) co_return s;
  Pipe in, out, err;
  if (!in.Open() || !out.Open() || !err.Open()) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  absl::StatusOr<pid_t> pid =
      Spawn(*sandbox, *path, argv, env, a.String("cwd"), in, out, err);
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
  child->limit = static_cast<size_t>(a.Int("max_output_bytes"));
  child->pidfd.assign(pidfd);
  child->out.assign(out.TakeRead());
  child->err.assign(err.TakeRead());
  child->in.assign(in.TakeWrite());
  for (Pipe* p : {&in, &out, &err}) {  // The child's ends: only it has them.
    close(p->read >= 0 ? p->TakeRead() : p->TakeWrite());
  }
  child->open_streams = 2;
  child->streams_done.expires_at(asio::steady_timer::time_point::max());
  asio::co_spawn(ctx.io(), Drain(child, true), asio::detached);
  asio::co_spawn(ctx.io(), Drain(child, false), asio::detached);
  asio::co_spawn(ctx.io(), Feed(child, std::move(input)), asio::detached);

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
                              absl::ToChronoNanoseconds(options.kill_grace));
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
  if (sandbox->notify_fd >= 0) (void)!write(sandbox->notify_fd, "k", 1);
  const absl::Duration elapsed = absl::Now() - start;

  if (child->open_streams > 0) {
    child->streams_done.expires_after(
        absl::ToChronoNanoseconds(kOutputDrainGrace));
    co_await child->streams_done.async_wait(
        asio::redirect_error(asio::use_awaitable, ec));
  }
  child->out.close(ec);
  child->err.close(ec);
  child->in.close(ec);
  if (stopped) {
    co_return absl::CancelledError(absl::StrCat(
        "exec ", *path, " was stopped (it and its descendants were killed)"));
  }

  if (wait_errno != 0) {
    co_return absl::InternalError(absl::StrCat(
        "exec ", *path,
        ": cannot learn how it ended: waitid: ", std::strerror(wait_errno)));
  }
  const bool exited = info.si_code == CLD_EXITED;
  TaskOutput result;
  auto& f = *result.value.mutable_struct_value()->mutable_fields();
  if (exited) {
    f["exit_code"].set_number_value(info.si_status);
    f["signal"].set_null_value(google::protobuf::NULL_VALUE);
  } else {
    f["exit_code"].set_null_value(google::protobuf::NULL_VALUE);
    f["signal"].set_string_value(SignalName(info.si_status));
  }
  f["stdout"].set_string_value(
      OutputText(child->stdout_bytes, child->limit, &child->stdout_truncated));
  f["stderr"].set_string_value(
      OutputText(child->stderr_bytes, child->limit, &child->stderr_truncated));
  f["stdout_truncated"].set_bool_value(child->stdout_truncated);
  f["stderr_truncated"].set_bool_value(child->stderr_truncated);
  f["duration_ms"].set_number_value(absl::ToDoubleMilliseconds(elapsed));
  if (a.Bool("check") && (!exited || info.si_status != 0)) {
    const std::string tail = TailText(child->stderr_bytes, 512);
    co_return absl::UnknownError(absl::StrCat(
        "exec ", *path, ": ",
        exited ? absl::StrCat("exited with code ", info.si_status)
               : absl::StrCat("killed by signal ", SignalName(info.si_status)),
        tail.empty() ? "" : "; stderr: ", tail));
  }
  result.payload = std::move(child->stdout_bytes);
  co_return result;
}

}  // namespace

std::string ExecEnvNameProblem(std::string_view name) {
  constexpr std::string_view kSyntax =
      "must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)";
  if (name.empty() || name.size() > 128 || absl::ascii_isdigit(name[0])) {
    return std::string(kSyntax);
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_') return std::string(kSyntax);
  }
  if (name == "PATH" || name == kInstanceEnv) {
    return "is set by jobd itself";
  }
  return "";
}

TaskDef ExecTask(std::shared_ptr<const ExecPolicy> policy,
                 std::shared_ptr<const ExecSandbox> sandbox,
                 size_t max_message_bytes) {
  if (sandbox == nullptr) sandbox = std::make_shared<const ExecSandbox>();
  return {
      .name = "exec",
      .description =
          "Runs an allowlisted program (argv[0]: a path on the daemon's "
          "--exec-allow list, or its basename) in its own process group with "
          "a clean environment (a fixed PATH and JOBD_INSTANCE, plus `env` "
          "of the names on --exec-env-allow), `stdin` (else the payload) as "
          "its input, in `cwd`, as --worker-user if set. Returns "
          "{exit_code, signal, stdout, stderr, stdout_truncated, "
          "stderr_truncated, duration_ms}; the raw stdout is the result "
          "payload. A non-zero exit fails the job unless check=false. "
          "Cancel and timeout kill the program and all it started (SIGTERM, "
          "SIGKILL after a grace); what it leaves running is killed when it "
          "ends. Runs on the reactor only.",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .params = {Param("argv", ParamType::kList,
                       "program and arguments, all strings"),
                 OptionalParam(
                     "env", ParamType::kObject, Value(),
                     "environment variables: {NAME: value}, of the names "
                     "on the daemon's --exec-env-allow list only"),
                 OptionalParam("stdin", ParamType::kString, Value(),
                               "input (default: the job's payload)"),
                 OptionalParam("cwd", ParamType::kString, StringValue("/"),
                               "working directory (absolute)"),
                 OptionalParam("max_output_bytes", ParamType::kInt,
                               NumberValue(1 << 20),
                               "stdout and stderr kept, each; the rest is "
                               "read and dropped (…_truncated); <= 8 MiB, "
                               "and 3x it must fit a message"),
                 OptionalParam("check", ParamType::kBool, BoolValue(true),
                               "fail the job on a non-zero exit or a signal")},
      .async = MakeAsyncTask([policy, sandbox](AsyncTaskContext& ctx) {
        return Exec(ctx, policy->Get(), sandbox);
      }),
      .validate =
          [policy, max_message_bytes](const TaskArgs& args) {
            return Validate(*policy->Get(), max_message_bytes, args);
          },
  };
}

}  // namespace jobd
