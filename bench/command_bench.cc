// command_bench: what a command task ([[task]] in the config file) costs
// over starting the same program directly, measured in one run.
//
//   bare:     posix_spawn + waitpid of the program, in this process
//   jobd:     one job of a command task running that program, submitted on
//             an open Submit stream and its result awaited (start to
//             result, as a client sees it), sequentially; IO-bound (the
//             reactor) and CPU-bound (a process-pool slot)
//   overhead: the same round trip of the no-op built-in `echo` (what any
//             job costs jobd and gRPC, without a program)
//   reactor:  the command task's TaskDef run by a ReactorExecutor in this
//             process (Start to OnJobFinished: no gRPC, no scheduler),
//             without and then with the guardian's PID and mount
//             namespaces (this process starts a guardian, as jobd does)
// and prints p50/p90 and the ratios to bare. See bench/README.md.
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/machine.h"
#include "grpcpp/grpcpp.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/daemon_harness.h"
#include "workers/os/guardian.h"
#include "workers/reactor/reactor.h"
#include "workers/sdk/task_registry.h"
#include "workers/tasks/command_task.h"
#include "workers/tasks/io_tasks.h"

extern char** environ;

namespace jobd::bench {
namespace {

struct Latency {
  std::vector<double> us;
  double P(double q) {
    if (us.empty()) return 0;
    std::sort(us.begin(), us.end());
    return us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))];
  }
};

Latency Bare(const std::vector<std::string>& argv, int rounds) {
  std::vector<char*> cargv;
  for (const std::string& a : argv)
    cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  char path[] = "PATH=/usr/local/bin:/usr/bin:/bin";
  char* env[] = {path, nullptr};
  Latency lat;
  for (int i = 0; i < rounds; ++i) {
    const absl::Time t = absl::Now();
    pid_t pid;
    if (posix_spawn(&pid, cargv[0], nullptr, nullptr, cargv.data(), env) != 0) {
      break;
    }
    int status;
    waitpid(pid, &status, 0);
    lat.us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  return lat;
}

Latency RoundTrip(v1::JobService::Stub& stub, const v1::JobSpec& spec,
                  int rounds, Latency* spawned = nullptr) {
  Latency lat;
  grpc::ClientContext ctx;
  auto stream = stub.Submit(&ctx);
  v1::SubmitRequest req;
  req.mutable_options()->set_terminal_only(true);
  auto* item = req.add_items();
  *item->mutable_spec() = spec;
  v1::SubmitResponse resp;
  int failed = 0;
  for (int i = 0; i < rounds; ++i) {
    item->set_client_tag(i);
    const absl::Time t = absl::Now();
    if (!stream->Write(req)) break;
    req.clear_options();
    bool done = false;
    while (!done && stream->Read(&resp)) {
      for (const auto& e : resp.events()) {
        if (v1::EndsSubmitItem(e.type())) {
          done = true;
          failed += e.type() != v1::EVENT_TYPE_SUCCEEDED;
          const auto& f = e.result().value().struct_value().fields();
          if (spawned != nullptr && f.contains("duration_ms")) {
            spawned->us.push_back(1000 * f.at("duration_ms").number_value());
          }
        }
      }
    }
    if (!done) break;
    lat.us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  stream->WritesDone();
  stream->Finish();
  if (failed > 0) std::fprintf(stderr, "warning: %d jobs failed\n", failed);
  return lat;
}

// A task run by a reactor in this process, sequentially; `spawned` gets
// exec's duration_ms (its program's life, from spawned to reaped).
Latency InProcess(const TaskDef& def, std::shared_ptr<v1::JobSpec> job,
                  int rounds, Latency* spawned = nullptr) {
  struct Listener : ExecutorListener {
    absl::Mutex mu;
    absl::Notification* done = nullptr;
    JobOutcome last;
    bool ok = true;
    void OnJobProgress(uint64_t, double, std::string_view) override {}
    void OnJobFinished(uint64_t, JobOutcome outcome) override {
      absl::MutexLock lock(&mu);
      ok = ok && outcome.status.ok();
      last = std::move(outcome);
      done->Notify();
    }
  } listener;
  auto args = std::make_shared<const TaskArgs>(*TaskRegistry::Bind(def, job));
  Latency lat;
  ReactorExecutor reactor({.threads = 1}, listener);
  for (int i = 0; i < rounds; ++i) {
    absl::Notification done;
    {
      absl::MutexLock lock(&listener.mu);
      listener.done = &done;
    }
    JobRun run;
    run.job_id = i + 1;
    run.task = &def;
    run.args = args;
    run.cancel = std::make_shared<CancelToken>();
    const absl::Time t = absl::Now();
    reactor.Start(std::move(run));
    done.WaitForNotification();
    lat.us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
    absl::MutexLock lock(&listener.mu);
    if (spawned != nullptr && listener.last.output.value.has_struct_value()) {
      spawned->us.push_back(1000 * listener.last.output.value.struct_value()
                                       .fields()
                                       .at("duration_ms")
                                       .number_value());
    }
  }
  reactor.Shutdown(absl::Now() + absl::Seconds(10));
  if (!listener.ok) std::fprintf(stderr, "warning: in-process runs failed\n");
  return lat;
}

int Run(int argc, char** argv) {
  // Before any thread, as jobd's main() does.
  absl::StatusOr<Guardian> guardian = StartGuardian("command-bench");
  CLI::App app{"command_bench: command tasks against posix_spawn + wait"};
  int rounds = 500;
  std::string program = "/bin/true";
  app.add_option("--rounds", rounds, "Sequential runs of each kind")
      ->capture_default_str();
  app.add_option("--program", program, "The program (no arguments)")
      ->capture_default_str();
  std::vector<std::string> jobd_args;
  app.add_option("--jobd-arg", jobd_args,
                 "An extra flag for jobd (repeatable, e.g. "
                 "--jobd-arg=--thread-workers=1)");
  CLI11_PARSE(app, argc, argv);

  testing::TempDir dir("jobd-command-bench");
  const std::string config = dir.path() + "/jobd.toml";
  std::ofstream(config) << "[[task]]\nname = \"prog\"\ncommand = [\"" << program
                        << "\"]\n";
  std::vector<std::string> args = {
      "--config",     config, "--durability",      "none",
      "--log-level",  "warn", "--process-workers", "2",
      "--exec-allow", program};
  args.insert(args.end(), jobd_args.begin(), jobd_args.end());
  auto daemon = testing::Daemon::Start(args);
  if (!daemon.ok()) {
    std::fprintf(stderr, "jobd: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  auto stub = (*daemon)->NewStub();
  v1::JobSpec io;
  io.set_task("prog");
  io.set_kind(v1::JOB_KIND_IO_BOUND);
  v1::JobSpec cpu = io;
  cpu.set_kind(v1::JOB_KIND_CPU_BOUND);
  v1::JobSpec echo;
  echo.set_task("echo");
  echo.set_kind(v1::JOB_KIND_IO_BOUND);
  v1::JobSpec nap;  // A timer task of 0 ms: the reactor's own path.
  nap.set_task("sleep");
  nap.set_kind(v1::JOB_KIND_IO_BOUND);
  nap.set_executor(v1::EXECUTOR_REACTOR);
  nap.add_args()->set_number_value(0);
  v1::JobSpec exec;  // exec's run of the same program: its duration_ms.
  exec.set_task("exec");
  exec.set_kind(v1::JOB_KIND_IO_BOUND);
  (*exec.mutable_kwargs()->mutable_fields())["argv"]
      .mutable_list_value()
      ->add_values()
      ->set_string_value(program);
  auto plain = std::make_shared<const ExecSandbox>();
  auto in_ns = std::make_shared<ExecSandbox>();
  if (guardian.ok()) {
    in_ns->pid_ns_fd = guardian->pid_ns.get();
    in_ns->mount_ns_fd = guardian->mount_ns.get();
    in_ns->notify_fd = guardian->notify.get();
  }

  utsname u{};
  uname(&u);
  std::printf("command_bench: %s, %ld CPUs, %s %s; program %s, %d rounds\n",
              CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN), u.sysname,
              u.release, program.c_str(), rounds);
  // Warm up both sides.
  Bare({program}, 50);
  RoundTrip(*stub, io, 50);
  RoundTrip(*stub, cpu, 50);
  RoundTrip(*stub, echo, 50);
  auto spec = std::make_shared<CommandSpec>();
  spec->name = "prog";
  spec->origin = "bench";
  spec->command = {program};
  const TaskDef plain_def = *CommandTask(spec, nullptr, plain);
  const TaskDef ns_def = *CommandTask(spec, nullptr, in_ns);
  const TaskDef exec_def =
      ExecTask(std::make_shared<ExecPolicy>(ExecOptions{.allow = {program}}),
               in_ns, 4 << 20);
  auto empty = std::make_shared<v1::JobSpec>();
  auto exec_job = std::make_shared<v1::JobSpec>(exec);
  InProcess(plain_def, empty, 50);
  InProcess(ns_def, empty, 50);
  InProcess(exec_def, exec_job, 50);
  // Interleaved in blocks, so that drift of the machine hits all alike.
  Latency bare, job_io, job_cpu, overhead, nap_lat, reactor, reactor_ns;
  Latency exec_trip, exec_life, local_exec, local_life;
  const int block = 50;
  for (int done = 0; done < rounds; done += block) {
    const int n = std::min(block, rounds - done);
    for (double v : Bare({program}, n).us) bare.us.push_back(v);
    for (double v : RoundTrip(*stub, io, n).us) job_io.us.push_back(v);
    for (double v : RoundTrip(*stub, cpu, n).us) job_cpu.us.push_back(v);
    for (double v : RoundTrip(*stub, echo, n).us) overhead.us.push_back(v);
    for (double v : RoundTrip(*stub, nap, n).us) nap_lat.us.push_back(v);
    for (double v : InProcess(plain_def, empty, n).us) {
      reactor.us.push_back(v);
    }
    for (double v : InProcess(ns_def, empty, n).us) reactor_ns.us.push_back(v);
    for (double v : InProcess(exec_def, exec_job, n, &local_life).us) {
      local_exec.us.push_back(v);
    }
    for (double v : RoundTrip(*stub, exec, n, &exec_life).us) {
      exec_trip.us.push_back(v);
    }
  }
  const double base = bare.P(0.5);
  std::printf("\n%-52s %9s %9s %9s\n", "start to result (sequential)", "p50 us",
              "p90 us", "p50/bare");
  auto row = [&](const char* name, Latency& l) {
    std::printf("%-52s %9.0f %9.0f %9.2f\n", name, l.P(0.5), l.P(0.9),
                l.P(0.5) / base);
  };
  row("posix_spawn + waitpid (bare)", bare);
  row("command task, kind io (reactor)", job_io);
  row("command task, kind cpu (process-pool slot)", job_cpu);
  row("no-op `echo` job (jobd + gRPC, no program)", overhead);
  row("no-op `sleep 0` job on the reactor (jobd + gRPC)", nap_lat);
  row("reactor in this process, no namespaces", reactor);
  row(guardian.ok() && guardian->pid_ns.valid()
          ? "reactor in this process, guardian's namespaces"
          : "reactor in this process, guardian (no namespaces)",
      reactor_ns);
  std::printf(
      "\nwhere the time goes: exec of the same program (its result's "
      "duration_ms: spawned to reaped)\n");
  row("exec job through jobd (start to result)", exec_trip);
  row("  of which the program's life in jobd (duration_ms)", exec_life);
  row("exec in this process's reactor, guardian's namespaces", local_exec);
  row("  of which the program's life here (duration_ms)", local_life);
  return 0;
}

}  // namespace
}  // namespace jobd::bench

int main(int argc, char** argv) { return jobd::bench::Run(argc, argv); }
