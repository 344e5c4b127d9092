// The daemon's own files: its Unix socket (cleared for binding, shared with
// a group, removed at exit unless a newer jobd took the path) and the lock
// that makes a state directory one daemon's.
//
//   PrepareUnixSocket   makes the socket's directory private
//                       (private_dir.h) and removes a stale socket; never
//                       a symbolic link or any other file found in its
//                       place, never the socket of a live daemon
//   ShareUnixSocket     --unix-socket-group: socket 0660, directory 0750
//   LockStateDirectory  flock(STATE_DIR/jobd.lock), held as long as the fd
//   SocketInode / RemoveSocketIfSame
//                       remove our socket at exit, not one a newer jobd
//                       bound at the same path since
//
// Errors are FailedPrecondition (AlreadyExists for a path another daemon
// holds) and name the option they come from (--unix-socket, --state-dir,
// --unix-socket-group).
//
// Thread-safety: plain functions, reentrant. Ownership: the caller owns the
// lock's fd.
#ifndef JOBD_SERVER_DAEMON_DAEMON_FILES_H_
#define JOBD_SERVER_DAEMON_DAEMON_FILES_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workers/os/unique_fd.h"

namespace jobd {

// True if something accepts connections on the Unix socket at `path`.
bool SocketInUse(const std::string& path);

// Makes the socket's directory private and clears the way for the socket:
// only a stale socket is removed.
absl::Status PrepareUnixSocket(const std::string& path);

// Opens the Unix socket at `path` to `group` (socket 0660, its directory
// 0750).
absl::Status ShareUnixSocket(const std::string& path, const std::string& group);

// Makes `dir` private (0700) and takes an exclusive lock on dir/jobd.lock
// for as long as the returned fd lives: one daemon per journal.
absl::StatusOr<UniqueFd> LockStateDirectory(const std::string& dir);

// The inode of the file at `path`, or 0.
ino_t SocketInode(const std::string& path);

// Removes `path` if it is still the file of inode `inode` (not 0).
void RemoveSocketIfSame(const std::string& path, ino_t inode);

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_DAEMON_FILES_H_
