// libFuzzer target: the journal's restore of a row (server/journal.h
// DecodeRow, then Scheduler::Restore) on any stored bytes, as a damaged
// disk, an older jobd or a hand edit could leave them. It must never
// crash; a row it cannot read names its problem; and the restored job,
// whatever came in, must serialize into a Job that parses back (valid
// UTF-8 everywhere) and fits the message limit.
//
// Input: an 8-byte header, then the columns' bytes.
//   [0] state (int8)  [1] executor (int8)  [2] flags: 1 result, 2 error
//   [3] owner length  [4..5] result length  [6..7] error length (LE)
//   owner, result, error, then the spec: the rest.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "server/journal/journal.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/scheduler.h"
#include "workers/sdk/utf8.h"
#include "workers/tasks/builtin_tasks.h"

namespace {

const jobd::TaskRegistry& Registry() {
  static const jobd::TaskRegistry* registry = [] {
    auto* r = new jobd::TaskRegistry();
    (void)jobd::RegisterBuiltinTasks(*r, {.testing_tasks = true});
    return r;
  }();
  return *registry;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Rows that do not parse are the point: not a log line each.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  jobd::StoredRow stored;
  stored.id = 7;
  stored.state = static_cast<int8_t>(data[0]);
  stored.executor = static_cast<int8_t>(data[1]);
  size_t at = 8;
  auto take = [&](size_t n) {
    n = std::min(n, size - at);
    std::string_view s = in.substr(at, n);
    at += n;
    return s;
  };
  stored.owner = take(data[3]);
  const std::string_view result = take(data[4] | data[5] << 8);
  const std::string_view error = take(data[6] | data[7] << 8);
  if (data[2] & 1) stored.result = result;
  if (data[2] & 2) stored.error = error;
  stored.spec = in.substr(at);
  stored.create_ns = 1700000000000000000;
  stored.start_ns = data[2] & 4 ? 1700000001000000000 : 0;
  stored.finish_ns = data[2] & 8 ? 1700000002000000000 : 0;
  stored.accepted_seq = 10;
  stored.started_seq = data[2] & 4 ? 11 : 0;
  stored.ended_seq = data[2] & 8 ? 12 : 0;
  stored.attempts = data[2] >> 4;

  jobd::JournalRow row = jobd::DecodeRow(stored);
  Check(jobd::IsValidUtf8(row.owner) && jobd::IsValidUtf8(row.problem));
  Check(row.spec != nullptr);
  if (row.problem.empty()) {
    Check(jobd::v1::JobState_IsValid(row.state) &&
          jobd::v1::Executor_IsValid(row.executor));
    Check((row.end != nullptr) == jobd::IsTerminal(row.state));
  } else {
    Check(row.end == nullptr);
  }

  // Restored by a scheduler (no executors: live jobs cannot run and fail),
  // then read as a client would.
  constexpr size_t kMessageBytes = 64 << 10;
  jobd::RealClock clock;
  jobd::Scheduler scheduler({.max_message_bytes = kMessageBytes}, clock);
  jobd::Recovered recovered;
  recovered.rows.push_back(std::move(row));
  scheduler.Restore(std::move(recovered), Registry());
  absl::StatusOr<jobd::v1::Job> job = scheduler.GetJob(7);
  if (job.ok()) {
    std::string bytes;
    Check(job->SerializeToString(&bytes));
    jobd::v1::Job back;
    Check(back.ParseFromString(bytes));
    Check(bytes.size() <= kMessageBytes);
  }
  return 0;
}
