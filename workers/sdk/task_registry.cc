#include "workers/sdk/task_registry.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "spdlog/fmt/fmt.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

std::string_view ValueKindName(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return "null";
    case google::protobuf::Value::kNumberValue:
      return "number";
    case google::protobuf::Value::kStringValue:
      return "string";
    case google::protobuf::Value::kBoolValue:
      return "bool";
    case google::protobuf::Value::kStructValue:
      return "object";
    case google::protobuf::Value::kListValue:
      return "list";
    case google::protobuf::Value::KIND_NOT_SET:
      break;
  }
  return "nothing";
}

// Largest integer a double holds exactly: ints beyond are ambiguous.
constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53

}  // namespace

absl::Status CheckParamType(const google::protobuf::Value& value,
                            ParamType type, std::string_view field) {
  bool ok = false;
  switch (type) {
    case ParamType::kAny:
      ok = value.kind_case() != google::protobuf::Value::KIND_NOT_SET;
      break;
    case ParamType::kBool:
      ok = value.has_bool_value();
      break;
    case ParamType::kNumber:
      ok = value.has_number_value() && std::isfinite(value.number_value());
      break;
    case ParamType::kInt: {
      if (!value.has_number_value()) break;
      const double d = value.number_value();
      if (!std::isfinite(d) || std::trunc(d) != d) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: expected int, got non-integral number {}", field, d));
      }
      if (std::fabs(d) > kMaxExactInt) {
        return absl::InvalidArgumentError(
            fmt::format("{}: int out of range (|n| <= 2^53)", field));
      }
      ok = true;
      break;
    }
    case ParamType::kString:
      ok = value.has_string_value();
      break;
    case ParamType::kList:
      ok = value.has_list_value();
      break;
    case ParamType::kObject:
      ok = value.has_struct_value();
      break;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("{}: expected {}, got {}",
                                                field, ParamTypeName(type),
                                                ValueKindName(value)));
}

absl::Status TaskRegistry::Check(const TaskDef& def) {
  if (def.name.empty()) {
    return absl::InvalidArgumentError("task name is empty");
  }
  // Names go on the wire (events, ListTasks): protobuf strings.
  if (!IsValidUtf8(def.name) || !IsValidUtf8(def.description)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", MakeValidUtf8(def.name),
                     "': its name and description must be valid UTF-8"));
  }
  if (!def.has_sync() && !def.has_async()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", def.name, "' has no implementation"));
  }
  if (def.has_async() && !def.async->valid()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task '", def.name,
        "' has an async implementation with neither a coroutine nor a "
        "timer's delay and then"));
  }
  if (def.holds_pool_slot && (!def.has_async() || def.needs_isolation)) {
    // The reactor runs such a task (as the process pool's guest).
    return absl::InvalidArgumentError(
        absl::StrCat("task '", def.name,
                     "' holds a pool slot but has no async implementation "
                     "or needs isolation"));
  }
  if (def.needs_isolation && !def.has_sync()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", def.name,
                     "' needs isolation but has no sync implementation for "
                     "the process pool"));
  }
  absl::flat_hash_set<std::string> seen;
  bool optional_seen = false;
  for (const TaskParam& p : def.params) {
    if (!IsValidUtf8(p.name) || !IsValidUtf8(p.help)) {
      return absl::InvalidArgumentError(
          absl::StrCat("task '", def.name, "': parameter '",
                       MakeValidUtf8(p.name), "': name or help not UTF-8"));
    }
    if (p.name.empty() || !seen.insert(p.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("task '", def.name,
                       "': empty or repeated parameter name '", p.name, "'"));
    }
    if (p.required && optional_seen) {
      return absl::InvalidArgumentError(
          absl::StrCat("task '", def.name, "': required parameter '", p.name,
                       "' follows an optional one"));
    }
    optional_seen = optional_seen || !p.required;
  }
  return absl::OkStatus();
}

absl::Status TaskRegistry::Add(TaskDef def) {
  if (absl::Status s = Check(def); !s.ok()) return s;
  const std::string name = def.name;
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = tasks_.try_emplace(
      name, Entry{std::make_unique<TaskDef>(std::move(def))});
  if (!inserted) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", name, "' is already registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TaskRegistry::GroupChange> TaskRegistry::SetGroup(
    const std::string& group,
    std::vector<std::pair<TaskDef, std::string>> defs) {
  absl::flat_hash_set<std::string> names;
  for (const auto& [def, fingerprint] : defs) {
    if (absl::Status s = Check(def); !s.ok()) return s;
    if (!names.insert(def.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("task '", def.name, "' is declared twice"));
    }
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [def, fingerprint] : defs) {
    auto it = tasks_.find(def.name);
    if (it != tasks_.end() && it->second.group != group) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task '", def.name, "': the name is taken by ",
          it->second.group.empty() ? "a built-in task (or a plugin's)"
                                   : "a task of " + it->second.group));
    }
  }
  GroupChange change;
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    if (it->second.group == group && !names.contains(it->first)) {
      change.removed.push_back(it->first);
      retired_.push_back(std::move(it->second));
      tasks_.erase(it++);
    } else {
      ++it;
    }
  }
  for (auto& item : defs) {
    // Named references, not a structured binding: clang 14 cannot capture
    // one in the lambda below.
    TaskDef& def = item.first;
    std::string& fingerprint = item.second;
    auto it = tasks_.find(def.name);
    if (it != tasks_.end() && it->second.fingerprint == fingerprint) continue;
    Entry entry;
    // A definition declared before (and retired since) comes back as it
    // was: its pointer may still be held, and retired ones stay bounded.
    auto old = std::find_if(retired_.begin(), retired_.end(), [&](Entry& e) {
      return e.group == group && e.def->name == def.name &&
             e.fingerprint == fingerprint;
    });
    if (old != retired_.end()) {
      entry = std::move(*old);
      retired_.erase(old);
    } else {
      entry = Entry{std::make_unique<TaskDef>(std::move(def)), group,
                    std::move(fingerprint)};
    }
    const std::string name = entry.def->name;
    if (it != tasks_.end()) {
      change.changed.push_back(name);
      retired_.push_back(std::move(it->second));
      it->second = std::move(entry);
    } else {
      change.added.push_back(name);
      tasks_.emplace(name, std::move(entry));
    }
  }
  for (auto* list : {&change.added, &change.changed, &change.removed}) {
    std::sort(list->begin(), list->end());
  }
  return change;
}

const TaskDef* TaskRegistry::Find(std::string_view name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = tasks_.find(absl::string_view(name.data(), name.size()));
  return it == tasks_.end() ? nullptr : it->second.def.get();
}

std::vector<const TaskDef*> TaskRegistry::List() const {
  std::vector<const TaskDef*> out;
  absl::ReaderMutexLock lock(&mu_);
  out.reserve(tasks_.size());
  for (const auto& [name, entry] : tasks_) out.push_back(entry.def.get());
  std::sort(out.begin(), out.end(), [](const TaskDef* a, const TaskDef* b) {
    return a->name < b->name;
  });
  return out;
}

absl::StatusOr<TaskArgs> TaskRegistry::Bind(
    const TaskDef& task, std::shared_ptr<const v1::JobSpec> spec) {
  if (task.variadic) return TaskArgs(&task, std::move(spec), {});
  if (task.takes_calls && !spec->calls().empty()) {
    // A batch: each call is bound by the task itself (the daemon checked
    // them, server/frontend/call_batch.h); the job's own are empty.
    return TaskArgs(&task, std::move(spec),
                    TaskArgs::Bound(task.params.size(), nullptr));
  }
  const auto& args = spec->args();
  const auto& kwargs = spec->kwargs().fields();
  if (static_cast<size_t>(args.size()) > task.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.args: task '", task.name, "' takes at most ", task.params.size(),
        " positional argument(s), got ", args.size()));
  }
  TaskArgs::Bound bound(task.params.size());
  for (int i = 0; i < args.size(); ++i) {
    const TaskParam& p = task.params[i];
    absl::Status s = CheckParamType(
        args[i], p.type, absl::StrCat("spec.args[", i, "] (", p.name, ")"));
    if (!s.ok()) return s;
    bound[i] = &args[i];
  }
  for (const auto& entry : kwargs) {
    const std::string& key = entry.first;
    auto it = std::find_if(task.params.begin(), task.params.end(),
                           [&](const TaskParam& p) { return p.name == key; });
    if (it == task.params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.kwargs.", key, ": task '", task.name,
                       "' has no parameter '", key, "'"));
    }
    const size_t i = it - task.params.begin();
    if (bound[i] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.kwargs.", key, ": parameter '", key,
                       "' is also given positionally"));
    }
    absl::Status s = CheckParamType(entry.second, it->type,
                                    absl::StrCat("spec.kwargs.", key));
    if (!s.ok()) return s;
    bound[i] = &entry.second;
  }
  for (size_t i = 0; i < task.params.size(); ++i) {
    const TaskParam& p = task.params[i];
    if (bound[i] != nullptr) continue;
    if (p.required) {
      return absl::InvalidArgumentError(absl::StrCat(
          "spec.args[", i, "] / spec.kwargs.", p.name, ": task '", task.name,
          "' requires argument '", p.name, "' (", ParamTypeName(p.type), ")"));
    }
    if (p.default_value.kind_case() != google::protobuf::Value::KIND_NOT_SET) {
      bound[i] = &p.default_value;
    }
  }
  return TaskArgs(&task, std::move(spec), std::move(bound));
}

}  // namespace jobd
