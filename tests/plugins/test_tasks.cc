// A test plugin: `plugintest.echo` (the built-in echo's work, for tests and
// the benchmark that compares a plugin task with the built-in one),
// `plugintest.crash` (kills its worker process with SIGSEGV: a plugin task
// that crashes fails only its job) and `plugintest.on_loop` (a coroutine
// that answers whether Asio, as the plugin sees it, knows it runs on the
// reactor's io_context: true only if the plugin reads the thread-local
// call stack jobd's loop set, not a copy of its own).
#include <csignal>

#include "asio/steady_timer.hpp"
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

asio::awaitable<absl::StatusOr<jobd::TaskOutput>> OnLoop(
    jobd::AsyncTaskContext& ctx) {
  asio::steady_timer timer(ctx.io(), std::chrono::milliseconds(1));
  co_await timer.async_wait(asio::use_awaitable);
  jobd::TaskOutput out;
  out.value.set_bool_value(ctx.io().get_executor().running_in_this_thread());
  co_return out;
}

absl::Status Register(jobd::TaskRegistry& registry) {
  absl::Status s = registry.Add(
      {.name = "plugintest.on_loop",
       .description = "True if Asio in the plugin sees the reactor's loop.",
       .async = jobd::MakeAsyncTask(OnLoop)});
  if (!s.ok()) return s;
  s = registry.Add({.name = "plugintest.echo",
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
