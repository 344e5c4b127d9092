#include "server/daemon/daemon_files.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "server/daemon/private_dir.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

bool SocketInUse(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool in_use =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return in_use;
}

absl::Status PrepareUnixSocket(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket: path longer than {} bytes: {}",
                    sizeof(sockaddr_un::sun_path) - 1, path));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (absl::Status s = EnsurePrivateDirectory(dir, 0700, "--unix-socket");
      !s.ok()) {
    return s;
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(fmt::format(
        "--unix-socket: cannot inspect {}: {}", path, std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(fmt::format(
        "--unix-socket: {} exists and is not a socket ({}); jobd replaces "
        "only a stale socket: remove it if it is not needed, or choose "
        "another path",
        path,
        S_ISLNK(st.st_mode)   ? "a symbolic link"
        : S_ISDIR(st.st_mode) ? "a directory"
        : S_ISREG(st.st_mode) ? "a regular file"
                              : "a special file"));
  }
  if (SocketInUse(path)) {
    return absl::AlreadyExistsError(fmt::format(
        "another process (a running jobd?) is listening on {}", path));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {  // A dead daemon's.
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket: cannot remove the stale socket {}: {}",
                    path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ShareUnixSocket(const std::string& path,
                             const std::string& group) {
  const struct group* g = getgrnam(group.c_str());
  if (g == nullptr) {
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket-group: no group '{}'", group));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0 ||
      chmod(path.c_str(), 0660) != 0 ||
      chown(dir.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0 ||
      chmod(dir.c_str(), 0750) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("--unix-socket-group {}: cannot hand {} to it: {}", group,
                    path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> LockStateDirectory(const std::string& dir) {
  if (absl::Status s = EnsurePrivateDirectory(dir, 0700, "--state-dir");
      !s.ok()) {
    return s;
  }
  chmod(dir.c_str(), 0700);  // Jobs' specs and results: owner only.
  const std::string path = dir + "/jobd.lock";
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(fmt::format(
        "--state-dir: cannot open {}: {}", path, std::strerror(errno)));
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::AlreadyExistsError(fmt::format(
        "another jobd uses the state directory {} (its lock {} is held)", dir,
        path));
  }
  return fd;
}

ino_t SocketInode(const std::string& path) {
  struct stat st {};
  if (path.empty() || stat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

void RemoveSocketIfSame(const std::string& path, ino_t inode) {
  if (inode != 0 && SocketInode(path) == inode) unlink(path.c_str());
}

}  // namespace jobd
