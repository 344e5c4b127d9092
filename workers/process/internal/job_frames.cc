#include "workers/process/internal/job_frames.h"

#include <cstring>
#include <string_view>
#include <utility>

#include "fmt/format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "workers/process/internal/process_info.h"
#include "workers/process/ipc.h"
#include "workers/process/worker_process.h"

namespace jobd {

RunFrameWriter::RunFrameWriter(std::string& out)
    : RunFrameWriter(out, {.frame_bytes = kChunkFrameBytes,
                           .max_frame_bytes = kMaxWorkerFrameBytes}) {}

namespace {

using google::protobuf::io::CodedOutputStream;
using WireFormatLite = google::protobuf::internal::WireFormatLite;

// The bytes of a length-delimited field of `size` bytes, with its tag.
size_t FieldBytes(int field, size_t size) {
  return WireFormatLite::TagSize(field, WireFormatLite::TYPE_BYTES) +
         CodedOutputStream::VarintSize64(size) + size;
}

uint8_t* WriteHeader(int field, size_t size, uint8_t* p) {
  p = WireFormatLite::WriteTagToArray(
      field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED, p);
  return CodedOutputStream::WriteVarint64ToArray(size, p);
}

uint8_t* WriteBytes(int field, std::string_view bytes, uint8_t* p) {
  p = WriteHeader(field, bytes.size(), p);
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  return p + bytes.size();
}

}  // namespace

// A RunJob as internal::RunJob would serialize it (fields in order, zeros
// and empty ones left out) with the spec's fields a worker reads: the task
// name, args, kwargs if any, payload, and calls with flat_calls for a
// batch. job_frames_test checks the bytes against the generated class's.
absl::Status RunFrameWriter::Add(const JobRun& run) {
  const v1::JobSpec& spec = *run.spec;
  const std::string& task = run.task->name;
  const bool batch = !spec.calls().empty();
  const bool kwargs = !spec.kwargs().fields().empty();
  const int64_t deadline = run.deadline == absl::InfiniteFuture()
                               ? 0
                               : absl::ToUnixNanos(run.deadline);
  // Sizes first (each argument's cached for its serialization below).
  size_t spec_size = task.empty() ? 0 : FieldBytes(1, task.size());
  for (const google::protobuf::Value& arg : spec.args()) {
    spec_size += FieldBytes(2, arg.ByteSizeLong());
  }
  if (kwargs) spec_size += FieldBytes(3, spec.kwargs().ByteSizeLong());
  if (!spec.payload().empty())
    spec_size += FieldBytes(4, spec.payload().size());
  if (batch) {
    spec_size += FieldBytes(80, spec.calls().size());
    if (spec.flat_calls())
      spec_size += WireFormatLite::TagSize(81, WireFormatLite::TYPE_BOOL) + 1;
  }
  size_t run_size = FieldBytes(2, spec_size);
  if (run.job_id != 0)
    run_size += 1 + CodedOutputStream::VarintSize64(run.job_id);
  if (deadline != 0) {
    run_size +=
        1 + CodedOutputStream::VarintSize64(static_cast<uint64_t>(deadline));
  }
  const size_t bytes = run_size + 8;  // + tag and length.
  if (bytes > limits_.max_frame_bytes - 64) {
    return absl::InvalidArgumentError(fmt::format(
        "the job's input ({}) is too big for a worker process (at most {}); "
        "run it on threads or send less",
        MiB(bytes), MiB(limits_.max_frame_bytes)));
  }
  if (frame_runs_ > 0 && frame_bytes_ + bytes > limits_.frame_bytes) Finish();
  frame_bytes_ += bytes;
  ++frame_runs_;
  // Then the bytes, in place.
  const size_t at = frame_.size();
  frame_.resize(at + FieldBytes(1, run_size));
  auto* p = reinterpret_cast<uint8_t*>(frame_.data() + at);
  p = WriteHeader(1, run_size, p);  // ToWorker.run
  if (run.job_id != 0) p = WireFormatLite::WriteUInt64ToArray(1, run.job_id, p);
  p = WriteHeader(2, spec_size, p);  // RunJob.spec
  if (!task.empty()) p = WriteBytes(1, task, p);
  for (const google::protobuf::Value& arg : spec.args()) {
    p = WriteHeader(2, static_cast<size_t>(arg.GetCachedSize()), p);
    p = arg.SerializeWithCachedSizesToArray(p);
  }
  if (kwargs) {
    p = WriteHeader(3, static_cast<size_t>(spec.kwargs().GetCachedSize()), p);
    p = spec.kwargs().SerializeWithCachedSizesToArray(p);
  }
  if (!spec.payload().empty()) p = WriteBytes(4, spec.payload(), p);
  if (batch) {
    p = WriteBytes(80, spec.calls(), p);
    if (spec.flat_calls()) p = WireFormatLite::WriteBoolToArray(81, true, p);
  }
  if (deadline != 0) p = WireFormatLite::WriteInt64ToArray(3, deadline, p);
  return absl::OkStatus();
}

void RunFrameWriter::Finish() {
  if (frame_runs_ > 0) {
    const size_t start = out_.size();
    out_.resize(start + kFrameHeaderBytes);
    const size_t size = frame_.size();
    for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
      out_[start + i] =
          static_cast<char>(static_cast<uint8_t>(size >> (8 * i)));
    }
    out_.append(frame_);
  }
  frame_.clear();
  frame_runs_ = 0;
  frame_bytes_ = 0;
}

void AppendCancelFrame(uint64_t job_id, CancelReason reason, std::string& out) {
  internal::ToWorker message;
  internal::CancelJob& c = *message.add_cancel();
  c.set_job_id(job_id);
  c.set_reason(static_cast<int>(reason));
  AppendFrame(message, out);
}

void AppendPingFrame(uint64_t ping, std::string& out) {
  internal::ToWorker message;
  message.set_ping(ping);
  AppendFrame(message, out);
}

JobOutcome OutcomeFromDone(internal::JobDone& done) {
  JobOutcome outcome;
  if (done.ok()) {
    outcome.output.value = std::move(*done.mutable_value());
    outcome.output.payload = std::move(*done.mutable_payload());
    if (!done.results().empty()) {  // A batch's.
      outcome.output.results = std::move(*done.mutable_results());
      outcome.output.call_errors.reserve(done.call_errors_size());
      for (v1::CallError& e : *done.mutable_call_errors()) {
        outcome.output.call_errors.push_back(std::move(e));
      }
    }
  } else {
    outcome.status = absl::Status(static_cast<absl::StatusCode>(done.code()),
                                  done.message());
    outcome.reason = done.reason();
  }
  outcome.cpu_time = absl::Nanoseconds(done.cpu_ns());
  outcome.wall_time = absl::Nanoseconds(done.wall_ns());
  return outcome;
}

}  // namespace jobd
