// Test helpers over server/cluster's RedisConnection: an io_context run on
// a thread of the test's own (IoThread), and Call, one command waited for
// (bounded) from the test's thread.
//
// Thread-safety: IoThread is owned by one test; Call may run on any thread
// but the io thread. Ownership: IoThread owns its io_context and thread.
#ifndef JOBD_TESTS_REDIS_REDIS_CALL_H_
#define JOBD_TESTS_REDIS_REDIS_CALL_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "server/cluster/redis_connection.h"

namespace jobd::testing {

class IoThread {
 public:
  IoThread() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~IoThread() { Join(); }
  // Lets run() return once no work is left (stop connections first).
  void Join() {
    guard_.reset();
    if (thread_.joinable()) thread_.join();
  }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

inline absl::StatusOr<cluster::RedisValue> Call(
    cluster::RedisConnection& conn, std::vector<std::string> argv,
    absl::Duration timeout = absl::Seconds(10),
    absl::Duration block = absl::ZeroDuration()) {
  auto done = std::make_shared<absl::Notification>();
  auto result =
      std::make_shared<std::optional<absl::StatusOr<cluster::RedisValue>>>();
  conn.Command(
      std::move(argv),
      [done, result](absl::StatusOr<cluster::RedisValue> r) {
        *result = std::move(r);
        done->Notify();
      },
      block);
  if (!done->WaitForNotificationWithTimeout(timeout)) {
    return absl::DeadlineExceededError("no answer within the test's bound");
  }
  return std::move(**result);
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_REDIS_REDIS_CALL_H_
