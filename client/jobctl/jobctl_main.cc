// jobctl: the command-line client of jobd. Thin: every RPC goes through the
// jobd_client library (client/client.h).
//
// Output: human-readable by default (aligned tables, results as compact
// JSON); with --json one JSON object per line (protobuf JSON mapping with
// proto field names, enum names, defaults printed). Errors go to stderr as
// "jobctl: <message>".
//
// Exit codes (also in `jobctl --help`):
//   0    success
//   1    a job ended FAILED or CANCELLED (or any did, for map / wait), or
//        another error
//   2    usage error (bad flag, argument or value)
//   3    jobd unreachable (connect failure, UNAVAILABLE)
//   4    request rejected (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
//        ...: e.g. unknown task, unknown job id)
//   5    timed out waiting (DEADLINE_EXCEEDED)
//   130  interrupted (Ctrl-C during map)
// When several apply (map, wait) the most severe wins: 3 > 5 > 4 > 1.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "google/protobuf/util/time_util.h"
#include "jobd/v1/default_address.h"
#include "spdlog/fmt/fmt.h"

namespace {

using jobd::client::Client;
using jobd::client::Future;
using jobd::client::InputStatus;
using jobd::client::JobOutcome;
using jobd::client::MapOptions;
using jobd::client::MapResult;
using jobd::client::MapStream;
using jobd::client::ToJson;
using jobd::client::WatchOptions;
using jobd::client::WatchStream;
namespace v1 = jobd::v1;

enum ExitCode : int {
  kExitOk = 0,
  kExitJobFailed = 1,
  kExitUsage = 2,
  kExitUnavailable = 3,
  kExitRejected = 4,
  kExitTimeout = 5,
  kExitInterrupted = 130,
};

constexpr const char* kExitCodesHelp =
    "Exit codes:\n"
    "  0    success\n"
    "  1    a job ended FAILED or CANCELLED (any of them for map/wait), or "
    "another error\n"
    "  2    usage error (bad flag, argument or value)\n"
    "  3    jobd unreachable (connect failure, UNAVAILABLE)\n"
    "  4    request rejected (INVALID_ARGUMENT, NOT_FOUND, "
    "RESOURCE_EXHAUSTED, ...)\n"
    "  5    timed out waiting (DEADLINE_EXCEEDED)\n"
    "  130  interrupted (Ctrl-C during map)\n"
    "  When several apply (map, wait) the most severe wins: 3 > 5 > 4 > 1.\n"
    "Durations: 500ms, 2s, 1m, 1h30m, inf, or a number of seconds.\n"
    "Address: --address, else $JOBD_ADDRESS, else the default socket.";

// Marks argv values CLI11 would split (see main).
constexpr char kMarker = '\x01';

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kUnavailable:
      return kExitUnavailable;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitTimeout;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnauthenticated:
      return kExitRejected;
    default:
      return kExitJobFailed;
  }
}

// Severity order for combining outcomes: 3 > 5 > 4 > 1 > 0.
int Severity(int code) {
  switch (code) {
    case kExitUnavailable:
      return 5;
    case kExitTimeout:
      return 4;
    case kExitRejected:
      return 3;
    case kExitJobFailed:
      return 2;
    case kExitOk:
      return 0;
    default:
      return 6;
  }
}
int Worst(int a, int b) { return Severity(b) > Severity(a) ? b : a; }

std::string Msg(const absl::Status& status) {
  return std::string(status.message());
}

void PrintError(std::string_view message) {
  std::fflush(stdout);
  fmt::print(stderr, "jobctl: {}\n", message);
}

int Fail(const absl::Status& status) {
  PrintError(Msg(status));
  return ExitCodeFor(status);
}

int Usage(std::string_view message) {
  PrintError(message);
  return kExitUsage;
}

// --- Ctrl-C ------------------------------------------------------------------
// SIGINT/SIGTERM are blocked in every thread and taken by one sigwait
// thread: the first runs the registered interrupt action (e.g. cancel the
// map stream), or exits 130 if there is none; a second one exits 130.
absl::Mutex g_interrupt_mu;
std::function<void()> g_on_interrupt ABSL_GUARDED_BY(g_interrupt_mu);

void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int interrupts = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::function<void()> action;
      {
        absl::MutexLock lock(&g_interrupt_mu);
        action = g_on_interrupt;
      }
      if (!action || ++interrupts > 1) {
        std::fflush(stdout);
        std::_Exit(kExitInterrupted);
      }
      action();
    }
  }).detach();
}

void OnInterrupt(std::function<void()> action) {
  absl::MutexLock lock(&g_interrupt_mu);
  g_on_interrupt = std::move(action);
}

// --- Parsing helpers ---------------------------------------------------------

absl::StatusOr<absl::Duration> ParseDurationArg(const std::string& text,
                                                std::string_view flag) {
  absl::Duration d;
  if (absl::ParseDuration(text, &d)) {
    if (d < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: '{}' is negative", flag, text));
    }
    return d;
  }
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
  if (!text.empty() && ec == std::errc() && ptr == end &&
      std::isfinite(seconds) && seconds >= 0) {
    return absl::Seconds(seconds);
  }
  return absl::InvalidArgumentError(fmt::format(
      "{}: '{}' is not a duration (like 500ms, 2s, 1m, 1h30m)", flag, text));
}

// An optional duration flag: `fallback` when it was not given.
absl::StatusOr<absl::Duration> ParseOptionalDuration(const std::string& text,
                                                     std::string_view flag,
                                                     absl::Duration fallback) {
  if (text.empty()) return fallback;
  return ParseDurationArg(text, flag);
}

std::optional<v1::JobKind> ParseKind(std::string_view s) {
  if (s == "cpu" || s == "cpu-bound") return v1::JOB_KIND_CPU_BOUND;
  if (s == "io" || s == "io-bound") return v1::JOB_KIND_IO_BOUND;
  if (s == "auto") return v1::JOB_KIND_AUTO;
  return std::nullopt;
}

std::optional<v1::Executor> ParseExecutor(std::string_view s) {
  if (s == "process") return v1::EXECUTOR_PROCESS;
  if (s == "thread") return v1::EXECUTOR_THREAD;
  if (s == "reactor") return v1::EXECUTOR_REACTOR;
  if (s == "any" || s == "auto") return v1::EXECUTOR_UNSPECIFIED;
  return std::nullopt;
}

// --kind and --executor of submit and map; an empty --executor lets jobd
// route. InvalidArgument naming the flag otherwise.
absl::StatusOr<std::pair<v1::JobKind, v1::Executor>> ParseRouting(
    const std::string& kind_text, const std::string& executor_text) {
  std::optional<v1::JobKind> kind = ParseKind(kind_text);
  if (!kind) {
    return absl::InvalidArgumentError(
        fmt::format("--kind: '{}' is not one of cpu, io, auto", kind_text));
  }
  std::optional<v1::Executor> executor = executor_text.empty()
                                             ? v1::EXECUTOR_UNSPECIFIED
                                             : ParseExecutor(executor_text);
  if (!executor) {
    return absl::InvalidArgumentError(
        fmt::format("--executor: '{}' is not one of process, thread, reactor",
                    executor_text));
  }
  return std::make_pair(*kind, *executor);
}

std::optional<v1::JobState> ParseState(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(c));
  if (s.rfind("JOB_STATE_", 0) != 0) s = "JOB_STATE_" + s;
  v1::JobState state;
  if (!v1::JobState_Parse(s, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

// A JSON value from a line of text: fast paths for numbers, true/false/null
// and plain words; the JSON parser for the rest; invalid JSON -> string.
void LineToValue(std::string_view line, google::protobuf::Value* out) {
  if (line.empty()) {
    out->set_string_value("");
    return;
  }
  const char c = line.front();
  if ((c >= '0' && c <= '9') || c == '-') {
    double d = 0;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), d);
    if (ec == std::errc() && ptr == line.data() + line.size() &&
        std::isfinite(d) &&
        (line.size() < 2 || line[0] != '0' || line[1] == '.' ||
         line[1] == 'e')) {
      out->set_number_value(d);
      return;
    }
  }
  if (line == "true" || line == "false") {
    out->set_bool_value(line == "true");
    return;
  }
  if (line == "null") {
    out->set_null_value(google::protobuf::NULL_VALUE);
    return;
  }
  if (c == '{' || c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') ||
      c == ' ' || c == '\t') {
    absl::StatusOr<google::protobuf::Value> v = jobd::client::ParseJson(line);
    if (v.ok()) {
      out->Swap(&*v);
      return;
    }
  }
  out->set_string_value(std::string(line));
}

// Appends the compact JSON of a value: fast for scalars.
void AppendJson(std::string* out, const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNumberValue:
      if (std::isfinite(v.number_value())) {
        fmt::format_to(std::back_inserter(*out), "{}", v.number_value());
        return;
      }
      break;
    case google::protobuf::Value::kBoolValue:
      out->append(v.bool_value() ? "true" : "false");
      return;
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:
      out->append("null");
      return;
    default:
      break;
  }
  out->append(ToJson(v));
}

std::string ValueJson(const google::protobuf::Value& v) {
  std::string s;
  AppendJson(&s, v);
  return s;
}

// "JOB_STATE_SUCCEEDED" -> "SUCCEEDED".
std::string ShortName(const std::string& full, std::string_view prefix) {
  if (full.rfind(prefix, 0) == 0) return full.substr(prefix.size());
  return full;
}
std::string StateName(v1::JobState s) {
  return ShortName(v1::JobState_Name(s), "JOB_STATE_");
}
std::string ReasonName(v1::ErrorReason r) {
  return ShortName(v1::ErrorReason_Name(r), "ERROR_REASON_");
}
std::string EventName(v1::EventType t) {
  return ShortName(v1::EventType_Name(t), "EVENT_TYPE_");
}
std::string KindName(v1::JobKind k) {
  switch (k) {
    case v1::JOB_KIND_CPU_BOUND:
      return "cpu";
    case v1::JOB_KIND_IO_BOUND:
      return "io";
    case v1::JOB_KIND_AUTO:
      return "auto";
    default:
      return "-";
  }
}

std::string ExecutorName(v1::Executor e) {
  if (e == v1::EXECUTOR_UNSPECIFIED) return "-";
  std::string s = ShortName(v1::Executor_Name(e), "EXECUTOR_");
  for (char& c : s) c = static_cast<char>(std::tolower(c));
  return s;
}

std::string ErrorText(const v1::JobError& e) {
  return fmt::format("{}: {}", ReasonName(e.reason()), e.message());
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S", FromProtoTime(t),
                          absl::LocalTimeZone());
}

std::string FormatDurationShort(absl::Duration d) {
  if (d < absl::Milliseconds(1)) {
    return fmt::format("{}us", absl::ToInt64Microseconds(d));
  }
  if (d < absl::Seconds(1)) {
    return fmt::format("{:.1f}ms", absl::ToDoubleMilliseconds(d));
  }
  if (d < absl::Minutes(1)) {
    return fmt::format("{:.2f}s", absl::ToDoubleSeconds(d));
  }
  return absl::FormatDuration(absl::Trunc(d, absl::Seconds(1)));
}

// Run time of a job: start..finish, start..now while running, or "-".
std::string RunTime(const v1::Job& job) {
  if (!job.has_start_time()) return "-";
  const absl::Time start = FromProtoTime(job.start_time());
  const absl::Time end =
      job.has_finish_time() ? FromProtoTime(job.finish_time()) : absl::Now();
  return FormatDurationShort(end - start);
}

// Prints rows as columns separated by two spaces; the last column unpadded.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  std::fputs(out.c_str(), stdout);
}

// --- Options shared by every command
// ------------------------------------------

struct Globals {
  std::string address;
  bool json = false;
  std::string rpc_timeout = "30s";
  std::string connect_timeout = "5s";
  std::string token;  // Empty: $JOBD_TOKEN (the client library reads it).
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
};

absl::StatusOr<std::unique_ptr<Client>> Connect(const Globals& g,
                                                int* usage_error) {
  jobd::client::ClientOptions options;
  options.address = g.address;
  absl::StatusOr<absl::Duration> rpc =
      ParseDurationArg(g.rpc_timeout, "--rpc-timeout");
  absl::StatusOr<absl::Duration> connect =
      ParseDurationArg(g.connect_timeout, "--connect-timeout");
  if (!rpc.ok() || !connect.ok()) {
    *usage_error = Usage(!rpc.ok() ? Msg(rpc.status()) : Msg(connect.status()));
    return absl::InvalidArgumentError("usage");
  }
  options.rpc_timeout = *rpc;
  options.connect_timeout = *connect;
  options.close_timeout = absl::Seconds(2);
  options.token = g.token;
  options.tls.enabled = g.tls || !g.tls_ca.empty() || !g.tls_cert.empty();
  options.tls.ca_file = g.tls_ca;
  options.tls.cert_file = g.tls_cert;
  options.tls.key_file = g.tls_key;
  options.tls.server_name = g.tls_server_name;
  return Client::Connect(options);
}

// Connects or returns the exit code.
#define JOBCTL_CONNECT(client_var, globals)               \
  std::unique_ptr<Client> client_var;                     \
  {                                                       \
    int usage_code = -1;                                  \
    auto connected = Connect(globals, &usage_code);       \
    if (usage_code >= 0) return usage_code;               \
    if (!connected.ok()) return Fail(connected.status()); \
    client_var = *std::move(connected);                   \
  }

// --- Job output -------------------------------------------------------------

void PrintJobHuman(const v1::Job& job) {
  std::vector<std::vector<std::string>> rows;
  auto add = [&rows](std::string key, std::string value) {
    rows.push_back({std::move(key) + ":", std::move(value)});
  };
  add("id", job.id());
  add("task", job.spec().task());
  add("state", StateName(job.state()));
  add("executor", ExecutorName(job.executor()));
  add("kind", KindName(job.spec().kind()));
  if (job.spec().args_size() > 0) {
    google::protobuf::Value args;
    *args.mutable_list_value()->mutable_values() = job.spec().args();
    add("args", ValueJson(args));
  }
  if (job.spec().kwargs().fields_size() > 0) {
    add("kwargs", ToJson(job.spec().kwargs(), false));
  }
  if (!job.spec().payload().empty()) {
    add("payload", fmt::format("{} bytes", job.spec().payload().size()));
  }
  if (job.spec().priority() != 0) {
    add("priority", std::to_string(job.spec().priority()));
  }
  if (job.spec().has_timeout()) {
    add("timeout", absl::FormatDuration(
                       jobd::client::FromProtoDuration(job.spec().timeout())));
  }
  if (job.spec().labels_size() > 0) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : job.spec().labels())
      labels.push_back(k + "=" + v);
    std::sort(labels.begin(), labels.end());
    std::string joined;
    for (const auto& l : labels) joined += (joined.empty() ? "" : ",") + l;
    add("labels", joined);
  }
  if (job.spec().delivery() == v1::DELIVERY_AT_LEAST_ONCE) {
    add("delivery", "at least once");
  }
  if (job.attempts() > 1) add("attempts", std::to_string(job.attempts()));
  if (!job.spec().idempotency_key().empty()) {
    add("idempotency key", job.spec().idempotency_key());
  }
  add("created", FormatTime(job.create_time()));
  add("started", FormatTime(job.start_time()));
  add("finished", FormatTime(job.finish_time()));
  add("run time", RunTime(job));
  if (job.has_progress()) {
    add("progress",
        job.progress().fraction() < 0
            ? job.progress().message()
            : fmt::format("{:.1f}% {}", 100 * job.progress().fraction(),
                          job.progress().message()));
  }
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    add("result", ValueJson(job.result().value()));
    if (!job.result().payload().empty()) {
      add("result payload",
          fmt::format("{} bytes", job.result().payload().size()));
    }
  }
  if (job.has_error()) {
    add("error", fmt::format("{} (code {})", ErrorText(job.error()),
                             job.error().code()));
  }
  PrintTable(rows);
}

// One line for a job's end: "<id>  <STATE>  <result or REASON: message>".
std::string JobEndLine(const v1::Job& job) {
  std::string detail;
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    detail = ValueJson(job.result().value());
  } else if (job.has_error()) {
    detail = ErrorText(job.error());
  }
  std::string line = fmt::format("{}  {}", job.id(), StateName(job.state()));
  if (!detail.empty()) line += "  " + detail;
  return line;
}

int JobExitCode(v1::JobState state) {
  if (state == v1::JOB_STATE_SUCCEEDED) return kExitOk;
  if (state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) {
    return kExitJobFailed;
  }
  return kExitTimeout;  // Not ended.
}

// --- submit -----------------------------------------------------------------

struct SubmitArgs {
  std::string task;
  std::vector<std::string> args;
  std::vector<std::string> kwargs;
  std::vector<std::string> labels;
  std::string payload_file;
  std::string kind = "auto";
  std::string executor;
  int priority = 0;
  std::string timeout;
  std::string idempotency_key;
  bool at_least_once = false;
  bool wait = false;
  std::string wait_timeout;
};

int RunSubmit(const Globals& g, const SubmitArgs& a) {
  v1::JobSpec spec;
  spec.set_task(a.task);
  for (const std::string& arg : a.args) {
    *spec.add_args() = jobd::client::JsonOrString(arg);
  }
  for (const std::string& kv : a.kwargs) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Usage(fmt::format("--kwarg: '{}' is not key=JSON", kv));
    }
    (*spec.mutable_kwargs()->mutable_fields())[kv.substr(0, eq)] =
        jobd::client::JsonOrString(std::string_view(kv).substr(eq + 1));
  }
  for (const std::string& kv : a.labels) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Usage(fmt::format("--label: '{}' is not key=value", kv));
    }
    (*spec.mutable_labels())[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (!a.payload_file.empty()) {
    std::string data;
    if (a.payload_file == "-") {
      data.assign(std::istreambuf_iterator<char>(std::cin),
                  std::istreambuf_iterator<char>());
    } else {
      std::ifstream in(a.payload_file, std::ios::binary);
      if (!in) {
        return Usage(
            fmt::format("--payload-file: cannot read '{}'", a.payload_file));
      }
      data.assign(std::istreambuf_iterator<char>(in),
                  std::istreambuf_iterator<char>());
    }
    spec.set_payload(std::move(data));
  }
  auto routing = ParseRouting(a.kind, a.executor);
  if (!routing.ok()) return Usage(Msg(routing.status()));
  spec.set_kind(routing->first);
  spec.set_executor(routing->second);
  spec.set_priority(a.priority);
  auto timeout =
      ParseOptionalDuration(a.timeout, "--timeout", absl::InfiniteDuration());
  if (!timeout.ok()) return Usage(Msg(timeout.status()));
  if (*timeout != absl::InfiniteDuration()) {
    *spec.mutable_timeout() = jobd::client::ToProtoDuration(*timeout);
  }
  spec.set_idempotency_key(a.idempotency_key);
  if (a.at_least_once) spec.set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
  const bool wait = a.wait || !a.wait_timeout.empty();
  auto wait_limit = ParseOptionalDuration(a.wait_timeout, "--wait-timeout",
                                          absl::InfiniteDuration());
  if (!wait_limit.ok()) return Usage(Msg(wait_limit.status()));
  const absl::Duration wait_timeout = *wait_limit;

  JOBCTL_CONNECT(client, g);
  Future future = client->Submit(std::move(spec));
  absl::StatusOr<std::string> id = future.job_id(client->options().rpc_timeout);
  if (!id.ok()) return Fail(id.status());
  if (!wait) {
    if (g.json) {
      absl::StatusOr<v1::Job> job = client->GetJob(*id);
      if (!job.ok()) return Fail(job.status());
      fmt::print("{}\n", ToJson(*job, true));
    } else {
      fmt::print("{}\n", *id);
    }
    return kExitOk;
  }
  absl::StatusOr<JobOutcome> outcome = future.Get(wait_timeout);
  if (!outcome.ok()) return Fail(outcome.status());
  if (g.json) {
    absl::StatusOr<v1::Job> job = client->GetJob(*id);
    if (!job.ok()) return Fail(job.status());
    fmt::print("{}\n", ToJson(*job, true));
  } else if (outcome->ok()) {
    fmt::print("{}\n", ValueJson(outcome->result.value()));
  }
  if (!outcome->ok()) {
    PrintError(fmt::format("job {} {}: {}", outcome->job_id,
                           StateName(outcome->state),
                           ErrorText(outcome->error)));
    return kExitJobFailed;
  }
  return kExitOk;
}

// --- map --------------------------------------------------------------------

// Reads lines from a file descriptor; can tell "no full line yet" without
// blocking.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}

  // kReady with *line set, kNotReady (only if !may_block), or kEnd.
  InputStatus Next(std::string_view* line, bool may_block) {
    for (;;) {
      const size_t nl = buf_.find('\n', start_);
      if (nl != std::string::npos) {
        *line = std::string_view(buf_).substr(start_, nl - start_);
        start_ = nl + 1;
        if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
        return InputStatus::kReady;
      }
      if (eof_) {
        if (start_ < buf_.size()) {
          *line = std::string_view(buf_).substr(start_);
          start_ = buf_.size();
          return InputStatus::kReady;
        }
        return InputStatus::kEnd;
      }
      if (!may_block) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) return InputStatus::kNotReady;
      }
      // Compact, then read more.
      if (start_ > 0) {
        buf_.erase(0, start_);
        start_ = 0;
      }
      const size_t old = buf_.size();
      buf_.resize(old + 65536);
      ssize_t n;
      do {
        n = ::read(fd_, buf_.data() + old, 65536);
      } while (n < 0 && errno == EINTR);
      buf_.resize(old + (n > 0 ? n : 0));
      if (n <= 0) eof_ = true;
    }
  }

 private:
  int fd_;
  std::string buf_;
  size_t start_ = 0;
  bool eof_ = false;
};

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
  bool progress = true;
};

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

  JOBCTL_CONNECT(client, g);
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

  ProgressBar bar(a.progress && ::isatty(STDERR_FILENO));
  const bool stdout_tty = ::isatty(STDOUT_FILENO);
  std::string out;
  out.reserve(1 << 17);
  uint64_t failed = 0, rejected = 0;
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
    if (g.json) {
      out += fmt::format("{{\"index\":{}", r.index);
      if (!r.status.ok()) {
        out += ",\"state\":\"REJECTED\",\"error\":";
        out += ToJson(r.outcome.error, true);
      } else {
        out += fmt::format(",\"job_id\":\"{}\",\"state\":\"{}\"",
                           r.outcome.job_id, StateName(r.outcome.state));
        if (r.outcome.ok()) {
          out += ",\"result\":";
          AppendJson(&out, r.outcome.result.value());
          if (!r.outcome.result.payload().empty()) {
            out += ",\"payload\":\"";
            out += absl::Base64Escape(r.outcome.result.payload());
            out += '"';
          }
        } else {
          out += ",\"error\":";
          out += ToJson(r.outcome.error, true);
        }
      }
      out += "}\n";
    } else {
      if (!a.ordered) fmt::format_to(std::back_inserter(out), "{}\t", r.index);
      if (!r.status.ok()) {
        fmt::format_to(std::back_inserter(out), "REJECTED: {}\n",
                       Msg(r.status));
      } else if (r.outcome.ok()) {
        AppendJson(&out, r.outcome.result.value());
        out += '\n';
      } else {
        fmt::format_to(std::back_inserter(out), "{}: {}\n",
                       StateName(r.outcome.state), ErrorText(r.outcome.error));
      }
    }
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
  const absl::Status status = stream.status();
  int code = kExitOk;
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

// --- get / wait / cancel -----------------------------------------------------

int RunGet(const Globals& g, const std::string& id,
           const std::string& wait_text) {
  auto parsed_wait =
      ParseOptionalDuration(wait_text, "--wait", absl::ZeroDuration());
  if (!parsed_wait.ok()) return Usage(Msg(parsed_wait.status()));
  const absl::Duration wait = *parsed_wait;
  JOBCTL_CONNECT(client, g);
  absl::StatusOr<v1::Job> job = client->GetJob(id, wait);
  if (!job.ok()) return Fail(job.status());
  if (g.json) {
    fmt::print("{}\n", ToJson(*job, true));
  } else {
    PrintJobHuman(*job);
  }
  if (wait_text.empty()) return kExitOk;
  const int code = JobExitCode(job->state());
  if (code == kExitTimeout) {
    PrintError(fmt::format("job {} still {} after {}", id,
                           StateName(job->state()),
                           absl::FormatDuration(wait)));
  }
  return code;
}

int RunWait(const Globals& g, const std::vector<std::string>& ids,
            const std::string& timeout_text) {
  auto parsed_timeout = ParseOptionalDuration(timeout_text, "--timeout",
                                              absl::InfiniteDuration());
  if (!parsed_timeout.ok()) return Usage(Msg(parsed_timeout.status()));
  const absl::Duration timeout = *parsed_timeout;
  JOBCTL_CONNECT(client, g);
  const absl::Time deadline = absl::Now() + timeout;
  int code = kExitOk;
  for (const std::string& id : ids) {
    const absl::Duration left =
        std::max(absl::ZeroDuration(), deadline - absl::Now());
    absl::StatusOr<v1::Job> job = client->GetJob(id, left);
    if (!job.ok()) {
      code = Worst(code, Fail(job.status()));
      continue;
    }
    if (g.json) {
      fmt::print("{}\n", ToJson(*job, true));
    } else {
      fmt::print("{}\n", JobEndLine(*job));
    }
    std::fflush(stdout);
    code = Worst(code, JobExitCode(job->state()));
  }
  if (code == kExitTimeout) PrintError("timed out waiting for the job(s)");
  return code;
}

int RunCancel(const Globals& g, const std::vector<std::string>& ids) {
  JOBCTL_CONNECT(client, g);
  int code = kExitOk;
  for (const std::string& id : ids) {
    absl::StatusOr<v1::CancelJobResponse> r = client->Cancel(id);
    if (!r.ok()) {
      code = Worst(code, Fail(r.status()));
      continue;
    }
    if (g.json) {
      fmt::print(
          "{{\"job_id\":\"{}\",\"state\":\"{}\",\"already_ended\":{}}}\n", id,
          v1::JobState_Name(r->state()), r->already_ended() ? "true" : "false");
    } else if (r->already_ended()) {
      fmt::print("{}  {}  (already ended)\n", id, StateName(r->state()));
    } else if (r->state() == v1::JOB_STATE_RUNNING) {
      fmt::print("{}  RUNNING  (cancel requested)\n", id);
    } else {
      fmt::print("{}  {}\n", id, StateName(r->state()));
    }
  }
  return code;
}

// --- watch
// --------------------------------------------------------------------

std::string EventLine(const v1::JobEvent& e) {
  std::string detail;
  switch (e.type()) {
    case v1::EVENT_TYPE_ACCEPTED:
      detail = fmt::format("task={} executor={}{}", e.task(),
                           ExecutorName(e.executor()),
                           e.duplicate() ? " duplicate" : "");
      break;
    case v1::EVENT_TYPE_STARTED:
      detail = fmt::format("executor={}", ExecutorName(e.executor()));
      break;
    case v1::EVENT_TYPE_PROGRESS:
      detail = e.progress().fraction() < 0
                   ? e.progress().message()
                   : fmt::format("{:.1f}% {}", 100 * e.progress().fraction(),
                                 e.progress().message());
      break;
    case v1::EVENT_TYPE_SUCCEEDED:
      detail = ValueJson(e.result().value());
      break;
    default:
      detail = ErrorText(e.error());
      break;
  }
  return fmt::format("{}  {}  {}  {}", e.sequence(), e.job_id(),
                     EventName(e.type()), detail);
}

int RunWatch(const Globals& g, const std::vector<std::string>& ids,
             uint64_t after, bool progress) {
  JOBCTL_CONNECT(client, g);
  WatchOptions options;
  options.job_ids = ids;
  options.after_sequence = after;
  options.include_progress = progress;
  WatchStream stream = client->Watch(std::move(options));
  OnInterrupt([&stream] { stream.Cancel(); });
  v1::JobEvent event;
  bool first = true;
  while (stream.Next(&event)) {
    if (first) {
      first = false;
      if (stream.events_lost()) {
        PrintError(fmt::format(
            "events after sequence {} were lost; replay starts at {}", after,
            stream.oldest_retained_sequence()));
      }
    }
    if (g.json) {
      fmt::print("{}\n", ToJson(event, true));
    } else {
      fmt::print("{}\n", EventLine(event));
    }
    std::fflush(stdout);
  }
  OnInterrupt(nullptr);
  const absl::Status status = stream.status();
  if (!status.ok()) return Fail(status);
  return kExitOk;
}

// --- ls / tasks / stats
// --------------------------------------------------------

int RunLs(const Globals& g, const std::vector<std::string>& states,
          const std::string& task, size_t limit) {
  jobd::client::ListJobsFilter filter;
  for (const std::string& s : states) {
    std::optional<v1::JobState> st = ParseState(s);
    if (!st) {
      return Usage(fmt::format(
          "--state: '{}' is not one of queued, waiting, running, succeeded, "
          "failed, cancelled",
          s));
    }
    filter.states.push_back(*st);
  }
  filter.task = task;
  filter.limit = limit;
  JOBCTL_CONNECT(client, g);
  absl::StatusOr<std::vector<v1::Job>> jobs = client->ListJobs(filter);
  if (!jobs.ok()) return Fail(jobs.status());
  if (g.json) {
    for (const v1::Job& job : *jobs) fmt::print("{}\n", ToJson(job, true));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "TASK", "STATE", "EXECUTOR", "CREATED", "RUN TIME",
                  "RESULT/ERROR"});
  for (const v1::Job& job : *jobs) {
    std::string detail;
    if (job.state() == v1::JOB_STATE_SUCCEEDED) {
      detail = ValueJson(job.result().value());
    } else if (job.has_error()) {
      detail = ErrorText(job.error());
    }
    if (detail.size() > 60) detail = detail.substr(0, 57) + "...";
    rows.push_back({job.id(), job.spec().task(), StateName(job.state()),
                    ExecutorName(job.executor()), FormatTime(job.create_time()),
                    RunTime(job), detail});
  }
  PrintTable(rows);
  return kExitOk;
}

int RunTasks(const Globals& g) {
  JOBCTL_CONNECT(client, g);
  absl::StatusOr<std::vector<v1::TaskInfo>> tasks = client->ListTasks();
  if (!tasks.ok()) return Fail(tasks.status());
  if (g.json) {
    for (const v1::TaskInfo& t : *tasks) fmt::print("{}\n", ToJson(t, true));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "KIND", "EXECUTORS", "PARAMS", "DESCRIPTION"});
  for (const v1::TaskInfo& t : *tasks) {
    std::string executors;
    for (int e : t.executors()) {
      if (!executors.empty()) executors += ",";
      executors += ExecutorName(static_cast<v1::Executor>(e));
    }
    std::string params;
    for (const v1::TaskParam& p : t.params()) {
      if (!params.empty()) params += " ";
      params += p.name() + ":" + p.type();
      if (!p.required()) params += "=" + ValueJson(p.default_value());
    }
    if (t.variadic()) params += params.empty() ? "..." : " ...";
    rows.push_back({t.quarantined() ? t.name() + " (QUARANTINED)" : t.name(),
                    KindName(t.default_kind()),
                    executors.empty() ? "-" : executors,
                    params.empty() ? "-" : params, t.description()});
  }
  PrintTable(rows);
  return kExitOk;
}

int RunStats(const Globals& g) {
  JOBCTL_CONNECT(client, g);
  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  if (!stats.ok()) return Fail(stats.status());
  if (g.json) {
    fmt::print("{}\n", ToJson(*stats, true));
    return kExitOk;
  }
  const v1::GetStatsResponse& s = *stats;
  PrintTable({
      {"address:", client->address()},
      {"version:", s.version()},
      {"started:", FormatTime(s.start_time())},
      {"uptime:",
       absl::FormatDuration(absl::Trunc(
           jobd::client::FromProtoDuration(s.uptime()), absl::Seconds(1)))},
      {"draining:", s.draining() ? "yes" : "no"},
      {"accepted:", std::to_string(s.accepted())},
      {"rejected:", std::to_string(s.rejected())},
      {"succeeded:", std::to_string(s.succeeded())},
      {"failed:", std::to_string(s.failed())},
      {"cancelled:", std::to_string(s.cancelled())},
      {"live:", std::to_string(s.live())},
      {"retained:", std::to_string(s.retained())},
      {"last sequence:", std::to_string(s.last_sequence())},
  });
  if (s.executors_size() > 0) {
    fmt::print("\n");
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"EXECUTOR", "ENABLED", "WORKERS", "BUSY", "QUEUED",
                    "COMPLETED", "FAILED", "CANCELLED"});
    for (const v1::ExecutorStats& e : s.executors()) {
      rows.push_back({ExecutorName(e.executor()), e.enabled() ? "yes" : "no",
                      std::to_string(e.workers()), std::to_string(e.busy()),
                      std::to_string(e.queued()), std::to_string(e.completed()),
                      std::to_string(e.failed()),
                      std::to_string(e.cancelled())});
    }
    PrintTable(rows);
  }
  if (s.has_process_pool()) {
    const v1::ProcessPoolStats& p = s.process_pool();
    fmt::print(
        "\nprocess pool: fork server pid {}, restarts {}, workers "
        "forked {}\n",
        p.fork_server_pid(), p.fork_server_restarts(), p.workers_spawned());
    std::string retired;
    for (const auto& [reason, count] : p.retired()) {
      retired +=
          fmt::format("{}{}={}", retired.empty() ? "" : ", ", reason, count);
    }
    fmt::print("retired: {}\n", retired.empty() ? "none" : retired);
    if (p.quarantined_tasks_size() > 0) {
      std::string tasks;
      for (const std::string& t : p.quarantined_tasks()) {
        tasks += (tasks.empty() ? "" : ", ") + t;
      }
      fmt::print("quarantined tasks: {}\n", tasks);
    }
    std::vector<std::vector<std::string>> rows;
    rows.push_back(
        {"SLOT", "PID", "STATE", "JOBS", "RSS", "CURRENT JOB", "STARTED"});
    std::vector<v1::WorkerStats> all(p.workers().begin(), p.workers().end());
    all.insert(all.end(), p.spares().begin(), p.spares().end());
    for (const v1::WorkerStats& w : all) {
      rows.push_back(
          {std::to_string(w.slot()), w.pid() ? std::to_string(w.pid()) : "-",
           w.state(), std::to_string(w.jobs_done()),
           fmt::format("{:.1f} MiB",
                       static_cast<double>(w.rss_bytes()) / (1 << 20)),
           w.current_job_id() ? std::to_string(w.current_job_id()) : "-",
           w.has_started() ? FormatTime(w.started()) : "-"});
    }
    PrintTable(rows);
  }
  return kExitOk;
}

int RunDrain(const Globals& g) {
  JOBCTL_CONNECT(client, g);
  if (absl::Status s = client->Drain(); !s.ok()) return Fail(s);
  if (!g.json) fmt::print("jobd is draining\n");
  return kExitOk;
}

int RunUnquarantine(const Globals& g, const std::string& task) {
  JOBCTL_CONNECT(client, g);
  absl::StatusOr<bool> was = client->ClearQuarantine(task);
  if (!was.ok()) return Fail(was.status());
  if (g.json) {
    v1::ClearQuarantineResponse response;
    response.set_was_quarantined(*was);
    fmt::print("{}\n", ToJson(response, true));
  } else {
    fmt::print("{}\n",
               *was ? fmt::format("task '{}' released from quarantine", task)
                    : fmt::format("task '{}' was not quarantined", task));
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
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
  app.add_option("-a,--address", g.address,
                 "jobd gRPC address: unix:/path or host:port (default: "
                 "$JOBD_ADDRESS, else " +
                     jobd::v1::DefaultClientAddress() + ")");
  app.add_flag("--json", g.json, "Machine output: one JSON object per line");
  app.add_option("--token", g.token,
                 "Bearer token for a jobd with --auth-token (default: "
                 "$JOBD_TOKEN)");
  app.add_flag("--tls", g.tls,
               "TLS to a TCP address, verified with the system's CAs "
               "(implied by --tls-ca or --tls-cert)");
  app.add_option("--tls-ca", g.tls_ca, "PEM CA bundle that verifies jobd");
  app.add_option("--tls-cert", g.tls_cert,
                 "PEM client certificate (mTLS), with --tls-key");
  app.add_option("--tls-key", g.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", g.tls_server_name,
                 "Name expected in jobd's certificate, if not the host");
  app.add_option("--rpc-timeout", g.rpc_timeout, "Deadline of each unary RPC")
      ->capture_default_str();
  app.add_option("--connect-timeout", g.connect_timeout,
                 "How long to wait for jobd to be reachable")
      ->capture_default_str();

  // submit
  SubmitArgs submit;
  CLI::App* submit_cmd = app.add_subcommand(
      "submit",
      "Submit one job. Prints its id (--json: the job), or with --wait its "
      "result once it ends");
  submit_cmd->add_option("task", submit.task, "Task name (see: jobctl tasks)")
      ->required();
  submit_cmd->add_option(
      "args", submit.args,
      "Positional arguments: each parsed as JSON if it parses, else taken "
      "as a string (use -- before arguments starting with '-')");
  submit_cmd->add_option("-k,--kwarg", submit.kwargs,
                         "Keyword argument key=JSON (repeatable)");
  submit_cmd->add_option("--payload-file", submit.payload_file,
                         "Read the job payload from a file ('-' = stdin)");
  submit_cmd->add_option("--kind", submit.kind, "cpu, io or auto")
      ->capture_default_str();
  submit_cmd->add_option("--executor", submit.executor,
                         "process, thread or reactor (default: jobd routes)");
  submit_cmd->add_option("--priority", submit.priority, "Higher runs first")
      ->capture_default_str();
  submit_cmd->add_option("--timeout", submit.timeout,
                         "Run-time limit of the job (e.g. 30s)");
  submit_cmd->add_option("--label", submit.labels,
                         "Label key=value (repeatable)");
  submit_cmd->add_option("--idempotency-key", submit.idempotency_key,
                         "Retry-safe key: a repeat returns the same job");
  submit_cmd->add_flag("--at-least-once", submit.at_least_once,
                       "If jobd stops while the job runs, run it again at the "
                       "next start (default: it fails LOST_ON_RESTART)");
  submit_cmd->add_flag("-w,--wait", submit.wait,
                       "Wait for the job to end and print its result");
  submit_cmd->add_option("--wait-timeout", submit.wait_timeout,
                         "With --wait: give up after this long (exit 5)");

  // map
  MapArgs map;
  CLI::App* map_cmd = app.add_subcommand(
      "map",
      "Run TASK once per stdin line (the line, parsed as JSON if it parses, "
      "else as a string, is the single argument); print one result per line");
  map_cmd->add_option("task", map.task, "Task name")->required();
  map_cmd->add_flag("--ordered", map.ordered,
                    "Print results in input order (default: as jobs end, "
                    "each line prefixed with the input's 0-based index and "
                    "a tab)");
  map_cmd->add_option("--window", map.window, "Jobs in flight at most")
      ->capture_default_str();
  map_cmd->add_option("--kind", map.kind, "cpu, io or auto")
      ->capture_default_str();
  map_cmd->add_option("--executor", map.executor,
                      "process, thread or reactor (default: jobd routes)");
  map_cmd
      ->add_option("--chunksize", map.chunksize,
                   "Process pool: send jobs to a worker in chunks of up "
                   "to this many (for many tiny jobs)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  map_cmd->add_flag("--at-least-once", map.at_least_once,
                    "Jobs running when jobd stops run again at its next "
                    "start (default: they fail LOST_ON_RESTART)");
  map_cmd->add_option("--priority", map.priority, "Higher runs first")
      ->capture_default_str();
  map_cmd->add_option("--timeout", map.timeout,
                      "Run-time limit of each job (e.g. 30s)");
  map_cmd->add_option("--deadline", map.deadline,
                      "Give up on the whole map after this long (exit 5)");
  bool no_progress = false;
  map_cmd->add_flag("--no-progress", no_progress,
                    "No progress bar on stderr (shown only on a terminal)");

  // get
  std::string get_id, get_wait;
  CLI::App* get_cmd = app.add_subcommand(
      "get", "Show one job. With --wait: exit 0/1 as it ended, 5 if not yet");
  get_cmd->add_option("id", get_id, "Job id")->required();
  get_cmd->add_option("--wait", get_wait,
                      "Wait up to this long for the job to end");

  // wait
  std::vector<std::string> wait_ids;
  std::string wait_timeout;
  CLI::App* wait_cmd = app.add_subcommand(
      "wait",
      "Wait for jobs to end; print one line each: ID  STATE  RESULT|ERROR");
  wait_cmd->add_option("ids", wait_ids, "Job ids")->required();
  wait_cmd->add_option("--timeout", wait_timeout,
                       "Give up after this long (exit 5)");

  // watch
  std::vector<std::string> watch_ids;
  uint64_t watch_after = 0;
  bool watch_progress = false;
  CLI::App* watch_cmd = app.add_subcommand(
      "watch",
      "Stream job events (SEQ  JOB  TYPE  DETAIL) until the named jobs end, "
      "or of every job until Ctrl-C");
  watch_cmd->add_option("ids", watch_ids, "Job ids (none: every job)");
  watch_cmd->add_option("--after", watch_after,
                        "First replay retained events after this sequence");
  watch_cmd->add_flag("--progress", watch_progress, "Include PROGRESS events");

  // cancel
  std::vector<std::string> cancel_ids;
  CLI::App* cancel_cmd = app.add_subcommand("cancel", "Cancel jobs");
  cancel_cmd->add_option("ids", cancel_ids, "Job ids")->required();

  // ls
  std::vector<std::string> ls_states;
  std::string ls_task;
  size_t ls_limit = 100;
  CLI::App* ls_cmd =
      app.add_subcommand("ls", "List retained jobs, oldest first");
  ls_cmd->add_option("--state", ls_states,
                     "Only jobs in this state (repeatable): queued, waiting, "
                     "running, succeeded, failed, cancelled");
  ls_cmd->add_option("--task", ls_task, "Only jobs of this task");
  ls_cmd->add_option("--limit", ls_limit, "Jobs at most")
      ->capture_default_str();

  CLI::App* tasks_cmd = app.add_subcommand("tasks", "List registered tasks");
  CLI::App* stats_cmd = app.add_subcommand(
      "stats", "Show daemon counters and the process pool's workers");
  CLI::App* drain_cmd = app.add_subcommand(
      "drain", "Shut jobd down gracefully, as SIGTERM does (admin)");
  std::string unquarantine_task;
  CLI::App* unquarantine_cmd = app.add_subcommand(
      "unquarantine",
      "Let a quarantined task (one that kept killing its worker) run again");
  unquarantine_cmd->add_option("task", unquarantine_task, "Task name")
      ->required();

  // CLI11 splits a value written "[a,b]" into several values; a JSON array
  // argument must stay one. Hide such values behind a marker byte while
  // parsing, and drop it after.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& arg : args) {
    if (arg.size() >= 2 && arg.front() == '[' && arg.back() == ']') {
      arg.insert(arg.begin(), kMarker);
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 wants them reversed.
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    PrintError(fmt::format("{} (see: jobctl --help)", e.what()));
    return kExitUsage;
  }
  auto unmark = [](std::string& s) {
    if (!s.empty() && s.front() == kMarker) s.erase(0, 1);
  };
  for (auto* list : {&submit.args, &submit.kwargs, &submit.labels, &wait_ids,
                     &watch_ids, &cancel_ids, &ls_states}) {
    for (std::string& s : *list) unmark(s);
  }
  for (std::string* s :
       {&submit.task, &map.task, &get_id, &ls_task, &submit.payload_file,
        &submit.idempotency_key, &g.address}) {
    unmark(*s);
  }

  StartSignalThread();
  if (submit_cmd->parsed()) return RunSubmit(g, submit);
  if (map_cmd->parsed()) {
    map.progress = !no_progress;
    return RunMap(g, map);
  }
  if (get_cmd->parsed()) return RunGet(g, get_id, get_wait);
  if (wait_cmd->parsed()) return RunWait(g, wait_ids, wait_timeout);
  if (watch_cmd->parsed()) {
    return RunWatch(g, watch_ids, watch_after, watch_progress);
  }
  if (cancel_cmd->parsed()) return RunCancel(g, cancel_ids);
  if (ls_cmd->parsed()) return RunLs(g, ls_states, ls_task, ls_limit);
  if (tasks_cmd->parsed()) return RunTasks(g);
  if (stats_cmd->parsed()) return RunStats(g);
  if (unquarantine_cmd->parsed()) return RunUnquarantine(g, unquarantine_task);
  if (drain_cmd->parsed()) return RunDrain(g);
  return Usage("no command given (see: jobctl --help)");
}
