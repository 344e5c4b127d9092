// The push callbacks' settings (server/callbacks): their flags and config
// keys (callback-*), and their checks once parsed, each error naming its
// option. Apart from config.cc to keep that file to its size.
//
// Thread-safety: used by ParseConfig only, on one thread.
#ifndef JOBD_SERVER_CONFIG_CALLBACK_CONFIG_H_
#define JOBD_SERVER_CONFIG_CALLBACK_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/callbacks/dispatcher.h"

namespace CLI {
class App;
}  // namespace CLI

namespace jobd {

// The flags' text before they are checked.
struct CallbackFlags {
  std::string max_retry_time = "1h", backoff = "1s", max_backoff = "5m",
              timeout = "10s";
};

// Adds the callback-* flags, filling `options`, `prefixes`, `secret_file`
// and `flags`.
void AddCallbackFlags(CLI::App& app, callbacks::CallbackOptions& options,
                      std::vector<std::string>& prefixes,
                      std::string& secret_file, CallbackFlags& flags);

// After parsing: the durations, the prefixes, and the secret read from
// `secret_file` (required when `prefixes` is not empty; its bytes, a final
// newline removed). InvalidArgument naming the option.
absl::Status FinishCallbackConfig(const CallbackFlags& flags,
                                  const std::vector<std::string>& prefixes,
                                  const std::string& secret_file,
                                  callbacks::CallbackOptions& options);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_CALLBACK_CONFIG_H_
