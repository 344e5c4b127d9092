// jobctl limit: the limits of concurrency keys (JobSpec.concurrency_key,
// `jobctl submit --key`). `limit set KEY [N] [--rate R]` sets a key's
// limits (admin; they replace what the key had from a set before),
// `limit clear KEY` drops them (the config's apply again), `limit ls`
// lists the keys with limits or jobs. See command.h for how it plugs in.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/format.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;

struct LimitArgs {
  std::string key;
  uint32_t max_running = 0;  // With `has_max_running`.
  double rate = 0;           // With `has_rate`.
  CLI::Option* max_running_option = nullptr;
  CLI::Option* rate_option = nullptr;
};

std::string LimitText(uint32_t n) {
  return n == 0 ? "-" : fmt::format("{}", n);
}

std::string RateText(double r) {
  return r <= 0 ? "-" : fmt::format("{:g}/s", r);
}

void PrintKeys(const Globals& g, const std::vector<v1::KeyLimit>& keys) {
  if (g.json) {
    for (const v1::KeyLimit& k : keys) PrintJson(k);
    return;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"KEY", "MAX_RUNNING", "RATE", "RUNNING", "PARKED", "FROM"});
  for (const v1::KeyLimit& k : keys) {
    rows.push_back(
        {k.key(), LimitText(k.max_running()),
         RateText(k.max_starts_per_second()), fmt::format("{}", k.running()),
         fmt::format("{}", k.parked()), k.source().empty() ? "-" : k.source()});
  }
  PrintTable(rows);
}

int RunSet(const Globals& g, const LimitArgs& a, bool clear) {
  v1::SetKeyLimitRequest request;
  request.set_key(a.key);
  if (clear) {
    request.set_clear(true);
  } else {
    if (a.max_running_option->count() == 0 && a.rate_option->count() == 0) {
      return Usage(
          "limit set: give N (jobs at once) or --rate (starts per "
          "second), or both");
    }
    if (a.max_running_option->count() > 0) {
      request.set_max_running(a.max_running);
    }
    if (a.rate_option->count() > 0) {
      request.set_max_starts_per_second(a.rate);
    }
  }
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<v1::KeyLimit> key = client->SetKeyLimit(request);
  if (!key.ok()) return Fail(key.status());
  PrintKeys(g, {*key});
  return kExitOk;
}

int RunList(const Globals& g) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  absl::StatusOr<std::vector<v1::KeyLimit>> keys = client->GetKeyLimits();
  if (!keys.ok()) return Fail(keys.status());
  PrintKeys(g, *keys);
  return kExitOk;
}

}  // namespace

void AddLimitCommand(CLI::App& app, CommandSet& commands) {
  CLI::App* limit = app.add_subcommand(
      "limit", "Limits of concurrency keys (jobs submitted with --key)");
  limit->require_subcommand(1);
  auto set = std::make_shared<LimitArgs>();
  CLI::App* set_cmd = commands.Add(
      *limit, "set",
      "Set a key's limits (admin): at most N of its jobs at once, at most "
      "--rate starts per second; they replace the key's earlier ones",
      [set](const Globals& g) { return RunSet(g, *set, /*clear=*/false); });
  set_cmd->add_option("key", set->key, "Concurrency key")->required();
  set->max_running_option = set_cmd->add_option(
      "max_running", set->max_running, "Jobs of the key running at once");
  set->rate_option = set_cmd->add_option("--rate", set->rate,
                                         "Jobs of the key started per second");
  auto clear = std::make_shared<LimitArgs>();
  CLI::App* clear_cmd = commands.Add(
      *limit, "clear",
      "Drop the limits set for a key (admin); the config's apply again",
      [clear](const Globals& g) { return RunSet(g, *clear, /*clear=*/true); });
  clear_cmd->add_option("key", clear->key, "Concurrency key")->required();
  commands.Add(*limit, "ls", "List the keys with limits or jobs", RunList);
}

}  // namespace jobd::jobctl
