// Job records for the unit tests of the scheduler's parts (Lane, JobTable,
// EventLog, Retention, Restorer): a record as the scheduler would hold it,
// made in one line, with an end when the state is terminal.
//
// Thread-safety: none (plain values). Ownership: the caller owns what it
// makes; `owner` must be an interned name (JobTable::Intern) or outlive
// the record.
#ifndef JOBD_TESTS_FAKES_JOB_RECORDS_H_
#define JOBD_TESTS_FAKES_JOB_RECORDS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "server/scheduler/job_record.h"

namespace jobd {

struct RecordOptions {
  v1::JobState state = v1::JOB_STATE_QUEUED;
  std::string payload;          // Makes the spec bigger.
  std::string idempotency_key;  // Empty: none.
  int32_t priority = 0;
  uint32_t chunksize = 0;
  absl::Time finish_time = absl::UnixEpoch();  // Terminal states only.
};

inline std::unique_ptr<JobRecord> MakeRecord(uint64_t id,
                                             const std::string* owner,
                                             RecordOptions o = {}) {
  auto spec = std::make_shared<v1::JobSpec>();
  spec->set_task("ok");
  spec->set_payload(std::move(o.payload));
  spec->set_idempotency_key(std::move(o.idempotency_key));
  spec->set_priority(o.priority);
  spec->set_chunksize(o.chunksize);
  spec->ByteSizeLong();  // For SpecBytes, as admission does.
  auto job = std::make_unique<JobRecord>();
  job->id = id;
  job->owner = owner;
  job->spec = std::move(spec);
  job->state = o.state;
  if (o.state != v1::JOB_STATE_QUEUED && o.state != v1::JOB_STATE_RUNNING) {
    auto end = std::make_shared<JobEnd>();
    end->state = o.state;
    end->bytes = 100;  // What the end adds to the byte budgets.
    job->end = std::move(end);
    job->finish_time = o.finish_time;
  }
  return job;
}

}  // namespace jobd

#endif  // JOBD_TESTS_FAKES_JOB_RECORDS_H_
