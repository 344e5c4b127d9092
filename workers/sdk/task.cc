#include "workers/sdk/task.h"

#include <cstdlib>

#include "spdlog/spdlog.h"

namespace jobd {

bool CancelToken::Cancel(CancelReason reason) {
  absl::MutexLock lock(&mu_);
  int expected = 0;
  return reason_.compare_exchange_strong(expected, static_cast<int>(reason),
                                         std::memory_order_acq_rel);
}

bool CancelToken::WaitFor(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto is_cancelled = [this] { return cancelled(); };
  return mu_.AwaitWithTimeout(absl::Condition(&is_cancelled), timeout);
}

const char* ParamTypeName(ParamType type) {
  switch (type) {
    case ParamType::kAny:
      return "any";
    case ParamType::kBool:
      return "bool";
    case ParamType::kInt:
      return "int";
    case ParamType::kNumber:
      return "number";
    case ParamType::kString:
      return "string";
    case ParamType::kList:
      return "list";
    case ParamType::kObject:
      return "object";
  }
  return "?";
}

TaskParam Param(std::string name, ParamType type, std::string help) {
  TaskParam p;
  p.name = std::move(name);
  p.type = type;
  p.help = std::move(help);
  return p;
}

TaskParam OptionalParam(std::string name, ParamType type,
                        google::protobuf::Value default_value,
                        std::string help) {
  TaskParam p = Param(std::move(name), type, std::move(help));
  p.required = false;
  p.default_value = std::move(default_value);
  return p;
}

google::protobuf::Value StringValue(std::string s) {
  google::protobuf::Value v;
  v.set_string_value(std::move(s));
  return v;
}

google::protobuf::Value NumberValue(double d) {
  google::protobuf::Value v;
  v.set_number_value(d);
  return v;
}

google::protobuf::Value BoolValue(bool b) {
  google::protobuf::Value v;
  v.set_bool_value(b);
  return v;
}

google::protobuf::Value NullValue() {
  google::protobuf::Value v;
  v.set_null_value(google::protobuf::NULL_VALUE);
  return v;
}

TaskArgs::TaskArgs()
    : spec_(std::shared_ptr<const v1::JobSpec>(
          std::shared_ptr<void>(), &v1::JobSpec::default_instance())) {}

TaskArgs::TaskArgs(const TaskDef* task, std::shared_ptr<const v1::JobSpec> spec,
                   Bound bound)
    : task_(task), spec_(std::move(spec)), bound_(std::move(bound)) {}

const google::protobuf::Value* TaskArgs::Find(std::string_view name) const {
  if (task_ == nullptr) return nullptr;
  for (size_t i = 0; i < bound_.size() && i < task_->params.size(); ++i) {
    if (task_->params[i].name == name) return bound_[i];
  }
  return nullptr;
}

const google::protobuf::Value& TaskArgs::Get(std::string_view name) const {
  const google::protobuf::Value* v = Find(name);
  if (v == nullptr) {
    spdlog::critical("task read undeclared or unset parameter '{}'", name);
    std::abort();
  }
  return *v;
}

int64_t TaskArgs::Int(std::string_view name) const {
  return static_cast<int64_t>(Get(name).number_value());
}
double TaskArgs::Number(std::string_view name) const {
  return Get(name).number_value();
}
const std::string& TaskArgs::String(std::string_view name) const {
  return Get(name).string_value();
}
bool TaskArgs::Bool(std::string_view name) const {
  return Get(name).bool_value();
}

}  // namespace jobd
