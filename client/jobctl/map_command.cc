// jobctl map: runs a task once per stdin line and prints one result per
// line, in input order (--ordered) or as jobs end, with a progress bar on a
// terminal's stderr; Ctrl-C cancels the stream. See command.h for how it
// plugs in.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/format.h"
#include "client/jobctl/interrupt.h"
#include "client/jobctl/line_reader.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;
using jobd::client::InputStatus;
using jobd::client::MapOptions;
using jobd::client::MapResult;
using jobd::client::MapStream;
using jobd::client::ToJson;

struct MapArgs {
  std::string task;
  bool ordered = false;
  uint32_t window = 8192;
  std::string kind = "auto";
  std::string executor;
  std::string timeout;
  int priority = 0;
  std::string deadline;
  uint32_t chunksize = 1;
  bool at_least_once = false;
  bool no_progress = false;
};

// "12/40+ done, 350 jobs/s, 1 failed" on stderr, redrawn at most every
// 100 ms unless forced.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}

  void Update(const MapStream& m, uint64_t failed, bool force) {
    if (!enabled_) return;
    const absl::Time now = absl::Now();
    if (!force && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    const double secs = std::max(1e-6, absl::ToDoubleSeconds(now - start_));
    const uint64_t done = m.completed();
    fmt::print(stderr, "\r\033[K{}/{}{} done, {:.0f} jobs/s{}", done,
               m.submitted(), m.inputs_done() ? "" : "+", done / secs,
               failed > 0 ? fmt::format(", {} failed", failed) : "");
    std::fflush(stderr);
    shown_ = true;
  }

  void Clear() {
    if (enabled_ && shown_) {
      fmt::print(stderr, "\r\033[K");
      std::fflush(stderr);
      shown_ = false;
    }
  }

 private:
  bool enabled_;
  bool shown_ = false;
  absl::Time start_ = absl::Now();
  absl::Time last_ = absl::InfinitePast();
};

// Appends one result's line: with --json an object with its index, job id,
// state and result or error; else the result (or "STATE: error"), prefixed
// with the index and a tab unless the output is in input order.
void AppendResult(std::string* out, const MapResult& r, bool json,
                  bool ordered) {
  if (json) {
    *out += fmt::format("{{\"index\":{}", r.index);
    if (!r.status.ok()) {
      *out += ",\"state\":\"REJECTED\",\"error\":";
      *out += ToJson(r.outcome.error, true);
    } else {
      *out += fmt::format(",\"job_id\":\"{}\",\"state\":\"{}\"",
                          r.outcome.job_id, StateName(r.outcome.state));
      if (r.outcome.ok()) {
        *out += ",\"result\":";
        AppendJson(out, r.outcome.result.value());
        if (!r.outcome.result.payload().empty()) {
          *out += ",\"payload\":\"";
          *out += absl::Base64Escape(r.outcome.result.payload());
          *out += '"';
        }
      } else {
        *out += ",\"error\":";
        *out += ToJson(r.outcome.error, true);
      }
    }
    *out += "}\n";
    return;
  }
  if (!ordered) fmt::format_to(std::back_inserter(*out), "{}\t", r.index);
  if (!r.status.ok()) {
    fmt::format_to(std::back_inserter(*out), "REJECTED: {}\n", Msg(r.status));
  } else if (r.outcome.ok()) {
    AppendJson(out, r.outcome.result.value());
    *out += '\n';
  } else {
    fmt::format_to(std::back_inserter(*out), "{}: {}\n",
                   StateName(r.outcome.state), ErrorText(r.outcome.error));
  }
}

int RunMap(const Globals& g, const MapArgs& a) {
  MapOptions options;
  options.ordered = a.ordered;
  if (a.window == 0) return Usage("--window: must be > 0");
  options.window = a.window;
  auto routing = ParseRouting(a.kind, a.executor);
  if (!routing.ok()) return Usage(Msg(routing.status()));
  options.kind = routing->first;
  options.executor = routing->second;
  auto timeout = ParseOptionalDuration(a.timeout, "--timeout", options.timeout);
  if (!timeout.ok()) return Usage(Msg(timeout.status()));
  options.timeout = *timeout;
  auto deadline =
      ParseOptionalDuration(a.deadline, "--deadline", options.deadline);
  if (!deadline.ok()) return Usage(Msg(deadline.status()));
  options.deadline = *deadline;
  options.priority = a.priority;
  options.chunksize = a.chunksize;
  if (a.at_least_once) options.delivery = v1::DELIVERY_AT_LEAST_ONCE;

  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  LineReader lines(STDIN_FILENO);
  MapStream stream = client->MapSpecs(
      a.task,
      [&lines](v1::JobSpec* spec, bool may_block) {
        std::string_view line;
        const InputStatus st = lines.Next(&line, may_block);
        if (st == InputStatus::kReady) LineToValue(line, spec->add_args());
        return st;
      },
      options);
  OnInterrupt([&stream] { stream.Cancel(); });

  ProgressBar bar(!a.no_progress && ::isatty(STDERR_FILENO));
  const bool stdout_tty = ::isatty(STDOUT_FILENO);
  std::string out;
  out.reserve(1 << 17);
  uint64_t failed = 0, rejected = 0;
  int code_for_input = kExitOk;
  MapResult r;
  auto flush = [&out] {
    if (out.empty()) return;
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    out.clear();
  };
  while (stream.Next(&r)) {
    if (!r.status.ok()) {
      ++rejected;
    } else if (!r.outcome.ok()) {
      ++failed;
    }
    AppendResult(&out, r, g.json, a.ordered);
    // Flush before Next() would wait for the network, or when much is
    // buffered. On a shared terminal, lift the bar off the output first.
    if (out.size() > (1 << 16) || !stream.ready()) {
      if (stdout_tty) bar.Clear();
      flush();
      bar.Update(stream, failed + rejected, /*force=*/stdout_tty);
    } else {
      bar.Update(stream, failed + rejected, /*force=*/false);
    }
  }
  flush();
  bar.Clear();
  OnInterrupt(nullptr);
  if (!lines.error().empty()) {
    PrintError(lines.error());
    code_for_input = kExitRejected;
  }
  const absl::Status status = stream.status();
  int code = code_for_input;
  if (rejected > 0) code = Worst(code, kExitRejected);
  if (failed > 0) code = Worst(code, kExitJobFailed);
  if (!status.ok()) {
    if (status.code() == absl::StatusCode::kCancelled) {
      PrintError(fmt::format("interrupted: {}", Msg(status)));
      return kExitInterrupted;
    }
    PrintError(Msg(status));
    code = Worst(code, ExitCodeFor(status));
  }
  if (failed + rejected > 0) {
    PrintError(
        fmt::format("{} of {} job(s) did not succeed ({} failed or "
                    "cancelled, {} rejected)",
                    failed + rejected, stream.completed(), failed, rejected));
  }
  return code;
}

}  // namespace

void AddMapCommand(CLI::App& app, CommandSet& commands) {
  auto map = std::make_shared<MapArgs>();
  CLI::App* cmd = commands.Add(
      app, "map",
      "Run TASK once per stdin line (the line, parsed as JSON if it parses, "
      "else as a string, is the single argument); print one result per line",
      [map](const Globals& g) { return RunMap(g, *map); });
  cmd->add_option("task", map->task, "Task name")->required();
  cmd->add_flag("--ordered", map->ordered,
                "Print results in input order (default: as jobs end, "
                "each line prefixed with the input's 0-based index and "
                "a tab)");
  cmd->add_option("--window", map->window, "Jobs in flight at most")
      ->capture_default_str();
  AddRoutingOptions(cmd, &map->kind, &map->executor);
  cmd->add_option("--chunksize", map->chunksize,
                  "Process pool: send jobs to a worker in chunks of up "
                  "to this many (for many tiny jobs)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  cmd->add_flag("--at-least-once", map->at_least_once,
                "Jobs running when jobd stops run again at its next "
                "start (default: they fail LOST_ON_RESTART)");
  cmd->add_option("--priority", map->priority, "Higher runs first")
      ->capture_default_str();
  cmd->add_option("--timeout", map->timeout,
                  "Run-time limit of each job (e.g. 30s)");
  cmd->add_option("--deadline", map->deadline,
                  "Give up on the whole map after this long (exit 5)");
  cmd->add_flag("--no-progress", map->no_progress,
                "No progress bar on stderr (shown only on a terminal)");
}

}  // namespace jobd::jobctl
