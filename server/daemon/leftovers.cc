#include "server/daemon/leftovers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "workers/os/guardian.h"
#include "workers/os/unique_fd.h"

namespace jobd {
namespace {

constexpr char kRecordFile[] = "/jobd.procs";
// How long a killed process may take to die before jobd goes on anyway.
constexpr absl::Duration kDeathWait = absl::Seconds(10);

bool IsInstanceId(const std::string& id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<int> KillLeftovers(const std::string& state_dir) {
  const std::string path = state_dir + kRecordFile;
  std::ifstream in(path);
  if (!in) return 0;  // No earlier run here (or it predates the record).
  int killed = 0;
  std::string instance;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "instance") {
      words >> instance;
    } else if (kind == "process") {
      pid_t pid = 0;
      uint64_t start = 0;
      if (words >> pid >> start && pid > 0 &&
          KillIfStartedAt(pid, start, kDeathWait)) {
        ++killed;
      }
    }
  }
  if (!instance.empty()) {
    if (!IsInstanceId(instance)) {
      return absl::DataLossError(absl::StrCat(path, ": not a jobd run id: '",
                                              instance.substr(0, 64), "'"));
    }
    killed += KillProcessesWithEnv(absl::StrCat(kInstanceEnv, "=", instance),
                                   kDeathWait);
  }
  return killed;
}

absl::Status RecordRun(const std::string& state_dir,
                       const std::string& instance_id,
                       const std::vector<pid_t>& helpers) {
  std::string text = absl::StrCat("instance ", instance_id, "\n");
  for (pid_t pid : helpers) {
    if (const uint64_t start = ProcessStartTime(pid); start != 0) {
      absl::StrAppend(&text, "process ", pid, " ", start, "\n");
    }
  }
  const std::string path = state_dir + kRecordFile;
  const std::string tmp = path + ".tmp";
  UniqueFd fd(
      open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid() || fchmod(fd.get(), 0600) != 0 ||
      write(fd.get(), text.data(), text.size()) !=
          static_cast<ssize_t>(text.size()) ||
      rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot record this run in ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace jobd
