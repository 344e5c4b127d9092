#include "server/frontend/request_errors.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/impl/codegen/proto_buffer_reader.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

// Protobuf's last log line on this thread (empty once taken).
thread_local std::string last_protobuf_message;

std::string TakeProtobufMessage() {
  std::string m = std::move(last_protobuf_message);
  last_protobuf_message.clear();
  return m;
}

// Protobuf writes "String field 'x.y' contains invalid UTF-8 data when
// parsing a protocol buffer. Use the 'bytes' type if you intend to send raw
// bytes. ": the first clause is the reason.
std::string Reason(std::string logged) {
  if (const size_t at = logged.find(" when parsing"); at != std::string::npos) {
    logged.resize(at);
  }
  while (!logged.empty() && (logged.back() == ' ' || logged.back() == '.')) {
    logged.pop_back();
  }
  if (logged.empty()) {
    return "malformed protobuf (truncated, a wrong wire type, or nested "
           "deeper than 100 levels)";
  }
  return logged;
}

void LogHandler(google::protobuf::LogLevel level, const char* file, int line,
                const std::string& message) {
  last_protobuf_message = message;
  // A client's string with invalid UTF-8: its caller hears of it.
  const bool parsing = absl::StrContains(message, "when parsing");
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      spdlog::debug("protobuf: {}", message);
      break;
    case google::protobuf::LOGLEVEL_WARNING:
      spdlog::log(parsing ? spdlog::level::debug : spdlog::level::warn,
                  "protobuf: {}", message);
      break;
    case google::protobuf::LOGLEVEL_ERROR:
      spdlog::log(parsing ? spdlog::level::debug : spdlog::level::err,
                  "protobuf: {}", message);
      break;
    default:  // FATAL: protobuf aborts after this.
      spdlog::critical("protobuf {}:{}: {}", file, line, message);
      break;
  }
}

// "/jobd.v1.JobService/GetJob" -> "jobd.v1.GetJobRequest", if the method's
// service is in the generated descriptor pool.
std::string RequestType(std::string_view method) {
  std::string name(method.starts_with('/') ? method.substr(1) : method);
  absl::StrReplaceAll({{"/", "."}}, &name);
  const google::protobuf::MethodDescriptor* m =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          name);
  return m != nullptr ? m->input_type()->full_name() : "request message";
}

class ParseErrorInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(ServerRpcInfo* info) : info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) final {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // Deserialization ran just before, on this thread.
      std::string logged = TakeProtobufMessage();
      if (methods->GetRecvMessage() == nullptr) {
        unparsed_ = true;
        reason_ = Reason(std::move(logged));
      }
    }
    if (unparsed_ && methods->QueryInterceptionHookPoint(
                         InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::string method = info_->method();
      methods->ModifySendStatus(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       fmt::format("{}: the request is not a valid {}: {}",
                                   method.substr(method.rfind('/') + 1),
                                   RequestType(method), reason_)));
    }
    methods->Proceed();
  }

 private:
  ServerRpcInfo* const info_;
  bool unparsed_ = false;
  std::string reason_;
};

class ParseErrorInterceptorFactoryImpl final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      ServerRpcInfo* info) final {
    // Streamed reads (client and bidi streaming) end with a null message at
    // the half-close too: those services parse raw messages themselves.
    if (info->type() != ServerRpcInfo::Type::UNARY &&
        info->type() != ServerRpcInfo::Type::SERVER_STREAMING) {
      return nullptr;
    }
    return new ParseErrorInterceptor(info);
  }
};

}  // namespace

void InstallProtobufLogHandler() {
  google::protobuf::SetLogHandler(&LogHandler);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ParseErrorInterceptorFactory() {
  return std::make_unique<ParseErrorInterceptorFactoryImpl>();
}

absl::Status ParseRequest(grpc::ByteBuffer& raw,
                          google::protobuf::Message& message) {
  last_protobuf_message.clear();
  bool parsed = false;
  {
    grpc::ProtoBufferReader reader(&raw);
    parsed = reader.status().ok() && message.ParseFromZeroCopyStream(&reader);
  }
  raw.Clear();
  if (parsed) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("not a valid {}: {}", message.GetDescriptor()->full_name(),
                  Reason(TakeProtobufMessage())));
}

}  // namespace jobd
