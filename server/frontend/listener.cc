#include "server/frontend/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <tuple>

#include "absl/strings/numbers.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_posix.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/os/fd_limit.h"

namespace jobd {
namespace {

// The accept thread looks at its health at least this often.
constexpr absl::Duration kTick = absl::Milliseconds(250);
// Connections taken per listener per wake-up (fairness between them).
constexpr int kAcceptBatch = 64;
// After a failure that taking connections cannot cure, a listener rests.
constexpr absl::Duration kPause = absl::Milliseconds(100);
// How long jobd counts as not accepting after it turned a connection away
// for lack of descriptors.
constexpr absl::Duration kStarvedFor = absl::Seconds(1);
// Open connections are checked for closing this often.
constexpr absl::Duration kSweepEvery = absl::Seconds(1);
constexpr absl::Duration kRefusalLogEvery = absl::Seconds(10);
// A watched gRPC listener: probed this often, given this long to take the
// probe's connection, dead after this many probes in a row not taken.
constexpr absl::Duration kProbeEvery = absl::Seconds(2);
constexpr absl::Duration kProbeWait = absl::Seconds(2);
constexpr int kDeadProbes = 3;
// An accept thread that has not looked at its health for this long is
// stuck.
constexpr absl::Duration kStuckAfter = absl::Seconds(10);

int Millis(absl::Duration d) {
  if (d == absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return INT_MAX;
  }
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(d), INT_MAX));
}

std::string Errno() { return std::strerror(errno); }

// "ipv4:1.2.3.4:5" / "ipv6:[::1]:5", and the address alone (the peer key).
std::pair<std::string, std::string> IpName(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return {fmt::format("ipv4:{}:{}", host, ntohs(in->sin_port)), host};
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
  inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
  return {fmt::format("ipv6:[{}]:{}", host, ntohs(in6->sin6_port)), host};
}

int PortOf(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  }
  if (a.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  }
  return -1;
}

// Length of the accept queue of listening TCP socket `fd`, or -1.
int AcceptQueue(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  return static_cast<int>(info.tcpi_unacked);  // For LISTEN: the queue.
}

}  // namespace

void ApplyConnectionOptions(const ConnectionOptions& o,
                            grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             Millis(o.idle_timeout));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Millis(o.max_age));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             Millis(o.max_age_grace));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             Millis(o.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             Millis(o.keepalive_timeout));
  // Keep pinging a quiet stream (a Watch with nothing to say): gRPC's
  // default stops after two pings without data.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Clients' keepalive pings, by which they notice a dead connection on a
  // stream they only read (jobd's clients ping every 20 s):
  // accepted down to one a second on a quiet stream (gRPC's default, 5
  // minutes, would end such a connection with too_many_pings).
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             Millis(o.handshake_timeout));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             o.max_calls_per_connection == 0
                                 ? INT_MAX
                                 : static_cast<int>(std::min<uint32_t>(
                                       o.max_calls_per_connection, INT_MAX)));
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Open(
    const std::string& unix_path, const std::string& tcp_address,
    const ConnectionOptions& options) {
  auto l = std::unique_ptr<Listener>(new Listener(options));
  l->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  l->reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (l->wake_fd_ < 0 || l->reserve_fd_ < 0) {
    return absl::InternalError(fmt::format("listener: {}", Errno()));
  }
  if (!unix_path.empty()) {
    const int fd =
        socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, unix_path.c_str(), sizeof(addr.sun_path) - 1);
    if (fd < 0 ||
        bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
      const std::string e = Errno();
      if (fd >= 0) close(fd);
      return absl::FailedPreconditionError(
          fmt::format("--unix-socket: cannot listen on {}: {}", unix_path, e));
    }
    l->sockets_.push_back(
        {.fd = fd, .is_unix = true, .name = "unix:" + unix_path});
    l->unix_path_ = unix_path;
  }
  if (!tcp_address.empty()) {
    std::string host = tcp_address.substr(0, tcp_address.rfind(':'));
    const std::string port = tcp_address.substr(tcp_address.rfind(':') + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(),
                             port.c_str(), &hints, &found);
        rc != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "--tcp: cannot resolve '{}': {}", tcp_address, gai_strerror(rc)));
    }
    int bound_port = 0;
    size_t count = 0;
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) ++count;
    absl::Status status;
    for (addrinfo* a = found; a != nullptr && status.ok(); a = a->ai_next) {
      sockaddr_storage addr{};
      std::memcpy(&addr, a->ai_addr, a->ai_addrlen);
      if (bound_port != 0) {  // Port 0: every address gets the first's port.
        if (addr.ss_family == AF_INET) {
          reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(bound_port);
        } else {
          reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(bound_port);
        }
      }
      const int fd =
          socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      const int one = 1, v6only = count > 1 ? 1 : 0;
      if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (a->ai_family == AF_INET6) {
          setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
        }
      }
      if (fd < 0 ||
          bind(fd, reinterpret_cast<sockaddr*>(&addr), a->ai_addrlen) != 0 ||
          listen(fd, SOMAXCONN) != 0) {
        status = absl::FailedPreconditionError(fmt::format(
            "--tcp: cannot listen on {}: {}", tcp_address, Errno()));
        if (fd >= 0) close(fd);
        break;
      }
      sockaddr_storage local{};
      socklen_t len = sizeof(local);
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
      bound_port = PortOf(local);
      l->sockets_.push_back({.fd = fd, .name = IpName(local).first.substr(5)});
    }
    freeaddrinfo(found);
    if (!status.ok()) return status;
    l->tcp_port_ = bound_port;
  }
  return l;
}

Listener::~Listener() {
  Stop();
  for (Socket& s : sockets_) close(s.fd);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void Listener::WatchGrpcListener(const std::string& host, int port) {
  grpc_host_ = host;
  grpc_port_ = port;
  // gRPC's listening socket is in this process: find it by its port.
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &fd)) continue;
    if (std::any_of(sockets_.begin(), sockets_.end(),
                    [fd](const Socket& s) { return s.fd == fd; })) {
      continue;
    }
    int listening = 0;
    socklen_t len = sizeof(listening);
    sockaddr_storage local{};
    socklen_t alen = sizeof(local);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
        listening != 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &alen) == 0 &&
        PortOf(local) == port) {
      grpc_listen_fd_ = fd;
      if (local.ss_family == AF_INET) break;  // Prefer IPv4 to probe.
    }
  }
  if (grpc_listen_fd_ < 0) {
    spdlog::warn(
        "cannot find the listening socket of {}:{}: it is not "
        "watched",
        host, port);
  }
}

void Listener::Start(grpc::Server* server, OnChange on_change) {
  server_ = server;
  on_change_ = std::move(on_change);
  {
    absl::MutexLock lock(&mu_);
    heartbeat_ = absl::Now();
  }
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  if (grpc_listen_fd_ >= 0)
    probe_thread_ = std::thread([this] { ProbeLoop(); });
}

void Listener::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  if (probe_thread_.joinable()) probe_thread_.join();
}

std::string Listener::PeerName(std::string_view grpc_peer) const {
  int fd = -1;
  const std::string_view number =
      grpc_peer.starts_with("fd:") ? grpc_peer.substr(3) : std::string_view();
  if (number.empty() ||
      std::from_chars(number.data(), number.data() + number.size(), fd).ec !=
          std::errc()) {
    return std::string(grpc_peer);
  }
  absl::MutexLock lock(&mu_);
  auto it = connections_.find(fd);
  return it != connections_.end() ? it->second.name : std::string(grpc_peer);
}

std::string Listener::Problem() const {
  absl::MutexLock lock(&mu_);
  if (!grpc_problem_.empty()) return grpc_problem_;
  if (absl::Now() - heartbeat_ > kStuckAfter) {
    return fmt::format(
        "not accepting connections: the accept thread has "
        "been stuck for {}",
        absl::FormatDuration(
            absl::Trunc(absl::Now() - heartbeat_, absl::Seconds(1))));
  }
  return problem_;
}

void Listener::AcceptLoop() {
  pthread_setname_np(pthread_self(), "jobd-accept");
  std::vector<pollfd> fds;
  std::vector<Socket*> polled;
  for (;;) {
    const absl::Time now = absl::Now();
    fds.assign(1, pollfd{.fd = wake_fd_, .events = POLLIN, .revents = 0});
    polled.clear();
    absl::Duration wait = kTick;
    for (Socket& s : sockets_) {
      if (s.paused_until > now) {
        wait = std::min(wait, s.paused_until - now);
        continue;
      }
      fds.push_back({.fd = s.fd, .events = POLLIN, .revents = 0});
      polled.push_back(&s);
    }
    const int n = poll(fds.data(), fds.size(),
                       static_cast<int>(absl::ToInt64Milliseconds(
                           absl::Ceil(wait, absl::Milliseconds(1)))));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (n > 0) {
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) AcceptFrom(*polled[i - 1]);
      }
    }
    Evaluate();
  }
}

void Listener::AcceptFrom(Socket& socket) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    sockaddr_storage address{};
    socklen_t len = sizeof(address);
    const int fd = accept4(socket.fd, reinterpret_cast<sockaddr*>(&address),
                           &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      Take(socket, fd, address);
      continue;
    }
    const int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return;  // None waiting.
    if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM) {
      continue;  // That one connection failed.
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
      Shed(socket, e);
      return;
    }
    spdlog::error("accept on {}: {}", socket.name, std::strerror(e));
    socket.paused_until = absl::Now() + kPause;
    return;
  }
}

void Listener::Shed(Socket& socket, int err) {
  if (reserve_fd_ >= 0) {
    close(reserve_fd_);
    reserve_fd_ = -1;
  }
  const int fd = accept4(socket.fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) close(fd);
  reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  // Could not take it (or not keep a reserve for the next): rest rather
  // than spin on a listener that stays readable.
  if (fd < 0 || reserve_fd_ < 0) socket.paused_until = absl::Now() + kPause;
  bool log = false;
  {
    absl::MutexLock lock(&mu_);
    starved_at_ = absl::Now();
    log = absl::Now() - last_shed_log_ >= kRefusalLogEvery;
    if (log) last_shed_log_ = absl::Now();
  }
  if (log) {
    const FdUsage u = CurrentFdUsage();
    spdlog::error(
        "accept on {}: {}: jobd has {} of {} file descriptors open; "
        "connections are closed until some are free",
        socket.name, std::strerror(err), u.open, u.limit);
  }
}

void Listener::Take(Socket& socket, int fd, const sockaddr_storage& address) {
  Connection c;
  struct stat st {};
  fstat(fd, &st);
  c.inode = st.st_ino;
  if (socket.is_unix) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    c.peer = fmt::format("uid {}", cred.uid);
    c.name = "unix:" + unix_path_;
  } else {
    std::tie(c.name, c.peer) = IpName(address);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (!TakeFds(1, kAcceptKeepFree)) {
    {
      absl::MutexLock lock(&mu_);
      starved_at_ = absl::Now();
    }
    const FdUsage u = CurrentFdUsage();
    Refuse(fd, fmt::format("jobd is short of file descriptors ({} of {} "
                           "open)",
                           u.open, u.limit));
    return;
  }
  std::string refusal;
  {
    absl::MutexLock lock(&mu_);
    // A connection that had this descriptor has closed.
    if (auto old = connections_.find(fd); old != connections_.end()) {
      if (--per_peer_[old->second.peer] == 0) per_peer_.erase(old->second.peer);
      connections_.erase(old);
    }
    const size_t total = options_.max_connections;
    const size_t per_peer = options_.max_connections_per_peer;
    auto over = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (total > 0 && connections_.size() >= total) {
        return fmt::format("{} connections are open (max-connections {})",
                           connections_.size(), total);
      }
      auto it = per_peer_.find(c.peer);
      if (per_peer > 0 && it != per_peer_.end() && it->second >= per_peer) {
        return fmt::format(
            "{} has {} connections open "
            "(max-connections-per-peer {})",
            c.peer, it->second, per_peer);
      }
      return std::string();
    };
    refusal = over();
    if (!refusal.empty()) {
      SweepLocked();  // The counts may include connections closed since.
      refusal = over();
    }
    if (refusal.empty()) {
      ++per_peer_[c.peer];
      connections_[fd] = std::move(c);
    }
  }
  if (!refusal.empty()) {
    Refuse(fd, refusal);
    return;
  }
  grpc::AddInsecureChannelFromFd(server_, fd);
}

void Listener::Refuse(int fd, const std::string& why) {
  close(fd);
  bool log = false;
  uint64_t count = 0;
  {
    absl::MutexLock lock(&mu_);
    ++unlogged_refusals_;
    log = absl::Now() - last_refusal_log_ >= kRefusalLogEvery;
    if (log) {
      last_refusal_log_ = absl::Now();
      count = std::exchange(unlogged_refusals_, 0);
    }
  }
  if (log) {
    spdlog::warn("closed {} new connection(s): {}", count, why);
  }
}

void Listener::SweepLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    struct stat st {};
    if (fstat(it->first, &st) == 0 && st.st_ino == it->second.inode) {
      ++it;
      continue;
    }
    if (--per_peer_[it->second.peer] == 0) per_peer_.erase(it->second.peer);
    connections_.erase(it++);
  }
  swept_ = absl::Now();
}

void Listener::Evaluate() {
  const FdUsage u = CurrentFdUsage();
  std::string problem;
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    heartbeat_ = now;
    if (now - swept_ >= kSweepEvery) SweepLocked();
    if (u.free() <= kAcceptKeepFree || now - starved_at_ < kStarvedFor) {
      problem = fmt::format(
          "not accepting connections: jobd has {} of {} file descriptors "
          "open",
          u.open, u.limit);
    }
    // Only a change of state counts (not of the numbers in the text).
    changed = problem.empty() != problem_.empty();
    problem_ = problem;
  }
  if (!changed) return;
  if (problem.empty()) {
    spdlog::info("accepting connections again");
  } else {
    spdlog::error("{}", problem);
  }
  if (on_change_) on_change_(problem, false);
}

void Listener::ProbeLoop() {
  pthread_setname_np(pthread_self(), "jobd-probe");
  sockaddr_storage target{};
  socklen_t target_len = sizeof(target);
  getsockname(grpc_listen_fd_, reinterpret_cast<sockaddr*>(&target),
              &target_len);
  // A wildcard address is probed on loopback.
  if (target.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&target);
    if (in->sin_addr.s_addr == htonl(INADDR_ANY)) {
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
  } else if (target.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&target);
    if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
      in6->sin6_addr = in6addr_loopback;
  }
  int strikes = 0;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), kProbeEvery)) {
        return;
      }
    }
    // Connect; the connection is taken once the accept queue shrinks.
    const int c =
        socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c < 0) continue;  // jobd is short of descriptors: no verdict.
    bool taken = false;
    if (connect(c, reinterpret_cast<sockaddr*>(&target), target_len) == 0 ||
        errno == EINPROGRESS) {
      pollfd p{.fd = c, .events = POLLOUT, .revents = 0};
      int error = 0;
      socklen_t len = sizeof(error);
      // Not connected in time: the queue is full.
      if (poll(&p, 1,
               static_cast<int>(absl::ToInt64Milliseconds(kProbeWait))) == 1 &&
          getsockopt(c, SOL_SOCKET, SO_ERROR, &error, &len) == 0 &&
          error == 0) {
        const int first = AcceptQueue(grpc_listen_fd_);
        const absl::Time give_up = absl::Now() + kProbeWait;
        for (int i = 0; i < 1000 && !taken; ++i) {
          const int q = AcceptQueue(grpc_listen_fd_);
          taken = q == 0 || q < first;
          if (taken || absl::Now() >= give_up) break;
          absl::SleepFor(absl::Milliseconds(10));  // Polling a kernel count.
        }
      }
    }
    close(c);
    strikes = taken ? 0 : strikes + 1;
    if (strikes < kDeadProbes) continue;
    const std::string problem = fmt::format(
        "the TLS listener on {}:{} no longer accepts connections (gRPC "
        "stopped accepting on it, e.g. after running out of file "
        "descriptors); jobd must be restarted",
        grpc_host_, grpc_port_);
    {
      absl::MutexLock lock(&mu_);
      grpc_problem_ = problem;
    }
    spdlog::critical("{}", problem);
    if (on_change_) on_change_(problem, true);
    return;
  }
}

}  // namespace jobd
