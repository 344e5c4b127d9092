#include "workers/process/internal/fork_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <utility>

#include "fmt/format.h"
#include "jobd/internal/worker.pb.h"
#include "spdlog/spdlog.h"
#include "workers/process/internal/process_info.h"
#include "workers/process/ipc.h"

namespace jobd {

ForkServerRelay::ForkServerRelay(EpollLoop& loop,
                                 const ProcessPoolOptions& options,
                                 ForkServerProcess initial)
    : loop_(loop), options_(options), process_(std::move(initial)) {
  Register();
}

ForkServerRelay::~ForkServerRelay() { Stop(); }

void ForkServerRelay::Register() {
  fcntl(process_.control.get(), F_SETFL, O_NONBLOCK);
  loop_.Add(process_.control.get(), EPOLLIN,
            EventKey(gen_, EventTag::kForkControl));
  loop_.Add(process_.pidfd.get(), EPOLLIN,
            EventKey(gen_, EventTag::kForkPidfd));
}

absl::StatusOr<uint64_t> ForkServerRelay::RequestSpawn() {
  internal::ForkRequest request;
  request.set_request_id(next_request_++);
  internal::WorkerLimits& limits = *request.mutable_limits();
  limits.set_address_space_bytes(options_.max_address_space);
  limits.set_cpu_seconds(options_.max_cpu_seconds);
  limits.set_open_files(options_.max_open_files);
  if (options_.run_as.has_value()) {
    limits.set_switch_user(true);
    limits.set_uid(options_.run_as->first);
    limits.set_gid(options_.run_as->second);
  }
  if (absl::Status st = SendPacket(process_.control.get(), request); !st.ok()) {
    return st;
  }
  return request.request_id();
}

bool ForkServerRelay::ReadReplies(Events& events) {
  for (int i = 0; i < 256; ++i) {
    internal::ForkReply reply;
    std::vector<UniqueFd> fds;
    const ReadResult r = RecvPacket(process_.control.get(), reply, fds);
    if (r == ReadResult::kWouldBlock) return true;
    if (r != ReadResult::kData) {
      if (r == ReadResult::kError && errno == EBADMSG) continue;
      return false;
    }
    switch (reply.kind_case()) {
      case internal::ForkReply::kSpawned:
        events.OnSpawned(reply.spawned().request_id(), reply.spawned().pid(),
                         fds);
        break;
      case internal::ForkReply::kSpawnFailed:
        events.OnSpawnFailed(reply.spawn_failed().request_id(),
                             reply.spawn_failed().error());
        break;
      case internal::ForkReply::kExited:
        events.OnExited(reply.exited().pid(), reply.exited().wait_status());
        break;
      case internal::ForkReply::KIND_NOT_SET:
        break;
    }
  }
  return true;
}

void ForkServerRelay::Reap(Events& events) {
  if (process_.pid <= 0) return;
  // Its last reports first: exits it reaped before it died.
  for (int i = 0; i < 256 && process_.control.valid(); ++i) {
    internal::ForkReply reply;
    std::vector<UniqueFd> fds;
    if (RecvPacket(process_.control.get(), reply, fds) != ReadResult::kData) {
      break;
    }
    if (reply.has_exited()) {
      events.OnExited(reply.exited().pid(), reply.exited().wait_status());
    }
    if (reply.has_spawned()) kill(-reply.spawned().pid(), SIGKILL);
  }
  int status = 0;
  if (process_.control.valid()) kill(process_.pid, SIGKILL);
  waitpid(process_.pid, &status, 0);
  spdlog::error(
      "process pool: the fork server (pid {}) died ({}); starting a new one",
      process_.pid,
      WIFSIGNALED(status) ? SignalName(WTERMSIG(status))
                          : fmt::format("exit code {}", WEXITSTATUS(status)));
  process_ = ForkServerProcess{};
  ++gen_;
  ++restarts_;
}

absl::Status ForkServerRelay::Start() {
  absl::StatusOr<ForkServerProcess> fresh =
      SpawnForkServer(options_.self_exe, options_.fork_server_args);
  if (!fresh.ok()) return fresh.status();
  process_ = *std::move(fresh);
  Register();
  spdlog::info("process pool: fork server running (pid {})", process_.pid);
  return absl::OkStatus();
}

void ForkServerRelay::Stop() {
  if (process_.pid <= 0) return;
  process_.control.reset();  // It kills its workers and exits.
  pollfd p{.fd = process_.pidfd.get(), .events = POLLIN};
  if (poll(&p, 1, 2000) <= 0) kill(process_.pid, SIGKILL);
  waitpid(process_.pid, nullptr, 0);
  process_ = ForkServerProcess{};
}

}  // namespace jobd
