#include "workers/tasks/io_tasks.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio/use_awaitable.hpp"
#include "workers/executor/executor.h"
#include "workers/reactor/http_client.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

using google::protobuf::Value;

TaskOutput Number(int64_t n) {
  TaskOutput out;
  out.value.set_number_value(static_cast<double>(n));
  return out;
}

// A URL as result text: unchanged if valid UTF-8, else with every byte
// outside printable ASCII as %XX (as a browser would send it).
std::string UrlText(std::string_view url) {
  if (IsValidUtf8(url)) return std::string(url);
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : url) {
    const auto c = static_cast<unsigned char>(ch);
    if (c > 0x20 && c < 0x7F) {
      out.push_back(ch);
    } else {
      out.append({'%', kHex[c >> 4], kHex[c & 0xF]});
    }
  }
  return out;
}

absl::Status ValidateHttpGet(size_t max_message_bytes, const TaskArgs& args) {
  const std::string& url = args.String("url");
  if (!absl::StartsWithIgnoreCase(url, "http://") &&
      !absl::StartsWithIgnoreCase(url, "https://")) {
    return absl::InvalidArgumentError(
        "url: only http:// and https:// URLs can be fetched");
  }
  const int64_t max_bytes = args.Int("max_bytes");
  if (max_bytes < 0 || max_bytes > kMaxIoTaskBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_bytes: must be between 0 and ", kMaxIoTaskBytes, " (8 MiB)"));
  }
  // The body (payload), headers and URL (percent-encoded at worst) in one
  // message with the spec.
  const size_t room = ResultRoom(max_message_bytes, args);
  const size_t overhead = 6 * kMaxResponseHeaderBytes;
  const int64_t fits =
      static_cast<int64_t>(room > overhead ? room - overhead : 0);
  if (max_bytes > fits) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_bytes: ", max_bytes,
                     " does not fit one message with the "
                     "response's headers and the spec: at most ",
                     fits,
                     " with this "
                     "daemon's --max-message-bytes (",
                     max_message_bytes, ")"));
  }
  if (args.Int("timeout_ms") <= 0) {
    return absl::InvalidArgumentError("timeout_ms: must be > 0");
  }
  if (const Value* h = args.Find("headers")) {
    for (const auto& [name, value] : h->struct_value().fields()) {
      if (value.kind_case() != Value::kStringValue || name.empty() ||
          name.find_first_of(":\r\n") != std::string::npos ||
          value.string_value().find_first_of("\r\n") != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("headers.", name,
                         ": a header is a name and a string value "
                         "without line breaks"));
      }
    }
  }
  return absl::OkStatus();
}

asio::awaitable<absl::StatusOr<TaskOutput>> HttpGet(
    AsyncTaskContext& ctx, std::shared_ptr<const HttpPolicy> http) {
  const TaskArgs& a = ctx.args();
  HttpRequest request;
  if (http != nullptr) request.addresses = http->Get();
  request.url = a.String("url");
  request.max_body_bytes = static_cast<uint64_t>(a.Int("max_bytes"));
  request.follow_redirects = a.Bool("follow_redirects");
  // The job's own timeout needs no cap here: it cancels the transfer.
  request.timeout = absl::Milliseconds(a.Int("timeout_ms"));
  request.connect_timeout = std::min(request.connect_timeout, request.timeout);
  if (const Value* h = a.Find("headers")) {
    for (const auto& [name, value] : h->struct_value().fields()) {
      request.headers.emplace_back(name, value.string_value());
    }
  }
  absl::StatusOr<HttpResponse> response = co_await ctx.http().Get(request);
  if (!response.ok()) co_return response.status();
  if (a.Bool("fail_on_error_status") && response->status >= 400) {
    co_return absl::FailedPreconditionError(
        absl::StrCat("GET ", request.url, ": HTTP ", response->status));
  }
  TaskOutput out;
  auto& fields = *out.value.mutable_struct_value()->mutable_fields();
  fields["status"].set_number_value(response->status);
  // Result strings must be UTF-8: a header whose name or value is not is
  // percent-encoded (both), and its encoded name listed in escaped_headers.
  auto& headers = *fields["headers"].mutable_struct_value()->mutable_fields();
  Value escaped;
  escaped.mutable_list_value();
  for (auto& [name, value] : response->headers) {
    if (IsValidUtf8(name) && IsValidUtf8(value)) {
      headers[name].set_string_value(std::move(value));
    } else {
      const std::string encoded = PercentEncode(name);
      headers[encoded].set_string_value(PercentEncode(value));
      escaped.mutable_list_value()->add_values()->set_string_value(encoded);
    }
  }
  fields["escaped_headers"] = std::move(escaped);
  fields["body_bytes"].set_number_value(
      static_cast<double>(response->body.size()));
  fields["url"].set_string_value(UrlText(response->effective_url));
  fields["elapsed_ms"].set_number_value(
      absl::ToDoubleMilliseconds(response->elapsed));
  if (a.Bool("body")) out.payload = std::move(response->body);
  co_return out;
}

}  // namespace

size_t ResultRoom(size_t max_message_bytes, const TaskArgs& args) {
  const size_t spec = args.spec().ByteSizeLong() + 256;  // + its task name.
  const size_t used = spec + kMessageEnvelopeBytes;
  return max_message_bytes > used ? max_message_bytes - used : 0;
}

// A timer task (no coroutine): the unit of the reactor's mass-concurrency
// figures (bench/README.md).
std::shared_ptr<const AsyncTask> AsyncSleep() {
  return MakeTimerTask(
      {.delay = [](const TaskArgs& args) -> absl::StatusOr<absl::Duration> {
         return absl::Milliseconds(args.Int("ms"));
       },
       .then = [](AsyncTaskContext& ctx) -> absl::StatusOr<TaskOutput> {
         return Number(ctx.args().Int("ms"));
       }});
}

TaskDef HttpGetTask(size_t max_message_bytes,
                    std::shared_ptr<const HttpPolicy> http) {
  return {
      .name = "http.get",
      .description =
          "Fetches an http:// or https:// URL (GET, redirects followed), "
          "from public addresses only unless the daemon allows more "
          "(--http-allow). "
          "Returns {status, headers, escaped_headers, body_bytes, url, "
          "elapsed_ms}; the body is the result payload. A header that is not "
          "UTF-8 comes percent-encoded (name and value), its name listed in "
          "escaped_headers. A transport error, a timeout or a body "
          "over max_bytes fails the job; an HTTP error status does only with "
          "fail_on_error_status. Runs on the reactor only.",
      .default_kind = v1::JOB_KIND_IO_BOUND,
      .params = {Param("url", ParamType::kString, "http:// or https:// URL"),
                 OptionalParam("timeout_ms", ParamType::kInt,
                               NumberValue(30000),
                               "whole-request timeout (the job's timeout, "
                               "if shorter, cancels it first)"),
                 OptionalParam("max_bytes", ParamType::kInt,
                               NumberValue(1 << 20),
                               "largest body accepted, at most 8 MiB"),
                 OptionalParam("body", ParamType::kBool, BoolValue(true),
                               "return the body as the result payload"),
                 OptionalParam("headers", ParamType::kObject, Value(),
                               "request headers: {name: value}"),
                 OptionalParam("follow_redirects", ParamType::kBool,
                               BoolValue(true), "follow up to 5 redirects"),
                 OptionalParam("fail_on_error_status", ParamType::kBool,
                               BoolValue(false),
                               "fail the job on an HTTP status >= 400")},
      .async = MakeAsyncTask(
          [http](AsyncTaskContext& ctx) { return HttpGet(ctx, http); }),
      .validate =
          [max_message_bytes](const TaskArgs& args) {
            return ValidateHttpGet(max_message_bytes, args);
          },
  };
}

}  // namespace jobd
