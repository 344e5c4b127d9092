// BindSpec and WithDependencyResults (dependency_results.h).
#include "server/jobs/dependency_results.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "workers/sdk/task_registry.h"

namespace jobd {
namespace {

// Inserts `list` before the spec's first positional argument.
void InsertFirstArg(v1::JobSpec& spec, google::protobuf::Value list) {
  auto* args = spec.mutable_args();
  *args->Add() = std::move(list);
  for (int i = args->size() - 1; i > 0; --i) args->SwapElements(i, i - 1);
}

}  // namespace

absl::StatusOr<TaskArgs> BindSpec(const TaskDef& task,
                                  std::shared_ptr<const v1::JobSpec> spec) {
  if (!AwaitsDependencyResults(*spec)) {
    return TaskRegistry::Bind(task, std::move(spec));
  }
  auto placeholder = std::make_shared<v1::JobSpec>(*spec);
  google::protobuf::Value empty;
  empty.mutable_list_value();
  InsertFirstArg(*placeholder, std::move(empty));
  absl::StatusOr<TaskArgs> bound =
      TaskRegistry::Bind(task, std::move(placeholder));
  if (!bound.ok()) {
    return absl::Status(
        bound.status().code(),
        absl::StrCat("spec.dependency_results: the results go first, in "
                     "spec.args[0], before the arguments given: ",
                     bound.status().message()));
  }
  return bound;
}

v1::JobSpec WithDependencyResults(
    const v1::JobSpec& spec, std::vector<google::protobuf::Value> results) {
  v1::JobSpec out = spec;
  google::protobuf::Value list;
  auto* values = list.mutable_list_value()->mutable_values();
  values->Reserve(static_cast<int>(results.size()));
  for (google::protobuf::Value& v : results) *values->Add() = std::move(v);
  InsertFirstArg(out, std::move(list));
  out.set_dependency_results_passed(true);
  return out;
}

}  // namespace jobd
