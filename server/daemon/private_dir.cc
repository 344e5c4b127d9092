#include "server/daemon/private_dir.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "spdlog/fmt/fmt.h"

namespace jobd {
namespace {

// "nobody (uid 65534)".
std::string UserText(uid_t uid) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[2048];
  if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return fmt::format("{} (uid {})", found->pw_name, uid);
  }
  return fmt::format("uid {}", uid);
}

std::string UserName(uid_t uid) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[2048];
  if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

std::string Mode(mode_t mode) { return fmt::format("{:04o}", mode & 07777); }

std::string Writers(mode_t mode) {
  if ((mode & S_IWGRP) && (mode & S_IWOTH)) return "its group and others";
  return (mode & S_IWGRP) ? "its group" : "others";
}

absl::Status Errno(std::string_view flag, std::string_view what,
                   const std::string& path) {
  return absl::FailedPreconditionError(fmt::format(
      "{}: cannot {} {}: {}", flag, what, path, std::strerror(errno)));
}

}  // namespace

absl::Status EnsurePrivateDirectory(const std::string& dir, mode_t mode,
                                    std::string_view flag) {
  std::filesystem::path target = std::filesystem::path(dir).lexically_normal();
  if (!target.is_absolute()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is not an absolute path", flag, dir));
  }
  if (!target.has_filename() && target.has_relative_path()) {
    target = target.parent_path();  // "/a/b/" -> "/a/b".
  }
  std::vector<std::string> components = {"/"};
  std::filesystem::path prefix = "/";
  for (const std::filesystem::path& part : target.relative_path()) {
    prefix /= part;
    components.push_back(prefix.string());
  }
  const uid_t me = geteuid();
  const std::string leaf = components.back();
  for (size_t i = 0; i < components.size(); ++i) {
    const bool is_leaf = i + 1 == components.size();
    const std::string& path = components[i];
    struct stat st {};
    bool created = false;
    if (lstat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) return Errno(flag, "inspect", path);
      if (mkdir(path.c_str(), is_leaf ? mode : 0755) == 0) {
        created = true;
      } else if (errno != EEXIST) {
        return Errno(flag, "create", path);
      }
      if (lstat(path.c_str(), &st) != 0) return Errno(flag, "inspect", path);
    }
    if (S_ISLNK(st.st_mode)) {
      if (st.st_uid != 0 && st.st_uid != me) {
        return absl::FailedPreconditionError(fmt::format(
            "{}: refusing to use {}: {} is a symbolic link owned by {}, who "
            "could point it elsewhere; use a path without it",
            flag, leaf, path, UserText(st.st_uid)));
      }
      if (stat(path.c_str(), &st) != 0) return Errno(flag, "follow", path);
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          fmt::format("{}: {} exists and is not a directory", flag, path));
    }
    if (!is_leaf) {
      if (st.st_uid != 0 && st.st_uid != me) {
        return absl::FailedPreconditionError(fmt::format(
            "{}: refusing to use {}: the directory above it, {}, is owned by "
            "{} (mode {}), who could replace it; use a directory whose "
            "parents belong to root or to jobd's user, {}",
            flag, leaf, path, UserText(st.st_uid), Mode(st.st_mode),
            UserText(me)));
      }
      if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        return absl::FailedPreconditionError(fmt::format(
            "{}: refusing to use {}: the directory above it, {}, is writable "
            "by {} (mode {}, owner {}) without the sticky bit, so they could "
            "replace it; fix: chmod go-w {} (or chmod +t, as /tmp), or use "
            "another directory",
            flag, leaf, path, Writers(st.st_mode), Mode(st.st_mode),
            UserText(st.st_uid), path));
      }
      continue;
    }
    if (st.st_uid != me) {
      return absl::FailedPreconditionError(fmt::format(
          "{}: refusing to use {}: it is owned by {} (mode {}), not by jobd's "
          "user {}: that user could replace what jobd keeps there; fix: "
          "remove it (jobd creates it, mode {:04o}), or chown {} {} && chmod "
          "go-w {}",
          flag, path, UserText(st.st_uid), Mode(st.st_mode), UserText(me), mode,
          UserName(me), path, path));
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
      return absl::FailedPreconditionError(fmt::format(
          "{}: refusing to use {}: it is writable by {} (mode {}, owner {}), "
          "who could replace what jobd keeps there; fix: chmod go-w {} (or "
          "remove it: jobd creates it, mode {:04o})",
          flag, path, Writers(st.st_mode), Mode(st.st_mode),
          UserText(st.st_uid), path, mode));
    }
    if (created && chmod(path.c_str(), mode) != 0) {
      return Errno(flag, "set the mode of", path);
    }
  }
  return absl::OkStatus();
}

}  // namespace jobd
