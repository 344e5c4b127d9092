#include "workers/task_registry.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "spdlog/fmt/fmt.h"

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

absl::Status TaskRegistry::Add(TaskDef def) {
  if (def.name.empty()) {
    return absl::InvalidArgumentError("task name is empty");
  }
  if (!def.run) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", def.name, "' has no implementation"));
  }
  absl::flat_hash_set<std::string> seen;
  bool optional_seen = false;
  for (const TaskParam& p : def.params) {
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
  const std::string name = def.name;
  auto [it, inserted] =
      tasks_.try_emplace(name, std::make_unique<TaskDef>(std::move(def)));
  if (!inserted) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", name, "' is already registered"));
  }
  return absl::OkStatus();
}

const TaskDef* TaskRegistry::Find(std::string_view name) const {
  auto it = tasks_.find(absl::string_view(name.data(), name.size()));
  return it == tasks_.end() ? nullptr : it->second.get();
}

std::vector<const TaskDef*> TaskRegistry::List() const {
  std::vector<const TaskDef*> out;
  out.reserve(tasks_.size());
  for (const auto& [name, def] : tasks_) out.push_back(def.get());
  std::sort(out.begin(), out.end(), [](const TaskDef* a, const TaskDef* b) {
    return a->name < b->name;
  });
  return out;
}

absl::StatusOr<TaskArgs> TaskRegistry::Bind(
    const TaskDef& task, const google::protobuf::ListValue& args,
    const google::protobuf::Struct& kwargs, std::string payload) {
  google::protobuf::Struct bound;
  auto& fields = *bound.mutable_fields();
  if (task.variadic) {
    return TaskArgs(std::move(bound), args, kwargs, std::move(payload));
  }
  if (static_cast<size_t>(args.values_size()) > task.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.args: task '", task.name, "' takes at most ", task.params.size(),
        " positional argument(s), got ", args.values_size()));
  }
  for (int i = 0; i < args.values_size(); ++i) {
    const TaskParam& p = task.params[i];
    absl::Status s =
        CheckParamType(args.values(i), p.type,
                       absl::StrCat("spec.args[", i, "] (", p.name, ")"));
    if (!s.ok()) return s;
    fields[p.name] = args.values(i);
  }
  for (const auto& entry : kwargs.fields()) {
    const std::string& key = entry.first;
    const google::protobuf::Value& value = entry.second;
    auto it = std::find_if(task.params.begin(), task.params.end(),
                           [&](const TaskParam& p) { return p.name == key; });
    if (it == task.params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.kwargs.", key, ": task '", task.name,
                       "' has no parameter '", key, "'"));
    }
    if (fields.contains(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.kwargs.", key, ": parameter '", key,
                       "' is also given positionally"));
    }
    absl::Status s =
        CheckParamType(value, it->type, absl::StrCat("spec.kwargs.", key));
    if (!s.ok()) return s;
    fields[key] = value;
  }
  for (size_t i = 0; i < task.params.size(); ++i) {
    const TaskParam& p = task.params[i];
    if (fields.contains(p.name)) continue;
    if (p.required) {
      return absl::InvalidArgumentError(absl::StrCat(
          "spec.args[", i, "] / spec.kwargs.", p.name, ": task '", task.name,
          "' requires argument '", p.name, "' (", ParamTypeName(p.type), ")"));
    }
    if (p.default_value.kind_case() != google::protobuf::Value::KIND_NOT_SET) {
      fields[p.name] = p.default_value;
    }
  }
  return TaskArgs(std::move(bound), args, kwargs, std::move(payload));
}

}  // namespace jobd
