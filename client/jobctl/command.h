// What every jobctl command shares: the global options (address, --json,
// timeouts, auth, TLS), connecting to jobd, and the CommandSet through which
// each command group adds its subcommands to main's CLI11 app:
//
//   submit_command.cc   AddSubmitCommand    submit
//   map_command.cc      AddMapCommand       map
//   job_commands.cc     AddJobCommands      get, wait, watch, cancel, ls
//   logs_command.cc     AddLogsCommand      logs
//   daemon_commands.cc  AddDaemonCommands   tasks, stats, drain, unquarantine
//   top_command.cc      AddTopCommand       top
//   schedule_command.cc AddScheduleCommand  schedule add|ls|get|pause|
//                                           resume|rm
//   limit_command.cc    AddLimitCommand     limit set|clear|ls
//
// What they use: args.h (parsing of argument values), format.h (output),
// top_format.h (top's frames), exit_codes.h (exit codes, error lines),
// interrupt.h (Ctrl-C), line_reader.h (map's stdin).
//
// A group binds its options to values it allocates and hands them, inside
// its run function, to the CommandSet; main parses, then runs the one
// subcommand that was given.
//
// Thread-safety: all of this runs on main's thread (a command's Ctrl-C
// action excepted: interrupt.h). Ownership: the CommandSet owns the run
// functions and, through them, the values CLI11 writes into; it must
// outlive the parse. Connect() hands its caller the sole owner of a Client.
#ifndef JOBD_CLIENT_JOBCTL_COMMAND_H_
#define JOBD_CLIENT_JOBCTL_COMMAND_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "client/client.h"

namespace CLI {
class App;
}  // namespace CLI

namespace jobd::jobctl {

// Options shared by every command.
struct Globals {
  std::string address;
  bool json = false;
  std::string rpc_timeout = "30s";
  std::string connect_timeout = "5s";
  std::string keepalive = "20s";  // ClientOptions::keepalive.
  std::string token;  // Empty: $JOBD_TOKEN (the client library reads it).
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
};

// Adds the global options (bound to *g) to the app.
void AddGlobalOptions(CLI::App& app, Globals* g);

// --kind and --executor of submit and map (parsed by ParseRouting, args.h).
void AddRoutingOptions(CLI::App* command, std::string* kind,
                       std::string* executor);

// Connects to jobd as *g says. kExitOk with *client set; else the error
// was printed and its exit code is returned (2 for a bad --rpc-timeout or
// --connect-timeout, 3 when jobd is unreachable, ...).
int Connect(const Globals& g, std::unique_ptr<jobd::client::Client>* client);

class CommandSet {
 public:
  // Runs a parsed subcommand; returns the exit code.
  using Run = std::function<int(const Globals&)>;

  CommandSet() = default;
  CommandSet(const CommandSet&) = delete;
  CommandSet& operator=(const CommandSet&) = delete;

  // Adds the subcommand `name` to `app`; `run` runs it if it was given.
  CLI::App* Add(CLI::App& app, const std::string& name,
                const std::string& description, Run run);

  // Runs the subcommand that was parsed; nullopt if none was.
  std::optional<int> RunParsed(const Globals& g) const;

 private:
  std::vector<std::pair<CLI::App*, Run>> commands_;
};

// Makes every option of `app` and of its subcommands, as they are now,
// drop the marker (args.h) from each value before it checks or stores it:
// an argument written [x] reaches its command as [x], whatever the option.
// Call once every option is added, before the parse.
void DropMarkersWhileParsing(CLI::App& app);

// The command groups, in the order `jobctl --help` lists them.
void AddSubmitCommand(CLI::App& app, CommandSet& commands);
void AddMapCommand(CLI::App& app, CommandSet& commands);
void AddJobCommands(CLI::App& app, CommandSet& commands);
void AddLogsCommand(CLI::App& app, CommandSet& commands);
void AddDaemonCommands(CLI::App& app, CommandSet& commands);
void AddTopCommand(CLI::App& app, CommandSet& commands);
void AddScheduleCommand(CLI::App& app, CommandSet& commands);
void AddLimitCommand(CLI::App& app, CommandSet& commands);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_COMMAND_H_
