// The config file reader: the whole file is parsed once by a real TOML
// parser (toml++), its plain keys handed to CLI11 as config items (so they
// set the options of the same long names, and an unknown key is an error
// as before), its [[task]] tables turned into command tasks
// (workers/tasks/command_task.h), each with the line it starts on, and its
// [[schedule]] tables into schedules (schedule_tables.h).
//
//   [[task]]
//   name = "thumbnail"
//   command = ["/usr/bin/convert", "{src}", "-resize", "{size}", "{dst}"]
//   params = { src = "string", size = "string = '256x256'", dst = "string" }
//   kind = "cpu"        # or "io" (the default)
//   timeout = "5m"      # the longest a job of it may run
//   result = "json"     # "text" (the default), "json" or "bytes"
//
// A parameter is "TYPE" (required), "TYPE = DEFAULT" (DEFAULT a TOML
// value) or a table { type = "TYPE", default = ..., help = "..." }; TYPE is
// string, int, number or bool. Parameters bind positionally in the order
// they are written.
//
// Thread-safety: a TomlConfig is used by one CLI::App::parse at a time;
// ParseTaskTable is a pure function.
#ifndef JOBD_SERVER_CONFIG_TOML_CONFIG_H_
#define JOBD_SERVER_CONFIG_TOML_CONFIG_H_

#include <istream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "server/schedules/runner.h"
#include "workers/tasks/command_task.h"

namespace jobd {

class TomlConfig : public CLI::Config {
 public:
  // Command tasks read by the last from_config go to *tasks, its
  // [[schedule]] tables (schedule_tables.h) to *schedules.
  TomlConfig(
      std::shared_ptr<std::vector<CommandSpec>> tasks,
      std::shared_ptr<std::vector<schedules::ScheduleRunner::ConfigSchedule>>
          schedules)
      : tasks_(std::move(tasks)), schedules_(std::move(schedules)) {}

  // Throws CLI::ConfigError naming the line for a TOML syntax error, a
  // value that is no option's (a date, a table in an array) or a malformed
  // [[task]].
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
  // Writing a config file is not supported (jobd has no --write-config).
  std::string to_config(const CLI::App*, bool, bool,
                        std::string) const override;

 private:
  std::shared_ptr<std::vector<CommandSpec>> tasks_;
  std::shared_ptr<std::vector<schedules::ScheduleRunner::ConfigSchedule>>
      schedules_;
};

// Parses the TOML text of a config file's [[task]] tables alone (for
// tests and tools): the command tasks, or InvalidArgument naming the line.
absl::StatusOr<std::vector<CommandSpec>> ParseCommandTasks(
    std::string_view toml_text);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_TOML_CONFIG_H_
