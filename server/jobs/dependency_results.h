// Dependency results (JobSpec.dependency_results): a dependant that asks for
// them gets, once it is ready, one list as its first positional argument,
// an element per spec.depends_on: that job's result value. This holds the
// two spec-level steps the frontend and the scheduler share: binding a spec
// whose results are still to come (as if the list were there), and making
// the spec that holds them.
//
// Stateless; thread-safe. Ownership: a bound TaskArgs shares the spec it
// was bound to (for a spec still waiting, a copy holding the placeholder).
#ifndef JOBD_SERVER_JOBS_DEPENDENCY_RESULTS_H_
#define JOBD_SERVER_JOBS_DEPENDENCY_RESULTS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/struct.pb.h"
#include "jobd/v1/jobd.pb.h"
#include "workers/sdk/task.h"

namespace jobd {

// Whether the spec asks for its dependencies' results and has not got them.
inline bool AwaitsDependencyResults(const v1::JobSpec& spec) {
  return spec.dependency_results() && !spec.dependency_results_passed();
}

// TaskRegistry::Bind, except that a spec awaiting its dependencies' results
// is bound as if an empty list stood at spec.args[0] (where they will go):
// an argument error there says so.
absl::StatusOr<TaskArgs> BindSpec(const TaskDef& task,
                                  std::shared_ptr<const v1::JobSpec> spec);

// `spec` (awaiting them) with `results` inserted at args[0] as one list and
// dependency_results_passed set.
v1::JobSpec WithDependencyResults(const v1::JobSpec& spec,
                                  std::vector<google::protobuf::Value> results);

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_DEPENDENCY_RESULTS_H_
