// jobctl logs: a job's output (README: Job output). `jobctl logs ID`
// prints what jobd keeps of it; `jobctl logs -f ID` then follows it live
// and exits once the job has ended, with the job's exit code (0 SUCCEEDED,
// 1 FAILED or CANCELLED). What the job's programs wrote to stdout goes to
// stdout, their stderr and the task's log lines to stderr, as written;
// output jobd no longer had (only the tail is kept, or this reader fell
// behind) is marked on stderr: "jobctl: [N bytes of output dropped]".
// See command.h for how it plugs in.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "client/client.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;

int RunLogs(const Globals& g, const std::string& id, bool follow,
            uint64_t offset) {
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  bool ended = false;
  absl::Status status = client->StreamOutput(
      id, {.offset = offset, .follow = follow},
      [&ended](const v1::StreamJobOutputResponse& r) {
        if (r.dropped_bytes() > 0) {
          std::fflush(stdout);
          fmt::print(stderr, "jobctl: [{} bytes of output dropped]\n",
                     r.dropped_bytes());
        }
        for (const v1::OutputChunk& c : r.chunks()) {
          if (c.stream() == v1::OUTPUT_STREAM_STDOUT) {
            std::fwrite(c.data().data(), 1, c.data().size(), stdout);
          } else {
            std::fflush(stdout);  // Both streams in the order written.
            std::fwrite(c.data().data(), 1, c.data().size(), stderr);
          }
        }
        std::fflush(stdout);
        ended |= r.ended();
        return true;
      });
  if (!status.ok()) return Fail(status);
  if (!follow) return kExitOk;
  if (!ended) {
    PrintError("the output stream ended before the job did");
    return kExitUnavailable;
  }
  // How it ended, once that is durable.
  absl::StatusOr<v1::Job> job = client->GetJob(id);
  if (!job.ok()) return Fail(job.status());
  return JobExitCode(job->state());
}

}  // namespace

void AddLogsCommand(CLI::App& app, CommandSet& commands) {
  struct Args {
    std::string id;
    bool follow = false;
    uint64_t offset = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* logs_cmd = commands.Add(
      app, "logs",
      "Print a job's output (its programs' stdout/stderr, its log lines); "
      "-f: follow it until the job ends (exit code: the job's)",
      [a](const Globals& g) {
        return RunLogs(g, a->id, a->follow, a->offset);
      });
  logs_cmd->add_option("id", a->id, "Job id")->required();
  logs_cmd->add_flag("-f,--follow", a->follow,
                     "Follow the output live until the job ends");
  logs_cmd->add_option("--offset", a->offset,
                       "Start at this byte of the output (0: the oldest kept)");
}

}  // namespace jobd::jobctl
