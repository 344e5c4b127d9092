#include "server/config/callback_config.h"

#include <fstream>
#include <sstream>
#include <tuple>

#include "CLI/CLI.hpp"
#include "server/callbacks/callback_url.h"
#include "server/config/duration_flag.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

void AddCallbackFlags(CLI::App& app, callbacks::CallbackOptions& options,
                      std::vector<std::string>& prefixes,
                      std::string& secret_file, CallbackFlags& flags) {
  app.add_option("--callback-allowed-prefixes", prefixes,
                 "Where jobs' callbacks (spec.callback_url) may go: URL "
                 "prefixes such as https://hooks.example/, each ending its "
                 "host with '/', comma-separated; empty (the default): "
                 "callbacks are refused")
      ->delimiter(',');
  app.add_option("--callback-secret-file", secret_file,
                 "File holding the key callbacks are signed with "
                 "(HMAC-SHA256); required with --callback-allowed-prefixes");
  app.add_option("--callback-max-attempts", options.max_attempts,
                 "POSTs of one callback at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--callback-max-retry-time", flags.max_retry_time,
                 "No retry of a callback starts later than this after its "
                 "first attempt")
      ->capture_default_str();
  app.add_option("--callback-backoff", flags.backoff,
                 "Wait before a callback's first retry; doubles at each "
                 "retry (with jitter)")
      ->capture_default_str();
  app.add_option("--callback-max-backoff", flags.max_backoff,
                 "Longest wait between two attempts of a callback")
      ->capture_default_str();
  app.add_option("--callback-timeout", flags.timeout,
                 "Time limit of one callback POST (connection included)")
      ->capture_default_str();
  app.add_option("--callback-max-pending", options.max_pending,
                 "Callbacks waiting to be delivered at most; past it (or "
                 "--callback-max-pending-bytes) a job's callback is dropped")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{10000000}));
  app.add_option("--callback-max-pending-bytes", options.max_pending_bytes,
                 "Bytes of the events of pending callbacks at most")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false));
}

absl::Status FinishCallbackConfig(const CallbackFlags& flags,
                                  const std::vector<std::string>& prefixes,
                                  const std::string& secret_file,
                                  callbacks::CallbackOptions& options) {
  for (auto [text, flag, out] :
       {std::tuple(&flags.max_retry_time, "callback-max-retry-time",
                   &options.max_retry_time),
        std::tuple(&flags.backoff, "callback-backoff", &options.first_backoff),
        std::tuple(&flags.max_backoff, "callback-max-backoff",
                   &options.max_backoff),
        std::tuple(&flags.timeout, "callback-timeout", &options.timeout)}) {
    absl::Status s = ParseDurationFlag(*text, flag, out, false);
    if (!s.ok()) return s;
  }
  if (options.max_backoff < options.first_backoff) {
    return absl::InvalidArgumentError(
        "--callback-max-backoff: shorter than --callback-backoff");
  }
  if (options.max_pending_bytes == 0) {
    return absl::InvalidArgumentError(
        "--callback-max-pending-bytes: must be positive");
  }
  if (absl::Status s = callbacks::CheckPrefixes(prefixes); !s.ok()) return s;
  if (secret_file.empty()) {
    if (!prefixes.empty()) {
      return absl::InvalidArgumentError(
          "--callback-secret-file: required with --callback-allowed-prefixes "
          "(callbacks are signed)");
    }
    return absl::OkStatus();
  }
  std::ifstream in(secret_file, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        fmt::format("--callback-secret-file: cannot read '{}'", secret_file));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string secret = bytes.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) {
    secret.pop_back();
  }
  if (secret.size() < 16) {
    return absl::InvalidArgumentError(fmt::format(
        "--callback-secret-file: '{}' holds {} bytes; a key needs at least 16",
        secret_file, secret.size()));
  }
  options.secret = std::move(secret);
  return absl::OkStatus();
}

}  // namespace jobd
