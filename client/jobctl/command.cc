#include "client/jobctl/command.h"

#include <CLI/CLI.hpp>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/jobctl/args.h"
#include "client/jobctl/exit_codes.h"
#include "jobd/v1/default_address.h"

namespace jobd::jobctl {

void AddGlobalOptions(CLI::App& app, Globals* g) {
  app.add_option("-a,--address", g->address,
                 "jobd gRPC address: unix:/path or host:port (default: "
                 "$JOBD_ADDRESS, else " +
                     jobd::v1::DefaultClientAddress() + ")");
  app.add_flag("--json", g->json, "Machine output: one JSON object per line");
  app.add_option("--token", g->token,
                 "Bearer token for a jobd with --auth-token (default: "
                 "$JOBD_TOKEN)");
  app.add_flag("--tls", g->tls,
               "TLS to a TCP address, verified with the system's CAs "
               "(implied by --tls-ca or --tls-cert)");
  app.add_option("--tls-ca", g->tls_ca, "PEM CA bundle that verifies jobd");
  app.add_option("--tls-cert", g->tls_cert,
                 "PEM client certificate (mTLS), with --tls-key");
  app.add_option("--tls-key", g->tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", g->tls_server_name,
                 "Name expected in jobd's certificate, if not the host");
  app.add_option("--rpc-timeout", g->rpc_timeout, "Deadline of each unary RPC")
      ->capture_default_str();
  app.add_option("--connect-timeout", g->connect_timeout,
                 "How long to wait for jobd to be reachable")
      ->capture_default_str();
  app.add_option("--keepalive", g->keepalive,
                 "Ping jobd this often while waiting, to notice a dead "
                 "connection (0: never; at least 1s)")
      ->capture_default_str();
}

void AddRoutingOptions(CLI::App* command, std::string* kind,
                       std::string* executor) {
  command->add_option("--kind", *kind, "cpu, io or auto")
      ->capture_default_str();
  command->add_option("--executor", *executor,
                      "process, thread or reactor (default: jobd routes)");
}

int Connect(const Globals& g, std::unique_ptr<jobd::client::Client>* client) {
  jobd::client::ClientOptions options;
  options.address = g.address;
  absl::StatusOr<absl::Duration> rpc =
      ParseDurationArg(g.rpc_timeout, "--rpc-timeout");
  absl::StatusOr<absl::Duration> connect =
      ParseDurationArg(g.connect_timeout, "--connect-timeout");
  absl::StatusOr<absl::Duration> keepalive =
      ParseDurationArg(g.keepalive, "--keepalive");
  if (!rpc.ok()) return Usage(Msg(rpc.status()));
  if (!connect.ok()) return Usage(Msg(connect.status()));
  if (!keepalive.ok()) return Usage(Msg(keepalive.status()));
  if (*keepalive > absl::ZeroDuration() && *keepalive < absl::Seconds(1)) {
    return Usage(
        "--keepalive: at least 1s (jobd accepts a ping a second at "
        "most), or 0 for none");
  }
  options.rpc_timeout = *rpc;
  options.connect_timeout = *connect;
  options.keepalive = *keepalive;
  options.close_timeout = absl::Seconds(2);
  options.token = g.token;
  options.tls.enabled = g.tls || !g.tls_ca.empty() || !g.tls_cert.empty();
  options.tls.ca_file = g.tls_ca;
  options.tls.cert_file = g.tls_cert;
  options.tls.key_file = g.tls_key;
  options.tls.server_name = g.tls_server_name;
  absl::StatusOr<std::unique_ptr<jobd::client::Client>> connected =
      jobd::client::Client::Connect(options);
  if (!connected.ok()) return Fail(connected.status());
  *client = *std::move(connected);
  return kExitOk;
}

CLI::App* CommandSet::Add(CLI::App& app, const std::string& name,
                          const std::string& description, Run run) {
  CLI::App* command = app.add_subcommand(name, description);
  commands_.emplace_back(command, std::move(run));
  return command;
}

void DropMarkersWhileParsing(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    // A transform runs first of the option's validators, on each value
    // after CLI11 split the arguments (which the marker kept whole).
    option->transform(CLI::Validator(
        [](std::string& value) {
          DropMarker(&value);
          return std::string();
        },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands({})) DropMarkersWhileParsing(*sub);
}

std::optional<int> CommandSet::RunParsed(const Globals& g) const {
  for (const auto& [command, run] : commands_) {
    if (command->parsed()) return run(g);
  }
  return std::nullopt;
}

}  // namespace jobd::jobctl
