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
// Groups: tasks declared outside C++ (the config file's command tasks)
// are added as a group that SetGroup replaces as a whole while jobs run
// (SIGHUP): an unchanged task keeps its TaskDef, a changed one gets a new
// TaskDef under the same name, a removed one disappears from Find/List.
//
// Thread-safety: every method is safe to call concurrently (a reader lock
// for Find/List). The registry owns its TaskDefs and never frees one
// before it is destroyed: a definition a group replaced or removed is
// retired, not deleted, because jobs admitted earlier hold its pointer and
// finish on it. Pointers returned by Find() and List() therefore live as
// long as the registry. Retired definitions are kept until restart; one
// that a later reload declares again (the same fingerprint) is reused, so
// they grow only with distinct definitions, not with reloads.
#ifndef JOBD_WORKERS_SDK_TASK_REGISTRY_H_
#define JOBD_WORKERS_SDK_TASK_REGISTRY_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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

  // What SetGroup changed, by task name.
  struct GroupChange {
    std::vector<std::string> added, changed, removed;
    bool empty() const {
      return added.empty() && changed.empty() && removed.empty();
    }
  };
  // Makes `defs` the tasks of `group` at once, all or nothing. Each def
  // comes with a fingerprint of its declaration: equal fingerprints under
  // the same name mean an unchanged task, which keeps its TaskDef.
  // InvalidArgument (nothing changed) for a def Add() would refuse or a
  // name taken by a task outside the group.
  absl::StatusOr<GroupChange> SetGroup(
      const std::string& group,
      std::vector<std::pair<TaskDef, std::string>> defs);

  // Binds the spec's positional args and keyword kwargs to `task`'s
  // parameters, sharing `spec` (nothing is copied). InvalidArgument naming
  // the field (spec.args[i] / spec.kwargs.NAME) for a missing, extra,
  // repeated or ill-typed argument. A batch (spec.calls of a task that
  // takes them) binds nothing: its calls are the task's to bind.
  static absl::StatusOr<TaskArgs> Bind(const TaskDef& task,
                                       std::shared_ptr<const v1::JobSpec> spec);

 private:
  struct Entry {
    std::unique_ptr<TaskDef> def;
    std::string group;        // Empty: added by Add().
    std::string fingerprint;  // Of a group's task.
  };
  static absl::Status Check(const TaskDef& def);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> tasks_ ABSL_GUARDED_BY(mu_);
  // Replaced or removed group tasks (see the preamble).
  std::vector<Entry> retired_ ABSL_GUARDED_BY(mu_);
};

// Checks that `value` has `type`; on mismatch returns InvalidArgument saying
// "<field>: expected <type>, got <kind>".
absl::Status CheckParamType(const google::protobuf::Value& value,
                            ParamType type, std::string_view field);

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_TASK_REGISTRY_H_
