// TaskRegistry: the set of tasks a daemon (and its worker processes) can run,
// and the binder that turns a spec's raw arguments into validated TaskArgs.
//
// Task authors add a task with a few lines:
//
//   registry.Add({.name = "greet", .description = "Says hello",
//                 .params = {{.name = "who", .type = ParamType::kString}},
//                 .run = [](TaskContext& ctx) -> absl::StatusOr<TaskOutput> {
//                   TaskOutput out;
//                   out.value.set_string_value("hello " +
//                                              ctx.args().String("who"));
//                   return out;
//                 }});
//
// Thread-safety: Add() only during start-up, before any other thread reads
// the registry; afterwards it is immutable and every method is safe to call
// concurrently. The registry owns its TaskDefs; pointers returned by Find()
// live as long as the registry.
#ifndef JOBD_WORKERS_SDK_TASK_REGISTRY_H_
#define JOBD_WORKERS_SDK_TASK_REGISTRY_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workers/sdk/task.h"

namespace jobd {

class TaskRegistry {
 public:
  // Registers a task. InvalidArgument for an empty or duplicate name, a
  // missing implementation, or a malformed parameter list.
  absl::Status Add(TaskDef def);

  // The task called `name`, or nullptr.
  const TaskDef* Find(std::string_view name) const;

  // Every task, sorted by name.
  std::vector<const TaskDef*> List() const;

  // Binds the spec's positional args and keyword kwargs to `task`'s
  // parameters, sharing `spec` (nothing is copied). InvalidArgument naming
  // the field (spec.args[i] / spec.kwargs.NAME) for a missing, extra,
  // repeated or ill-typed argument.
  static absl::StatusOr<TaskArgs> Bind(const TaskDef& task,
                                       std::shared_ptr<const v1::JobSpec> spec);

 private:
  absl::flat_hash_map<std::string, std::unique_ptr<TaskDef>> tasks_;
};

// Checks that `value` has `type`; on mismatch returns InvalidArgument saying
// "<field>: expected <type>, got <kind>".
absl::Status CheckParamType(const google::protobuf::Value& value,
                            ParamType type, std::string_view field);

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_TASK_REGISTRY_H_
