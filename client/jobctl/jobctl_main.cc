// jobctl: the command-line client of jobd. Thin: it builds the CLI11 app
// from the command groups (command.h) and runs the one subcommand given.
// Every RPC goes through the jobd_client library (client/client.h).
//
// Output: human-readable by default (aligned tables, results as compact
// JSON); with --json one JSON object per line (protobuf JSON mapping with
// proto field names, enum names, defaults printed). Errors go to stderr as
// "jobctl: <message>". Exit codes: exit_codes.h (also in `jobctl --help`).
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/interrupt.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

int Main(int argc, char** argv) {
  // This Debian absl checks Mutex lock order on every lock (deadlock
  // detection is compiled in); a CLI has no use for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Globals g;
  CLI::App app{
      "jobctl: command-line client of jobd, the job-execution daemon."};
  app.name("jobctl");
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  app.fallthrough();
  AddGlobalOptions(app, &g);
  CommandSet commands;  // Must outlive the parse: it owns the bound values.
  AddSubmitCommand(app, commands);
  AddMapCommand(app, commands);
  AddJobCommands(app, commands);
  AddLogsCommand(app, commands);
  AddDaemonCommands(app, commands);
  AddTopCommand(app, commands);
  AddScheduleCommand(app, commands);
  AddLimitCommand(app, commands);
  DropMarkersWhileParsing(app);

  std::vector<std::string> args = MarkedArgs(argc, argv);
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    PrintError(fmt::format("{} (see: jobctl --help)", e.what()));
    return kExitUsage;
  }

  StartSignalThread();
  if (std::optional<int> code = commands.RunParsed(g)) return *code;
  return Usage("no command given (see: jobctl --help)");
}

}  // namespace
}  // namespace jobd::jobctl

int main(int argc, char** argv) { return jobd::jobctl::Main(argc, argv); }
