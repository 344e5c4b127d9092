// The fair-share option (--caller-weight NAME=W, repeatable; in the config
// file `caller-weight = ["alice=3"]`) into the scheduler's callers'
// weights (README: Fair share), each refusal naming the option.
//
// Thread-safety: a pure function. Ownership: none.
#ifndef JOBD_SERVER_CONFIG_CALLER_WEIGHTS_H_
#define JOBD_SERVER_CONFIG_CALLER_WEIGHTS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace jobd {

// Parses NAME=W items (NAME: a caller, 1 to 128 bytes of printable text;
// W: 1 to 1000) into `out`; a caller named twice is refused.
absl::Status ParseCallerWeights(const std::vector<std::string>& items,
                                std::map<std::string, uint32_t>& out);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_CALLER_WEIGHTS_H_
