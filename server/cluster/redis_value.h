// RedisValue: a Redis reply as an owned C++ value (RESP2: nil, integer,
// string, status, error, array). hiredis's redisReply never leaves
// redis_connection.cc: it is copied into one of these before a command's
// callback runs.
//
// Thread-safety: a plain value. Ownership: owns its strings and elements.
#ifndef JOBD_SERVER_CLUSTER_REDIS_VALUE_H_
#define JOBD_SERVER_CLUSTER_REDIS_VALUE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace jobd::cluster {

struct RedisValue {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };

  Type type = Type::kNil;
  int64_t integer = 0;               // kInteger.
  std::string str;                   // kString, kStatus, kError.
  std::vector<RedisValue> elements;  // kArray.

  static RedisValue Nil() { return {}; }
  static RedisValue Integer(int64_t v) {
    RedisValue r;
    r.type = Type::kInteger;
    r.integer = v;
    return r;
  }
  static RedisValue String(std::string s, Type type = Type::kString) {
    RedisValue r;
    r.type = type;
    r.str = std::move(s);
    return r;
  }

  bool is_nil() const { return type == Type::kNil; }
  bool is_error() const { return type == Type::kError; }
  // Status "OK".
  bool is_ok() const { return type == Type::kStatus && str == "OK"; }

  // For logs and test failures: `[1, "a", nil]`, bytes escaped.
  std::string DebugString() const;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_REDIS_VALUE_H_
