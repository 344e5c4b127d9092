#include "server/config/caller_weights.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "server/scheduler/fair_queue.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {

absl::Status ParseCallerWeights(const std::vector<std::string>& items,
                                std::map<std::string, uint32_t>& out) {
  for (const std::string& item : items) {
    const size_t eq = item.rfind('=');
    const std::string name = eq == std::string::npos ? "" : item.substr(0, eq);
    if (name.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("--caller-weight: '{}' is not NAME=WEIGHT (e.g. alice=3)",
                      ClipUtf8(item, 200)));
    }
    if (name.size() > 128 || !IsValidUtf8(name) ||
        std::any_of(name.begin(), name.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })) {
      return absl::InvalidArgumentError(fmt::format(
          "--caller-weight: caller '{}' is not 1 to 128 bytes of printable "
          "text",
          ClipUtf8(name, 128)));
    }
    const std::string value = item.substr(eq + 1);
    uint32_t weight = 0;
    if (!absl::SimpleAtoi(value, &weight) || weight < 1 ||
        weight > CallerWeights::kMax) {
      return absl::InvalidArgumentError(fmt::format(
          "--caller-weight: '{}' for caller '{}' is not a whole number from "
          "1 to {}",
          ClipUtf8(value, 64), name, CallerWeights::kMax));
    }
    if (!out.emplace(name, weight).second) {
      return absl::InvalidArgumentError(fmt::format(
          "--caller-weight: caller '{}' is given more than once", name));
    }
  }
  return absl::OkStatus();
}

}  // namespace jobd
