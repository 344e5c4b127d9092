#include "server/config/toml_config.h"

#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "server/config/schedule_tables.h"
#include "spdlog/fmt/fmt.h"
#include "toml++/toml.h"
#include "workers/sdk/task_registry.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// A [[task]]'s `retries` before the daemon's --retry-max-attempts-limit
// (checked with the other options) applies.
constexpr int64_t kMaxTaskRetries = 999;

using google::protobuf::Value;

std::string Line(const toml::source_region& where) {
  return absl::StrCat("line ", where.begin.line);
}

std::string TypeOf(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date or time";
  }
}

// A scalar as CLI11 reads it from the command line; false if `node` is
// none (a table, an array, a date).
bool ScalarText(const toml::node& node, std::string* out) {
  if (const auto* s = node.as_string()) {
    *out = s->get();
  } else if (const auto* i = node.as_integer()) {
    *out = absl::StrCat(i->get());
  } else if (const auto* f = node.as_floating_point()) {
    *out = fmt::format("{}", f->get());
  } else if (const auto* b = node.as_boolean()) {
    *out = b->get() ? "true" : "false";
  } else {
    return false;
  }
  return true;
}

// A TOML scalar as a task argument value.
bool ToValue(const toml::node& node, Value* out) {
  if (const auto* s = node.as_string()) {
    out->set_string_value(s->get());
  } else if (const auto* i = node.as_integer()) {
    out->set_number_value(static_cast<double>(i->get()));
  } else if (const auto* f = node.as_floating_point()) {
    out->set_number_value(f->get());
  } else if (const auto* b = node.as_boolean()) {
    out->set_bool_value(b->get());
  } else {
    return false;
  }
  return true;
}

// Keys of `table` in the order they are written in the file.
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(
    const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  for (auto&& [k, v] : table) out.emplace_back(&k, &v);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    const auto &x = a.first->source().begin, &y = b.first->source().begin;
    return x.line != y.line ? x.line < y.line : x.column < y.column;
  });
  return out;
}

class TaskParser {
 public:
  explicit TaskParser(const toml::table& table) : table_(table) {}

  absl::StatusOr<CommandSpec> Parse() {
    spec_.origin = Line(table_.source());
    if (const toml::node* name = table_.get("name")) {
      if (!name->is_string() || name->as_string()->get().empty()) {
        return Error(name->source(), "name: must be a non-empty string");
      }
      spec_.name = name->as_string()->get();
      if (!IsValidUtf8(spec_.name)) {
        return Error(name->source(), "name: not valid UTF-8");
      }
    } else {
      return Error(table_.source(), "name: missing (every [[task]] needs one)");
    }
    bool has_command = false;
    for (const auto& [key, node] : InFileOrder(table_)) {
      const std::string k(key->str());
      absl::Status s;
      if (k == "name") continue;
      if (k == "command") {
        has_command = true;
        s = Command(*node);
      } else if (k == "params") {
        s = Params(*node);
      } else if (k == "description" || k == "stdin" || k == "cwd" ||
                 k == "kind" || k == "timeout" || k == "result") {
        const auto* str = node->as_string();
        if (str == nullptr) {
          s = Error(node->source(),
                    absl::StrCat(k, ": must be a string, not ", TypeOf(*node)));
        } else {
          s = Text(k, str->get(), node->source());
        }
      } else if (k == "max_output_bytes") {
        const auto* i = node->as_integer();
        if (i == nullptr || i->get() < 0 || i->get() > kMaxIoTaskBytes) {
          s = Error(node->source(),
                    absl::StrCat("max_output_bytes: must be an integer "
                                 "between 0 and ",
                                 kMaxIoTaskBytes));
        } else {
          spec_.max_output_bytes = i->get();
        }
      } else if (k == "retries") {
        const auto* i = node->as_integer();
        if (i == nullptr || i->get() < 0 || i->get() > kMaxTaskRetries) {
          s = Error(node->source(),
                    absl::StrCat("retries: must be an integer number of "
                                 "retries between 0 and ",
                                 kMaxTaskRetries));
        } else {
          spec_.retries = static_cast<uint32_t>(i->get());
        }
      } else {
        s = Error(key->source(),
                  absl::StrCat("unknown key '", ClipUtf8(k, 64),
                               "' (known: name, command, params, kind, "
                               "timeout, result, stdin, cwd, description, "
                               "max_output_bytes, retries)"));
      }
      if (!s.ok()) return s;
    }
    if (!has_command) {
      return Error(table_.source(),
                   "command: missing (the program and its "
                   "arguments, e.g. [\"/bin/echo\", "
                   "\"{text}\"])");
    }
    // What the template says about the whole (placeholders, paths, types).
    absl::StatusOr<CommandTemplate> t = CommandTemplate::Parse(spec_);
    if (!t.ok()) return t.status();
    const std::string& program = spec_.command[0];
    if (access(program.c_str(), X_OK) != 0) {
      return Error(command_where_,
                   absl::StrCat("command[0]: '", ClipUtf8(program, 256),
                                "' is not an executable file"));
    }
    return std::move(spec_);
  }

 private:
  absl::Status Error(const toml::source_region& where, std::string what) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task '", ClipUtf8(spec_.name, 128), "' (", Line(where), "): ", what));
  }

  absl::Status Command(const toml::node& node) {
    command_where_ = node.source();
    const auto* array = node.as_array();
    if (array == nullptr || array->empty()) {
      return Error(node.source(),
                   "command: must be a non-empty array of strings (the "
                   "program's absolute path, then its arguments)");
    }
    for (size_t i = 0; i < array->size(); ++i) {
      const auto* s = array->get(i)->as_string();
      if (s == nullptr) {
        return Error(array->get(i)->source(),
                     absl::StrCat("command[", i, "]: must be a string, not ",
                                  TypeOf(*array->get(i))));
      }
      if (s->get().find('\0') != std::string::npos) {
        return Error(s->source(),
                     absl::StrCat("command[", i, "]: holds a NUL byte"));
      }
      spec_.command.push_back(s->get());
    }
    return absl::OkStatus();
  }

  static bool TypeNamed(std::string_view name, ParamType* type) {
    for (ParamType t : {ParamType::kString, ParamType::kInt, ParamType::kNumber,
                        ParamType::kBool, ParamType::kList, ParamType::kObject,
                        ParamType::kAny}) {
      if (name == ParamTypeName(t)) {
        *type = t;
        return true;
      }
    }
    return false;
  }

  absl::Status Params(const toml::node& node) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      return Error(node.source(),
                   "params: must be a table, e.g. { src = \"string\", size = "
                   "\"string = '256x256'\" }");
    }
    for (const auto& [key, value] : InFileOrder(*table)) {
      TaskParam p;
      p.name = std::string(key->str());
      const std::string field = absl::StrCat("params.", ClipUtf8(p.name, 64));
      std::string type_name;
      const toml::node* default_node = nullptr;
      toml::table default_holder;  // Owns a default parsed from text.
      if (const auto* text = value->as_string()) {
        std::string_view t = text->get();
        const size_t eq = t.find('=');
        type_name = std::string(absl::StripAsciiWhitespace(absl::string_view(
            t.data(), eq == std::string_view::npos ? t.size() : eq)));
        if (eq != std::string_view::npos) {
          const std::string literal(t.substr(eq + 1));
          try {
            default_holder = toml::parse("v = " + literal);
          } catch (const toml::parse_error& e) {
            return Error(
                value->source(),
                absl::StrCat(field, ": default '", ClipUtf8(literal, 128),
                             "' is not a TOML value (quote a "
                             "string: \"string = 'text'\")"));
          }
          default_node = default_holder.get("v");
          if (default_holder.size() != 1) {  // "x = 1\ny = 2": not one value.
            return Error(
                value->source(),
                absl::StrCat(field, ": default '", ClipUtf8(literal, 128),
                             "' is more than one TOML value"));
          }
        }
      } else if (const auto* spec = value->as_table()) {
        for (auto&& [k, v] : *spec) {
          const std::string_view kk = k.str();
          if (kk == "type" && v.is_string()) {
            type_name = v.as_string()->get();
          } else if (kk == "help" && v.is_string()) {
            p.help = v.as_string()->get();
          } else if (kk == "default") {
            default_node = &v;
          } else {
            return Error(k.source(),
                         absl::StrCat(field, ": '", ClipUtf8(kk, 64),
                                      "' is not type (a string), default or "
                                      "help (a string)"));
          }
        }
      } else {
        return Error(value->source(),
                     absl::StrCat(field,
                                  ": must be \"TYPE\", \"TYPE = DEFAULT\" or "
                                  "{ type = ..., default = ..., help = ... }"));
      }
      if (!TypeNamed(type_name, &p.type)) {
        return Error(
            value->source(),
            absl::StrCat(field, ": unknown type '", ClipUtf8(type_name, 64),
                         "' (string, int, number or bool)"));
      }
      if (default_node != nullptr) {
        if (!ToValue(*default_node, &p.default_value)) {
          return Error(value->source(),
                       absl::StrCat(field, ": a default cannot be ",
                                    TypeOf(*default_node)));
        }
        if (absl::Status s = CheckParamType(p.default_value, p.type,
                                            absl::StrCat(field, " default"));
            !s.ok()) {
          return Error(value->source(), std::string(s.message()));
        }
        p.required = false;
      } else if (optional_seen_) {
        return Error(value->source(),
                     absl::StrCat(field,
                                  ": a required parameter cannot follow one "
                                  "with a default (positional arguments "
                                  "bind in order)"));
      }
      optional_seen_ = optional_seen_ || !p.required;
      spec_.params.push_back(std::move(p));
    }
    return absl::OkStatus();
  }

  absl::Status Text(const std::string& key, const std::string& value,
                    const toml::source_region& where) {
    if (key == "description") {
      if (!IsValidUtf8(value)) return Error(where, "description: not UTF-8");
      spec_.description = value;
    } else if (key == "stdin") {
      spec_.stdin_param = value;
    } else if (key == "cwd") {
      spec_.cwd = value;
    } else if (key == "kind") {
      if (value == "cpu") {
        spec_.kind = v1::JOB_KIND_CPU_BOUND;
      } else if (value == "io") {
        spec_.kind = v1::JOB_KIND_IO_BOUND;
      } else {
        return Error(where, absl::StrCat("kind: '", ClipUtf8(value, 64),
                                         "' is not \"cpu\" or \"io\""));
      }
    } else if (key == "timeout") {
      absl::Duration d;
      if (!absl::ParseDuration(value, &d) || d <= absl::ZeroDuration() ||
          d == absl::InfiniteDuration()) {
        return Error(where, absl::StrCat("timeout: '", ClipUtf8(value, 64),
                                         "' is not a positive duration like "
                                         "30s, 5m or 1h"));
      }
      spec_.timeout = d;
    } else if (key == "result") {
      if (value == "text") {
        spec_.result = CommandSpec::Result::kText;
      } else if (value == "json") {
        spec_.result = CommandSpec::Result::kJson;
      } else if (value == "bytes") {
        spec_.result = CommandSpec::Result::kBytes;
      } else {
        return Error(where, absl::StrCat("result: '", ClipUtf8(value, 64),
                                         "' is not \"text\", \"json\" or "
                                         "\"bytes\""));
      }
    }
    return absl::OkStatus();
  }

  const toml::table& table_;
  CommandSpec spec_;
  toml::source_region command_where_;
  bool optional_seen_ = false;
};

absl::StatusOr<std::vector<CommandSpec>> TaskTables(const toml::node& node,
                                                    const toml::key& key) {
  const auto* array = node.as_array();
  if (array == nullptr || !array->is_array_of_tables()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Line(key.source()),
                     ": task: declare command tasks as [[task]] tables"));
  }
  std::vector<CommandSpec> out;
  for (const toml::node& element : *array) {
    absl::StatusOr<CommandSpec> spec = TaskParser(*element.as_table()).Parse();
    if (!spec.ok()) return spec.status();
    for (const CommandSpec& before : out) {
      if (before.name == spec->name) {
        return absl::InvalidArgumentError(
            absl::StrCat("task '", spec->name, "' (", spec->origin,
                         "): name: already declared at ", before.origin));
      }
    }
    out.push_back(*std::move(spec));
  }
  return out;
}

// The items of `table` for CLI11 (`parents` the tables above it).
void Items(const toml::table& table, const std::vector<std::string>& parents,
           std::vector<CLI::ConfigItem>& out) {
  for (const auto& [key, node] : InFileOrder(table)) {
    CLI::ConfigItem item;
    item.parents = parents;
    item.name = std::string(key->str());
    if (const auto* sub = node->as_table()) {
      std::vector<std::string> below = parents;
      below.push_back(item.name);
      Items(*sub, below, out);
      continue;
    }
    std::string text;
    if (const auto* array = node->as_array()) {
      for (const toml::node& element : *array) {
        if (!ScalarText(element, &text)) {
          throw CLI::ConfigError(absl::StrCat(
              "--config ", Line(element.source()), ": ", item.fullname(),
              ": an array of ", TypeOf(element), "s is no option's value"));
        }
        item.inputs.push_back(text);
      }
    } else if (ScalarText(*node, &text)) {
      item.inputs.push_back(text);
    } else {
      throw CLI::ConfigError(
          absl::StrCat("--config ", Line(node->source()), ": ", item.fullname(),
                       ": ", TypeOf(*node), " is no option's value"));
    }
    out.push_back(std::move(item));
  }
}

}  // namespace

std::vector<CLI::ConfigItem> TomlConfig::from_config(
    std::istream& input) const {
  const std::string text(std::istreambuf_iterator<char>(input), {});
  toml::table root;
  try {
    root = toml::parse(text);
  } catch (const toml::parse_error& e) {
    throw CLI::ConfigError(absl::StrCat("--config ", Line(e.source()), ": ",
                                        std::string(e.description())));
  }
  std::vector<CLI::ConfigItem> items;
  tasks_->clear();
  if (const toml::node* tasks = root.get("task")) {
    const toml::key& key = root.find("task")->first;
    absl::StatusOr<std::vector<CommandSpec>> specs = TaskTables(*tasks, key);
    if (!specs.ok()) {
      throw CLI::ConfigError(
          absl::StrCat("--config: ", specs.status().message()));
    }
    *tasks_ = *std::move(specs);
    root.erase("task");
  }
  schedules_->clear();
  if (root.contains("schedule")) {
    absl::StatusOr<std::vector<schedules::ScheduleRunner::ConfigSchedule>>
        schedules = ParseScheduleTables(text);
    if (!schedules.ok()) {
      throw CLI::ConfigError(
          absl::StrCat("--config: ", schedules.status().message()));
    }
    *schedules_ = *std::move(schedules);
    root.erase("schedule");
  }
  Items(root, {}, items);
  return items;
}

std::string TomlConfig::to_config(const CLI::App*, bool, bool,
                                  std::string) const {
  return "";
}

absl::StatusOr<std::vector<CommandSpec>> ParseCommandTasks(
    std::string_view toml_text) {
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Line(e.source()), ": ", std::string(e.description())));
  }
  const toml::node* tasks = root.get("task");
  if (tasks == nullptr) return std::vector<CommandSpec>();
  return TaskTables(*tasks, root.find("task")->first);
}

}  // namespace jobd
