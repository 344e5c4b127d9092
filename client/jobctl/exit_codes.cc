#include "client/jobctl/exit_codes.h"

#include <cstdio>

#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {

const char* const kExitCodesHelp =
    "Exit codes:\n"
    "  0    success\n"
    "  1    a job ended FAILED or CANCELLED (any of them for map/wait), or "
    "another error\n"
    "  2    usage error (bad flag, argument or value)\n"
    "  3    jobd unreachable (connect failure, UNAVAILABLE)\n"
    "  4    request rejected (INVALID_ARGUMENT, NOT_FOUND, "
    "RESOURCE_EXHAUSTED, ...)\n"
    "  5    timed out waiting (DEADLINE_EXCEEDED)\n"
    "  130  interrupted (Ctrl-C during map)\n"
    "  When several apply (map, wait) the most severe wins: 3 > 5 > 4 > 1.\n"
    "Durations: 500ms, 2s, 1m, 1h30m, inf, or a number of seconds.\n"
    "Address: --address, else $JOBD_ADDRESS, else the default socket.";

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kUnavailable:
      return kExitUnavailable;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitTimeout;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnauthenticated:
      return kExitRejected;
    default:
      return kExitJobFailed;
  }
}

int JobExitCode(v1::JobState state) {
  if (state == v1::JOB_STATE_SUCCEEDED) return kExitOk;
  if (state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) {
    return kExitJobFailed;
  }
  return kExitTimeout;  // Not ended.
}

namespace {

// Severity order for combining outcomes: 3 > 5 > 4 > 1 > 0.
int Severity(int code) {
  switch (code) {
    case kExitUnavailable:
      return 5;
    case kExitTimeout:
      return 4;
    case kExitRejected:
      return 3;
    case kExitJobFailed:
      return 2;
    case kExitOk:
      return 0;
    default:
      return 6;
  }
}

}  // namespace

int Worst(int a, int b) { return Severity(b) > Severity(a) ? b : a; }

std::string Msg(const absl::Status& status) {
  return std::string(status.message());
}

void PrintError(std::string_view message) {
  std::fflush(stdout);
  fmt::print(stderr, "jobctl: {}\n", message);
}

int Fail(const absl::Status& status) {
  PrintError(Msg(status));
  return ExitCodeFor(status);
}

int Usage(std::string_view message) {
  PrintError(message);
  return kExitUsage;
}

}  // namespace jobd::jobctl
