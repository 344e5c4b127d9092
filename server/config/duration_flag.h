// ParseDurationFlag: a duration option's text ("500ms", "10s", "1h30m")
// checked and converted, the refusal naming the option, for every part of
// the config room (flags, retry options, callback options).
//
// Thread-safety: a pure function. Ownership: none.
#ifndef JOBD_SERVER_CONFIG_DURATION_FLAG_H_
#define JOBD_SERVER_CONFIG_DURATION_FLAG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace jobd {

// Parses `text` into `out`: a finite duration, not negative, and not zero
// unless `allow_zero`; else an error naming --`flag`.
absl::Status ParseDurationFlag(const std::string& text, const char* flag,
                               absl::Duration* out, bool allow_zero);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_DURATION_FLAG_H_
