#include "workers/sdk/async_task.h"

#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"

namespace jobd {

asio::awaitable<bool> AsyncTaskContext::SleepFor(absl::Duration d) {
  if (cancelled()) co_return false;
  asio::steady_timer timer(io(), absl::ToChronoNanoseconds(d));
  asio::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && !cancelled();
}

}  // namespace jobd
