// What a jobd run leaves behind if it dies, and the next run's cleanup.
//
// STATE_DIR/jobd.procs (mode 0600) names the run: its instance id, which
// every program exec starts carries in its environment (JOBD_INSTANCE,
// workers/guardian.h), and the helper processes main() forked (the
// guardian, the fork server) with their start times, so that a later
// process that reused a pid is never taken for one of them. The next jobd
// on the same state directory, once it holds the directory's lock (so the
// previous one is gone), kills all of that and waits for it to die before
// it restores the journal: no at-least-once job re-runs beside its first
// copy, and no program of a job reported LOST_ON_RESTART runs on.
//
// Thread-safety: plain functions; main() calls them before any job runs.
#ifndef JOBD_SERVER_DAEMON_LEFTOVERS_H_
#define JOBD_SERVER_DAEMON_LEFTOVERS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace jobd {

// Kills what the run recorded in `state_dir` left running; returns how many
// processes it killed (0 without a record).
absl::StatusOr<int> KillLeftovers(const std::string& state_dir);

// Records this run (replacing the previous record).
absl::Status RecordRun(const std::string& state_dir,
                       const std::string& instance_id,
                       const std::vector<pid_t>& helpers);

}  // namespace jobd

#endif  // JOBD_SERVER_DAEMON_LEFTOVERS_H_
