// Test helper: a blocking Redis client (hiredis's synchronous API) for
// what a test or a benchmark reads of Redis itself while jobd nodes use it:
// INFO, XPENDING, PTTL. jobd's own client is asynchronous
// (server/cluster/redis_connection.h); this one is a plain call and wait,
// bounded by a timeout.
//
// Thread-safety: one client per thread. Ownership: owns its connection.
#ifndef JOBD_TESTS_REDIS_REDIS_CLIENT_H_
#define JOBD_TESTS_REDIS_REDIS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;

namespace jobd::testing {

// A reply, owned (hiredis's is freed at once).
struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;
  std::vector<RedisReply> elements;
};

class RedisClient {
 public:
  // Connects to the Unix socket `path`; each call then waits at most
  // `timeout` for its reply.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Connect(
      const std::string& path, absl::Duration timeout = absl::Seconds(5));
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Runs one command. An error reply, a lost connection or a timeout is an
  // error status (the client must then be connected again).
  absl::StatusOr<RedisReply> Query(const std::vector<std::string>& argv);

  // INFO `section`'s field `name` as a number (e.g. "cpu",
  // "used_cpu_user").
  absl::StatusOr<double> InfoNumber(const std::string& section,
                                    const std::string& name);

 private:
  explicit RedisClient(redisContext* ctx) : ctx_(ctx) {}
  redisContext* ctx_;
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_REDIS_REDIS_CLIENT_H_
