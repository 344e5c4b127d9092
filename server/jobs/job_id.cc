#include "server/jobs/job_id.h"

#include <atomic>
#include <cctype>
#include <charconv>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

std::atomic<const std::string*> node_name{nullptr};

bool ParseNumber(std::string_view s, uint64_t* out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, *out);
  return !s.empty() && ec == std::errc() && ptr == end && *out != 0;
}

}  // namespace

absl::Status CheckNodeName(std::string_view name, std::string_view field) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is {} bytes long; a node name has 1 to 64", field,
                    ClipUtf8(name, 80), name.size()));
  }
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (!std::isalnum(c) && ch != '.' && ch != '_' && ch != '-') {
      return absl::InvalidArgumentError(fmt::format(
          "{}: '{}' holds a character other than ASCII letters, digits, "
          "'.', '_' and '-'",
          field, ClipUtf8(name, 80)));
    }
  }
  return absl::OkStatus();
}

void SetJobIdNode(std::string node) {
  // Kept for the process's life: readers hold no lock.
  node_name.store(new std::string(std::move(node)), std::memory_order_release);
}

std::string_view JobIdNode() {
  const std::string* node = node_name.load(std::memory_order_acquire);
  return node == nullptr ? std::string_view() : std::string_view(*node);
}

std::string FormatJobId(uint64_t number) {
  const std::string_view node = JobIdNode();
  if (node.empty()) return std::to_string(number);
  return fmt::format("{}@{}", number, node);
}

namespace {

struct InternedNodes {
  absl::Mutex mu;
  std::vector<std::string> names ABSL_GUARDED_BY(mu);  // Index + 1.
  absl::flat_hash_map<std::string, uint16_t> index ABSL_GUARDED_BY(mu);
};

InternedNodes& Interned() {
  static auto* nodes = new InternedNodes;  // Never destroyed.
  return *nodes;
}

}  // namespace

uint16_t InternJobIdNode(std::string_view node) {
  if (node.empty() || node == JobIdNode()) return 0;
  InternedNodes& in = Interned();
  absl::MutexLock lock(&in.mu);
  if (auto it = in.index.find(absl::string_view(node.data(), node.size()));
      it != in.index.end()) {
    return it->second;
  }
  if (in.names.size() >= UINT16_MAX) return 0;
  in.names.emplace_back(node);
  const auto n = static_cast<uint16_t>(in.names.size());
  in.index.emplace(std::string(node), n);
  return n;
}

std::string FormatJobId(uint64_t number, uint16_t node) {
  if (node == 0) return FormatJobId(number);
  InternedNodes& in = Interned();
  absl::MutexLock lock(&in.mu);
  if (node > in.names.size()) return FormatJobId(number);
  return fmt::format("{}@{}", number, in.names[node - 1]);
}

absl::StatusOr<JobRef> ParseJobRef(std::string_view id,
                                   std::string_view field) {
  JobRef ref;
  const size_t at = id.find('@');
  const std::string_view number = id.substr(0, at);
  if (!ParseNumber(number, &ref.number)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: '{}' is not a job id (a positive decimal number, in cluster "
        "mode followed by '@' and its node's name)",
        field, ClipUtf8(id, 80)));
  }
  if (at == std::string_view::npos) return ref;
  const std::string_view node = id.substr(at + 1);
  if (!CheckNodeName(node, field).ok()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: '{}': '{}' is not a node name (1 to 64 of ASCII letters, "
        "digits, '.', '_' and '-')",
        field, ClipUtf8(id, 80), ClipUtf8(node, 80)));
  }
  if (node != JobIdNode()) ref.node = std::string(node);
  return ref;
}

uint64_t OwnJobNumber(std::string_view id) {
  absl::StatusOr<JobRef> ref = ParseJobRef(id, "id");
  return ref.ok() && ref->here() ? ref->number : 0;
}

}  // namespace jobd
