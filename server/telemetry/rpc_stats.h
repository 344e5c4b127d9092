// RpcStats: per-RPC counters for the metrics endpoint, written by the
// frontend (server/frontend/rpc_interceptor.h) and read at scrape time by
// server/metrics. Per method: how many are in flight now (for Submit and
// WatchJobs, the open streams), how many ended with each status code, and
// how long they took (a unary RPC from arrival to its status; a stream
// from its opening to its end). The methods are fixed at construction
// (the service's); any other counts under "other", and status codes are
// gRPC's 17 (anything else counts as UNKNOWN), so label values stay
// bounded. The status code is a plain int: this room knows no gRPC.
//
// Thread-safety: Started/Ended from any thread at once (relaxed atomics,
// no lock); Snapshot from any thread (figures of one method may be from
// moments apart by an RPC or two).
// Ownership: owns its counters; the daemon owns it, the frontend's
// interceptor and the metrics endpoint borrow it.
#ifndef JOBD_SERVER_TELEMETRY_RPC_STATS_H_
#define JOBD_SERVER_TELEMETRY_RPC_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "server/telemetry/histogram.h"

namespace jobd {

class RpcStats {
 public:
  static constexpr int kCodes = 17;  // gRPC status codes 0 (OK) .. 16.
  // The name of code `code` ("OK", "NOT_FOUND", ...).
  static std::string_view CodeName(int code);

  struct Method {
    std::string path;   // As gRPC names it: "/jobd.v1.JobService/GetJob".
    std::string label;  // The metric's label value: "GetJob".
    bool stream = false;
  };
  explicit RpcStats(std::vector<Method> methods);

  // The index of `path` (Started/Ended take it), or of "other".
  int IndexOf(std::string_view path) const;
  void Started(int method);
  // `code`: the status sent (gRPC's numbering); `took`: since Started.
  void Ended(int method, int code, absl::Duration took);

  struct MethodSnapshot {
    std::string label;
    bool stream = false;
    int64_t in_flight = 0;
    std::array<uint64_t, kCodes> codes{};
    HistogramSnapshot seconds;
  };
  std::vector<MethodSnapshot> Snapshot() const;

 private:
  struct Counters {
    std::atomic<int64_t> in_flight{0};
    std::array<std::atomic<uint64_t>, kCodes> codes{};
    AtomicHistogram seconds{kSecondsBounds};
  };
  std::vector<Method> methods_;  // And "other", last.
  absl::flat_hash_map<std::string, int> index_;
  std::unique_ptr<Counters[]> counters_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_TELEMETRY_RPC_STATS_H_
