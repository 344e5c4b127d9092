// jobctl's exit codes and error output: which code a failure gets, how
// several outcomes combine, and the "jobctl: <message>" lines on stderr.
//
//   0    success
//   1    a job ended FAILED or CANCELLED (or any did, for map / wait), or
//        another error
//   2    usage error (bad flag, argument or value)
//   3    jobd unreachable (connect failure, UNAVAILABLE)
//   4    request rejected (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
//        ...: e.g. unknown task, unknown job id)
//   5    timed out waiting (DEADLINE_EXCEEDED)
//   130  interrupted (Ctrl-C during map)
// When several apply (map, wait) the most severe wins: 3 > 5 > 4 > 1.
//
// Thread-safety: the functions are stateless; the printing ones write to
// stdout/stderr (flushing stdout first, so both streams stay in order).
// Ownership: nothing is kept; strings are returned by value.
#ifndef JOBD_CLIENT_JOBCTL_EXIT_CODES_H_
#define JOBD_CLIENT_JOBCTL_EXIT_CODES_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::jobctl {

enum ExitCode : int {
  kExitOk = 0,
  kExitJobFailed = 1,
  kExitUsage = 2,
  kExitUnavailable = 3,
  kExitRejected = 4,
  kExitTimeout = 5,
  kExitInterrupted = 130,
};

// The footer of `jobctl --help`: the table above, durations and address.
extern const char* const kExitCodesHelp;

// The exit code of a failed call (kExitOk for OK).
int ExitCodeFor(const absl::Status& status);

// The exit code of a job in `state`: 0 SUCCEEDED, 1 FAILED or CANCELLED,
// 5 (timed out waiting) while it has not ended.
int JobExitCode(v1::JobState state);

// The more severe of two exit codes: 3 > 5 > 4 > 1 > 0; any other code
// (2, 130) is above them all.
int Worst(int a, int b);

// The message of a status, as a string.
std::string Msg(const absl::Status& status);

// Prints "jobctl: <message>" on stderr.
void PrintError(std::string_view message);

// Prints the status's message; returns its exit code.
int Fail(const absl::Status& status);

// Prints the message; returns kExitUsage.
int Usage(std::string_view message);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_EXIT_CODES_H_
