#include "server/cluster/cluster_options.h"

#include <cctype>

#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd::cluster {

absl::Status CheckNodeName(std::string_view name, std::string_view option) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is {} bytes long; a node name has 1 to 64",
                    option, ClipUtf8(name, 80), name.size()));
  }
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (!std::isalnum(c) && ch != '.' && ch != '_' && ch != '-') {
      return absl::InvalidArgumentError(fmt::format(
          "{}: '{}' holds a character other than ASCII letters, digits, "
          "'.', '_' and '-'",
          option, ClipUtf8(name, 80)));
    }
  }
  return absl::OkStatus();
}

}  // namespace jobd::cluster
