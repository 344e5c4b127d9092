// Test helper: a real redis-server for a test, on a Unix socket in a temp
// directory of its own (`--port 0`: no TCP listener), without persistence
// (`--save ''`, `--appendonly no`). Start waits for its "ready to accept
// connections" line (no sleep); Kill sends SIGKILL and Stop SIGTERM, by
// pid, and reap it; Restart starts it again on the same socket. The server
// dies with the test process (PR_SET_PDEATHSIG) should the test crash.
//
// Thread-safety: one per test, used from the test's thread. Ownership: owns
// the process and the directory; the destructor kills and removes both.
#ifndef JOBD_TESTS_REDIS_REDIS_SERVER_H_
#define JOBD_TESTS_REDIS_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace jobd::testing {

class RedisServer {
 public:
  // Starts redis-server with `extra_args` added to its command line.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      std::vector<std::string> extra_args = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  const std::string& socket_path() const { return socket_; }
  std::string url() const { return "unix://" + socket_; }  // For --cluster.
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // SIGKILL, reaped. No-op if not running.
  void Kill();
  // SIGTERM, reaped within `timeout` (SIGKILL after).
  absl::Status Stop(absl::Duration timeout = absl::Seconds(10));
  // Starts it again on the same socket and directory (after Kill or Stop).
  absl::Status Restart();
  // What it wrote to its log so far.
  std::string Log() const;

 private:
  RedisServer() = default;
  absl::Status Launch();

  std::string dir_, socket_, log_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_REDIS_REDIS_SERVER_H_
