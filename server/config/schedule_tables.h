// The config file's [[schedule]] tables (README: Schedules), read into the
// schedules the daemon keeps as the file says (ScheduleRunner::ApplyConfig):
//
//   [[schedule]]
//   id = "nightly-report"
//   cron = "30 2 * * *"          # or: every = "10m"
//   time_zone = "Europe/Berlin"  # cron only; default UTC
//   overlap = "skip"             # skip (default), queue or cancel
//   catch_up = "once"            # skip (default) or once
//   paused = false
//   job = { task = "exec", kind = "io", kwargs = { argv = ["/bin/true"] } }
//
// Checked here: the keys and their types, the id, the cron expression, the
// time zone and the interval; errors name the table and key
// (`schedule[0].cron: ...`, `schedule[1].job.kind: ...`). The job's task
// and arguments are checked at start, against the registry.
//
// Thread-safety: pure functions.
#ifndef JOBD_SERVER_CONFIG_SCHEDULE_TABLES_H_
#define JOBD_SERVER_CONFIG_SCHEDULE_TABLES_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/schedules/runner.h"

namespace jobd {

// The [[schedule]] tables of the TOML text `toml_text` (none: empty), or
// InvalidArgument naming the table, key and line.
absl::StatusOr<std::vector<schedules::ScheduleRunner::ConfigSchedule>>
ParseScheduleTables(std::string_view toml_text);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_SCHEDULE_TABLES_H_
