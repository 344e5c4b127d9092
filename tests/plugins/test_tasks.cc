// A test plugin: `plugintest.echo` (the built-in echo's work, for tests and
// the benchmark that compares a plugin task with the built-in one) and
// `plugintest.crash` (kills its worker process with SIGSEGV: a plugin task
// that crashes fails only its job).
#include <csignal>

#include "workers/sdk/plugin.h"

namespace {

absl::StatusOr<jobd::TaskOutput> Echo(jobd::TaskContext& ctx) {
  const jobd::TaskArgs& a = ctx.args();
  jobd::TaskOutput out;
  out.payload = a.payload();
  if (a.args().size() == 1) {
    out.value = a.args()[0];
  } else {
    *out.value.mutable_list_value()->mutable_values() = a.args();
  }
  return out;
}

absl::Status Register(jobd::TaskRegistry& registry) {
  absl::Status s =
      registry.Add({.name = "plugintest.echo",
                    .description = "Returns its arguments (a plugin's echo).",
                    .default_kind = jobd::v1::JOB_KIND_IO_BOUND,
                    .variadic = true,
                    .run = Echo});
  if (!s.ok()) return s;
  return registry.Add(
      {.name = "plugintest.crash",
       .description = "Kills its worker process with SIGSEGV.",
       .default_kind = jobd::v1::JOB_KIND_CPU_BOUND,
       .needs_isolation = true,
       .run = [](jobd::TaskContext&) -> absl::StatusOr<jobd::TaskOutput> {
         std::raise(SIGSEGV);
         return absl::InternalError("still alive after SIGSEGV");
       }});
}

}  // namespace

JOBD_PLUGIN(Register)
