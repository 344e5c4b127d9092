#include "server/telemetry/rpc_stats.h"

#include <utility>

#include "absl/strings/string_view.h"

namespace jobd {

std::string_view RpcStats::CodeName(int code) {
  static constexpr std::string_view kNames[kCodes] = {"OK",
                                                      "CANCELLED",
                                                      "UNKNOWN",
                                                      "INVALID_ARGUMENT",
                                                      "DEADLINE_EXCEEDED",
                                                      "NOT_FOUND",
                                                      "ALREADY_EXISTS",
                                                      "PERMISSION_DENIED",
                                                      "RESOURCE_EXHAUSTED",
                                                      "FAILED_PRECONDITION",
                                                      "ABORTED",
                                                      "OUT_OF_RANGE",
                                                      "UNIMPLEMENTED",
                                                      "INTERNAL",
                                                      "UNAVAILABLE",
                                                      "DATA_LOSS",
                                                      "UNAUTHENTICATED"};
  return code >= 0 && code < kCodes ? kNames[code] : kNames[2];
}

RpcStats::RpcStats(std::vector<Method> methods) : methods_(std::move(methods)) {
  for (size_t i = 0; i < methods_.size(); ++i) {
    index_.emplace(methods_[i].path, static_cast<int>(i));
  }
  methods_.push_back({"", "other", false});
  counters_ = std::make_unique<Counters[]>(methods_.size());
}

int RpcStats::IndexOf(std::string_view path) const {
  auto it = index_.find(absl::string_view(path.data(), path.size()));
  return it != index_.end() ? it->second
                            : static_cast<int>(methods_.size() - 1);
}

void RpcStats::Started(int method) {
  counters_[method].in_flight.fetch_add(1, std::memory_order_relaxed);
}

void RpcStats::Ended(int method, int code, absl::Duration took) {
  Counters& c = counters_[method];
  c.in_flight.fetch_sub(1, std::memory_order_relaxed);
  c.codes[code >= 0 && code < kCodes ? code : 2].fetch_add(
      1, std::memory_order_relaxed);
  c.seconds.Observe(absl::ToDoubleSeconds(took));
}

std::vector<RpcStats::MethodSnapshot> RpcStats::Snapshot() const {
  std::vector<MethodSnapshot> out(methods_.size());
  for (size_t i = 0; i < methods_.size(); ++i) {
    const Counters& c = counters_[i];
    MethodSnapshot& m = out[i];
    m.label = methods_[i].label;
    m.stream = methods_[i].stream;
    m.in_flight = c.in_flight.load(std::memory_order_relaxed);
    for (int k = 0; k < kCodes; ++k) {
      m.codes[k] = c.codes[k].load(std::memory_order_relaxed);
    }
    m.seconds = c.seconds.Snapshot();
  }
  return out;
}

}  // namespace jobd
