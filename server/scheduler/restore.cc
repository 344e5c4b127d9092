#include "server/scheduler/restore.h"

#include <algorithm>
#include <utility>

#include "server/jobs/dependency_results.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

Restorer::Restorer(const TaskRegistry& registry, const Router& router,
                   std::deque<TaskDef>& vanished, size_t max_message_bytes)
    : registry_(registry),
      router_(router),
      vanished_(vanished),
      max_message_bytes_(max_message_bytes) {}

Restorer::Revived Restorer::Revive(JournalRow& row, const std::string* owner,
                                   std::vector<LoggedEvent>& log) const {
  Revived out;
  auto job = std::make_unique<JobRecord>();
  job->id = row.id;
  job->owner = owner;
  job->spec = std::move(row.spec);
  job->spec.set_task(registry_.Find(job->spec.task_name()));
  if (job->spec.task() == nullptr) {  // Unknown to this daemon now.
    vanished_.push_back(TaskDef{.name = job->spec.task_name()});
    job->spec.set_task(&vanished_.back());
  }
  job->state = row.state;
  job->executor = row.executor;
  job->create_time = row.create_time;
  job->start_time = row.start_time;
  // A WAITING job's record keeps its due time there (job_record.h).
  job->finish_time =
      row.state == v1::JOB_STATE_WAITING ? row.due_time : row.finish_time;
  job->end = std::move(row.end);
  if (row.history != nullptr) job->extras().history = std::move(row.history);
  if (!row.problem.empty()) {
    // Failed as a live job (Judge), the others untouched.
    job->state = v1::JOB_STATE_QUEUED;
    out.problem = std::move(row.problem);
  } else if (job->end != nullptr &&
             job->end->state == v1::JOB_STATE_SUCCEEDED) {
    // Kept by an older jobd: a result that no reader could receive.
    const v1::JobResult& r = job->end->result();
    const size_t bytes = ResultBytes(
        r.value(), r.payload(), r.has_batch() ? r.batch().ByteSizeLong() : 0);
    size_t spec_bytes = 0;
    if (!ResultFits(bytes, *job, max_message_bytes_, &spec_bytes)) {
      job->end = ResultTooLarge(bytes, spec_bytes, max_message_bytes_);
      job->state = row.state = v1::JOB_STATE_FAILED;
      out.rewrite = true;
    }
  }
  job->accepted_seq = row.accepted_seq;
  job->started_seq = row.started_seq;
  job->attempts = row.attempts;
  job->cluster = row.cluster;
  job->last_sequence =
      std::max({row.accepted_seq, row.started_seq, row.ended_seq});
  auto add = [&](uint64_t seq, v1::EventType type, absl::Time time) {
    if (seq == 0) return;
    log.push_back({.sequence = seq,
                   .job_id = row.id,
                   .time = time,
                   .type = type,
                   .executor = row.executor});
  };
  add(row.accepted_seq, v1::EVENT_TYPE_ACCEPTED, row.create_time);
  add(row.started_seq, v1::EVENT_TYPE_STARTED, row.start_time);
  if (job->end != nullptr) {
    add(row.ended_seq, TerminalEventType(row.state), row.finish_time);
  }
  out.job = std::move(job);
  return out;
}

Restorer::Verdict Restorer::Judge(const JobRecord& job,
                                  const std::string& problem) const {
  Verdict v;
  if (!problem.empty()) {
    v.fate = Fate::kUnreadable;
    v.end = MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kDataLoss,
                      v1::ERROR_REASON_LOST_ON_RESTART,
                      fmt::format("jobd could not read this job back from its "
                                  "journal at restart: {}; what it was and "
                                  "did is lost",
                                  problem));
    return v;
  }
  const bool was_running = job.state == v1::JOB_STATE_RUNNING;
  std::string unrunnable;
  absl::StatusOr<TaskArgs> args =
      job.spec.task()->has_sync() || job.spec.task()->has_async()
          ? BindSpec(*job.spec.task(), job.spec.body())
          : absl::NotFoundError(fmt::format(
                "task '{}' is not registered in this daemon any more",
                job.spec.task_name()));
  if (!args.ok()) {
    unrunnable = std::string(args.status().message());
  } else {
    v.run = std::make_shared<JobRecord::RunState>(*std::move(args));
    absl::StatusOr<v1::Executor> executor =
        router_.Route(*job.spec.task(), job.spec->kind(), job.spec->executor());
    if (executor.ok()) {
      v.executor = *executor;
    } else {
      unrunnable = std::string(executor.status().message());
    }
  }
  if (!unrunnable.empty()) {
    v.fate = Fate::kUnrunnable;
    v.end = MakeError(
        v1::JOB_STATE_FAILED, absl::StatusCode::kFailedPrecondition,
        v1::ERROR_REASON_INVALID_INPUT,
        "restored from the journal but cannot run here: " + unrunnable);
    return v;
  }
  if (was_running && job.spec->delivery() != v1::DELIVERY_AT_LEAST_ONCE) {
    v.fate = Fate::kLost;
    v.end = MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kAborted,
                      v1::ERROR_REASON_LOST_ON_RESTART,
                      fmt::format("jobd stopped while the job ran or was "
                                  "about to (attempt {}); it is not run "
                                  "again (DELIVERY_AT_MOST_ONCE)",
                                  job.attempts));
    return v;
  }
  v.fate = was_running ? Fate::kRerun : Fate::kQueue;
  return v;
}

bool KeptAtShutdown(const JobRecord& job, bool journal) {
  return journal && (job.state == v1::JOB_STATE_QUEUED ||
                     job.state == v1::JOB_STATE_WAITING ||
                     job.spec->delivery() == v1::DELIVERY_AT_LEAST_ONCE);
}

std::shared_ptr<JobEnd> ShutdownEnd() {
  return MakeError(v1::JOB_STATE_CANCELLED, absl::StatusCode::kUnavailable,
                   v1::ERROR_REASON_SHUTDOWN,
                   "jobd shut down before the job ended");
}

}  // namespace jobd
