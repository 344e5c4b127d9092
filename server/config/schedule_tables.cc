#include "server/config/schedule_tables.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/schedules/schedule.h"
#include "toml++/toml.h"

namespace jobd {
namespace {

using ConfigSchedule = schedules::ScheduleRunner::ConfigSchedule;

absl::Status Error(const std::string& field, const toml::node& node,
                   std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " (line ", node.source().begin.line,
                   "): ", absl::string_view(what.data(), what.size())));
}

absl::StatusOr<std::string> String(const std::string& field,
                                   const toml::node& node) {
  const auto* s = node.as_string();
  if (s == nullptr) return Error(field, node, "must be a string");
  return s->get();
}

// Any TOML value (no dates) as a JSON-like value.
absl::Status ToValue(const std::string& field, const toml::node& node,
                     google::protobuf::Value* out, int depth = 0) {
  if (depth > 32) return Error(field, node, "nested too deep");
  if (const auto* s = node.as_string()) {
    out->set_string_value(s->get());
  } else if (const auto* i = node.as_integer()) {
    out->set_number_value(static_cast<double>(i->get()));
  } else if (const auto* f = node.as_floating_point()) {
    out->set_number_value(f->get());
  } else if (const auto* b = node.as_boolean()) {
    out->set_bool_value(b->get());
  } else if (const auto* a = node.as_array()) {
    auto* list = out->mutable_list_value();
    size_t n = 0;
    for (const toml::node& e : *a) {
      if (absl::Status s = ToValue(absl::StrCat(field, "[", n++, "]"), e,
                                   list->add_values(), depth + 1);
          !s.ok()) {
        return s;
      }
    }
  } else if (const auto* t = node.as_table()) {
    auto* fields = out->mutable_struct_value()->mutable_fields();
    for (auto&& [k, v] : *t) {
      const std::string key(k.str());
      if (absl::Status s = ToValue(absl::StrCat(field, ".", key), v,
                                   &(*fields)[key], depth + 1);
          !s.ok()) {
        return s;
      }
    }
  } else {
    return Error(field, node, "a date or time is no job argument");
  }
  return absl::OkStatus();
}

absl::Status JobSpecOf(const std::string& field, const toml::node& node,
                       v1::JobSpec* job) {
  const auto* table = node.as_table();
  if (table == nullptr) {
    return Error(field, node, "must be a table (a job spec: task, args, ...)");
  }
  job->set_kind(v1::JOB_KIND_IO_BOUND);
  for (auto&& [k, v] : *table) {
    const std::string key(k.str());
    const std::string f = absl::StrCat(field, ".", key);
    if (key == "task") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      job->set_task(*s);
    } else if (key == "args") {
      if (!v.is_array()) return Error(f, v, "must be an array");
      google::protobuf::Value list;
      if (absl::Status s = ToValue(f, v, &list); !s.ok()) return s;
      *job->mutable_args() = list.list_value().values();
    } else if (key == "kwargs") {
      if (!v.is_table()) return Error(f, v, "must be a table");
      google::protobuf::Value fields;
      if (absl::Status s = ToValue(f, v, &fields); !s.ok()) return s;
      *job->mutable_kwargs() = fields.struct_value();
    } else if (key == "labels") {
      const auto* labels = v.as_table();
      if (labels == nullptr) return Error(f, v, "must be a table of strings");
      for (auto&& [lk, lv] : *labels) {
        absl::StatusOr<std::string> s =
            String(absl::StrCat(f, ".", std::string(lk.str())), lv);
        if (!s.ok()) return s.status();
        (*job->mutable_labels())[std::string(lk.str())] = *s;
      }
    } else if (key == "kind") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      if (*s == "cpu") {
        job->set_kind(v1::JOB_KIND_CPU_BOUND);
      } else if (*s == "io") {
        job->set_kind(v1::JOB_KIND_IO_BOUND);
      } else if (*s == "auto") {
        job->set_kind(v1::JOB_KIND_AUTO);
      } else {
        return Error(f, v, absl::StrCat("'", *s, "' is not cpu, io or auto"));
      }
    } else if (key == "executor") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      if (*s == "process") {
        job->set_executor(v1::EXECUTOR_PROCESS);
      } else if (*s == "thread") {
        job->set_executor(v1::EXECUTOR_THREAD);
      } else if (*s == "reactor") {
        job->set_executor(v1::EXECUTOR_REACTOR);
      } else {
        return Error(
            f, v, absl::StrCat("'", *s, "' is not process, thread or reactor"));
      }
    } else if (key == "priority") {
      const auto* i = v.as_integer();
      if (i == nullptr || i->get() < INT32_MIN || i->get() > INT32_MAX) {
        return Error(f, v, "must be a 32-bit integer");
      }
      job->set_priority(static_cast<int32_t>(i->get()));
    } else if (key == "timeout") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      absl::Duration d;
      if (!absl::ParseDuration(*s, &d) || d <= absl::ZeroDuration() ||
          d == absl::InfiniteDuration()) {
        return Error(
            f, v,
            absl::StrCat("'", *s, "' is not a positive duration (e.g. 5m)"));
      }
      job->mutable_timeout()->set_seconds(absl::ToInt64Seconds(d));
      job->mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(
              d - absl::Seconds(absl::ToInt64Seconds(d)))));
    } else if (key == "delivery") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      if (*s == "at-least-once") {
        job->set_delivery(v1::DELIVERY_AT_LEAST_ONCE);
      } else if (*s == "at-most-once") {
        job->set_delivery(v1::DELIVERY_AT_MOST_ONCE);
      } else {
        return Error(
            f, v,
            absl::StrCat("'", *s, "' is not at-most-once or at-least-once"));
      }
    } else if (key == "payload") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      job->set_payload(*s);
    } else {
      return Error(f, v,
                   "unknown key (task, args, kwargs, labels, kind, executor, "
                   "priority, timeout, delivery, payload)");
    }
  }
  if (job->task().empty()) {
    return Error(absl::StrCat(field, ".task"), node, "missing");
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigSchedule> ScheduleOf(const std::string& field,
                                          const toml::table& table) {
  ConfigSchedule c;
  bool has_every = false;
  for (auto&& [k, v] : table) {
    const std::string key(k.str());
    const std::string f = absl::StrCat(field, ".", key);
    if (key == "id") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      c.id = *s;
      if (absl::Status s = schedules::ValidateScheduleId(c.id, f); !s.ok()) {
        return s;
      }
    } else if (key == "cron") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      c.spec.set_cron(*s);
    } else if (key == "every") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      absl::Duration d;
      if (!absl::ParseDuration(*s, &d) || d < absl::Seconds(1) ||
          d == absl::InfiniteDuration() ||
          d != absl::Seconds(absl::ToInt64Seconds(d))) {
        return Error(f, v,
                     absl::StrCat("'", *s,
                                  "' is not a whole number of seconds, at "
                                  "least 1s (e.g. 30s, 10m, 1h)"));
      }
      c.spec.mutable_interval()->set_seconds(absl::ToInt64Seconds(d));
      has_every = true;
    } else if (key == "time_zone") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      c.spec.set_time_zone(*s);
    } else if (key == "overlap") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      if (*s == "skip") {
        c.spec.set_overlap(v1::OVERLAP_POLICY_SKIP);
      } else if (*s == "queue") {
        c.spec.set_overlap(v1::OVERLAP_POLICY_QUEUE);
      } else if (*s == "cancel") {
        c.spec.set_overlap(v1::OVERLAP_POLICY_CANCEL_PREVIOUS);
      } else {
        return Error(f, v,
                     absl::StrCat("'", *s, "' is not skip, queue or cancel"));
      }
    } else if (key == "catch_up") {
      absl::StatusOr<std::string> s = String(f, v);
      if (!s.ok()) return s.status();
      if (*s == "skip") {
        c.spec.set_catch_up(v1::CATCH_UP_POLICY_SKIP_MISSED);
      } else if (*s == "once") {
        c.spec.set_catch_up(v1::CATCH_UP_POLICY_RUN_ONCE);
      } else {
        return Error(f, v, absl::StrCat("'", *s, "' is not skip or once"));
      }
    } else if (key == "paused") {
      const auto* b = v.as_boolean();
      if (b == nullptr) return Error(f, v, "must be true or false");
      c.paused = b->get();
    } else if (key == "job") {
      if (absl::Status s = JobSpecOf(f, v, c.spec.mutable_job()); !s.ok()) {
        return s;
      }
    } else {
      return Error(f, v,
                   "unknown key (id, cron, every, time_zone, overlap, "
                   "catch_up, paused, job)");
    }
  }
  (void)has_every;
  if (c.id.empty()) {
    return Error(absl::StrCat(field, ".id"), table,
                 "missing (every [[schedule]] needs one)");
  }
  if (!c.spec.has_job()) {
    return Error(absl::StrCat(field, ".job"), table,
                 "missing: the job each slot runs");
  }
  absl::StatusOr<schedules::Timing> timing =
      schedules::Timing::Parse(c.spec, field);
  if (!timing.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        timing.status().message(), " (line ", table.source().begin.line, ")"));
  }
  return c;
}

}  // namespace

absl::StatusOr<std::vector<ConfigSchedule>> ParseScheduleTables(
    std::string_view toml_text) {
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "line ", e.source().begin.line, ": ", std::string(e.description())));
  }
  std::vector<ConfigSchedule> out;
  const toml::node* node = root.get("schedule");
  if (node == nullptr) return out;
  const auto* array = node->as_array();
  if (array == nullptr || !array->is_array_of_tables()) {
    return Error("schedule", *node, "declare schedules as [[schedule]] tables");
  }
  std::set<std::string> ids;
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string field = absl::StrCat("schedule[", i, "]");
    absl::StatusOr<ConfigSchedule> c =
        ScheduleOf(field, *(*array)[i].as_table());
    if (!c.ok()) return c.status();
    if (!ids.insert(c->id).second) {
      return Error(absl::StrCat(field, ".id"), *(*array)[i].as_table(),
                   absl::StrCat("'", c->id, "' is declared twice"));
    }
    out.push_back(*std::move(c));
  }
  return out;
}

}  // namespace jobd
