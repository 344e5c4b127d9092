// EnsurePrivateDirectory: creates, or checks before use, a directory that
// only jobd's user may change — the Unix socket's directory (the runtime
// directory) and the state directory (the journal). Whoever can write to
// such a directory, or to one above it, can replace what jobd keeps there:
// a fake jobd.sock collects clients' tokens, a fake journal feeds jobs.
//
// Rules, for each component of the path from "/" down:
//  * a parent directory must be owned by root or by jobd's effective user,
//    and not writable by group or others unless it is sticky (as /tmp is:
//    there nobody can rename or remove an entry of another user);
//  * a symbolic link on the way must be owned by root or jobd's user (its
//    target is then checked like a directory);
//  * the directory itself must be owned by jobd's effective user and not
//    writable by group or others.
// A missing component is created (parents 0755, the directory itself
// `mode`, set exactly whatever the umask) and checked like an existing one,
// so one created by someone else in between is caught. A refusal is
// FailedPrecondition naming the directory, its owner and mode, and the fix.
//
// Thread-safety: a plain function (getpwuid_r for names); call it at start.
#ifndef JOBD_SERVER_DAEMON_PRIVATE_DIR_H_
#define JOBD_SERVER_DAEMON_PRIVATE_DIR_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace jobd {

// `dir` must be absolute; `flag` names the option it comes from in errors
// (e.g. "--state-dir").
absl::Status EnsurePrivateDirectory(const std::string& dir, mode_t mode,
                                    std::string_view flag);

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_PRIVATE_DIR_H_
