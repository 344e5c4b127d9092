// RedisEndpoint: where a Redis server is, parsed from the --cluster URL:
// `redis://HOST:PORT/DB` (TCP; PORT defaults to 6379, DB to 0) or
// `unix:///path/to/redis.sock` (a Unix socket; database 0). Refusals name
// the option they were given for.
//
// Thread-safety: plain values and pure functions. Ownership: none.
#ifndef JOBD_SERVER_CLUSTER_REDIS_ENDPOINT_H_
#define JOBD_SERVER_CLUSTER_REDIS_ENDPOINT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace jobd::cluster {

struct RedisEndpoint {
  std::string unix_path;  // Set: a Unix socket; host and port unused.
  std::string host;       // A name or an address (IPv6 without brackets).
  int port = 6379;
  int db = 0;

  bool is_unix() const { return !unix_path.empty(); }
  // The URL again, in its canonical form (for logs and stats).
  std::string ToString() const;
};

// Parses `url`; an error names `option` ("--cluster") and says what was
// expected.
absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url,
                                            std::string_view option);

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_REDIS_ENDPOINT_H_
