// Unit tests of the daemon's own files (server/daemon/daemon_files.h): a
// stale socket is removed, a live one, a symbolic link or a file is not;
// the state directory's lock admits one holder; our socket is removed at
// exit, a newer one at the same path is not; sharing with a group that
// does not exist names the option.
#include "server/daemon/daemon_files.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/os/unique_fd.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

// A Unix socket bound at `path`, listening if `listen_too`.
UniqueFd BindSocket(const std::string& path, bool listen_too) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)),
            0);
  if (listen_too) {
    EXPECT_EQ(listen(fd.get(), 1), 0);
  }
  return fd;
}

class DaemonFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jobd-files-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(DaemonFilesTest, AStaleSocketIsRemovedALiveOneIsRefused) {
  const std::string run = dir_ + "/run";
  const std::string path = run + "/jobd.sock";
  // A fresh directory is made private; no socket yet is fine.
  ASSERT_TRUE(PrepareUnixSocket(path).ok());
  struct stat st {};
  ASSERT_EQ(stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  {
    UniqueFd live = BindSocket(path, /*listen_too=*/true);
    EXPECT_TRUE(SocketInUse(path));
    const absl::Status s = PrepareUnixSocket(path);
    EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
    EXPECT_THAT(s.message(), HasSubstr("another process"));
    EXPECT_TRUE(std::filesystem::exists(path));
  }
  // Its process is gone: the socket file is stale, and removed.
  EXPECT_FALSE(SocketInUse(path));
  ASSERT_TRUE(PrepareUnixSocket(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(DaemonFilesTest, ALinkAFileOrATooLongPathIsLeftAlone) {
  const std::string precious = dir_ + "/precious";
  std::ofstream(precious) << "keep me";
  const std::string path = dir_ + "/jobd.sock";
  ASSERT_EQ(symlink(precious.c_str(), path.c_str()), 0);
  absl::Status s = PrepareUnixSocket(path);
  EXPECT_THAT(s.message(), HasSubstr("not a socket (a symbolic link)"));
  ASSERT_EQ(unlink(path.c_str()), 0);
  std::ofstream(path) << "a file";
  s = PrepareUnixSocket(path);
  EXPECT_THAT(s.message(), HasSubstr("not a socket (a regular file)"));
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::exists(precious));
  s = PrepareUnixSocket(dir_ + "/" + std::string(120, 'x') + "/jobd.sock");
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("--unix-socket: path longer than"));
}

TEST_F(DaemonFilesTest, TheStateDirectoryHasOneHolderAtATime) {
  const std::string state = dir_ + "/state";
  absl::StatusOr<UniqueFd> first = LockStateDirectory(state);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  absl::StatusOr<UniqueFd> second = LockStateDirectory(state);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsAlreadyExists(second.status()));
  EXPECT_THAT(second.status().message(), HasSubstr("another jobd uses"));
  first->reset();  // Released with its fd.
  EXPECT_TRUE(LockStateDirectory(state).ok());
}

TEST_F(DaemonFilesTest, OnlyOurOwnSocketIsRemovedAtExit) {
  const std::string path = dir_ + "/jobd.sock";
  UniqueFd ours = BindSocket(path, /*listen_too=*/false);
  const ino_t inode = SocketInode(path);
  ASSERT_NE(inode, 0u);
  // A newer daemon took the path meanwhile.
  ASSERT_EQ(unlink(path.c_str()), 0);
  UniqueFd newer = BindSocket(path, /*listen_too=*/false);
  RemoveSocketIfSame(path, inode);
  EXPECT_TRUE(std::filesystem::exists(path));
  RemoveSocketIfSame(path, SocketInode(path));
  EXPECT_FALSE(std::filesystem::exists(path));
  RemoveSocketIfSame("", 0);  // No socket: nothing to do.
}

TEST_F(DaemonFilesTest, SharingWithAGroupThatDoesNotExistNamesTheOption) {
  const std::string path = dir_ + "/jobd.sock";
  UniqueFd fd = BindSocket(path, /*listen_too=*/false);
  const absl::Status s = ShareUnixSocket(path, "no-such-group-here");
  EXPECT_THAT(s.message(), HasSubstr("--unix-socket-group: no group"));
}

}  // namespace
}  // namespace jobd
