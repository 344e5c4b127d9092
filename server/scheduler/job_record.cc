#include "server/scheduler/job_record.h"

#include <algorithm>
#include <limits>

#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"
#include "workers/executor/executor.h"
#include "workers/sdk/utf8.h"

namespace jobd {

// The job table holds up to max_queued + max_retained records.
static_assert(sizeof(JobRecord) <= 192);
// Sinks queue events, the resume log holds up to event_log_size of them
// (bench/README.md "reactor": memory per waiting job).
static_assert(sizeof(Event) <= 64);
// One per retained job; with make_shared's count, 88 bytes (the result's
// oneof case, value or batch, took it from 56 to 64).
static_assert(sizeof(JobEnd) <= 64);

v1::JobState JobRecord::ShownState() const {
  const bool runs_elsewhere = state == v1::JOB_STATE_QUEUED &&
                              (cluster == kOutbox || cluster == kPublished) &&
                              start_time != absl::InfinitePast();
  return runs_elsewhere ? v1::JOB_STATE_RUNNING : state;
}

v1::Job JobRecord::Snapshot() const {
  v1::Job out;
  out.set_id(FormatJobId(id));
  out.set_owner(*owner);
  *out.mutable_spec() = spec.Whole();
  out.set_state(ShownState());
  out.set_executor(executor);
  *out.mutable_create_time() = ToProtoTime(create_time);
  if (start_time != absl::InfinitePast()) {
    *out.mutable_start_time() = ToProtoTime(start_time);
  }
  if (end != nullptr) {
    *out.mutable_finish_time() = ToProtoTime(finish_time);
    SetEnd(*end, &out);
  }
  if (more != nullptr && more->progress != nullptr) {
    *out.mutable_progress() = *more->progress;
  }
  out.set_last_sequence(last_sequence);
  out.set_attempts(attempts);
  if (state == v1::JOB_STATE_WAITING) {
    *out.mutable_next_attempt_time() = ToProtoTime(finish_time);
  }
  if (more != nullptr && more->history != nullptr) {
    // A Job holding only its history: merged, it appends to out's.
    out.MergeFromString(*more->history);
  }
  if (!spec->traceparent().empty()) out.set_traceparent(spec->traceparent());
  return out;
}

JournalRow JobRecord::Row() const {
  JournalRow row;
  row.id = id;
  row.owner = *owner;
  row.spec = spec;
  row.state = gated ? v1::JOB_STATE_RUNNING : state;
  row.executor = executor;
  row.create_time = create_time;
  row.start_time = start_time;
  if (end != nullptr) {
    row.finish_time = finish_time;
    row.end = end;
    row.ended_seq = last_sequence;
  }
  row.accepted_seq = accepted_seq;
  row.started_seq = started_seq;
  row.attempts = attempts + (gated ? 1 : 0);
  if (state == v1::JOB_STATE_WAITING && !gated) row.due_time = finish_time;
  if (more != nullptr) row.history = more->history;
  row.cluster = cluster == kForeign ? 0 : cluster;
  return row;
}

v1::EventType TerminalEventType(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      return v1::EVENT_TYPE_SUCCEEDED;
    case v1::JOB_STATE_CANCELLED:
      return v1::EVENT_TYPE_CANCELLED;
    default:
      return v1::EVENT_TYPE_FAILED;
  }
}

std::shared_ptr<JobEnd> MakeError(v1::JobState state, absl::StatusCode code,
                                  v1::ErrorReason reason, std::string message) {
  auto end = std::make_shared<JobEnd>();
  end->state = state;
  v1::JobError& error = end->mutable_error();
  error.set_code(static_cast<int32_t>(code));
  error.set_reason(reason);
  error.set_message(ClipUtf8(message, kMaxErrorMessageBytes));
  return end;
}

uint32_t EndBytes(const JobEnd& end) {
  const size_t bytes = end.state == v1::JOB_STATE_SUCCEEDED
                           ? end.result().ByteSizeLong()
                           : end.error().ByteSizeLong();
  return static_cast<uint32_t>(
      std::min<size_t>(bytes, std::numeric_limits<uint32_t>::max()));
}

size_t ResultBytes(const google::protobuf::Value& value,
                   const std::string& payload, size_t batch_bytes) {
  return value.ByteSizeLong() + payload.size() + batch_bytes + 16;
}

size_t BatchBytes(const std::string& results,
                  const std::vector<v1::CallError>& call_errors) {
  size_t bytes = results.empty() ? 0 : results.size() + 8;
  for (const v1::CallError& e : call_errors) bytes += e.ByteSizeLong() + 8;
  return bytes;
}

bool ResultFits(size_t result_bytes, const JobRecord& job,
                size_t max_message_bytes, size_t* spec_bytes) {
  if (max_message_bytes == 0) return true;
  // The spec as a Job message carries it, with the field's framing.
  *spec_bytes = SpecBytes(*job.spec) + 16;
  return result_bytes + *spec_bytes + kMessageEnvelopeBytes <=
         max_message_bytes;
}

std::shared_ptr<JobEnd> ResultTooLarge(size_t result_bytes, size_t spec_bytes,
                                       size_t limit) {
  return MakeError(
      v1::JOB_STATE_FAILED, absl::StatusCode::kResourceExhausted,
      v1::ERROR_REASON_RESULT_TOO_LARGE,
      fmt::format("the result is {} bytes: with the job's spec ({} bytes) it "
                  "does not fit one message of {} bytes (--max-message-bytes), "
                  "so it was dropped; return less, or bulk data elsewhere",
                  result_bytes, spec_bytes, limit));
}

std::string Bytes(uint64_t n) {
  if (n < 1024) return fmt::format("{} B", n);
  if (n < (1 << 20)) return fmt::format("{:.1f} KiB", n / 1024.0);
  if (n < (uint64_t{1} << 30)) return fmt::format("{:.1f} MiB", n / 1048576.0);
  return fmt::format("{:.2f} GiB", n / 1073741824.0);
}

}  // namespace jobd
