// Requests that do not parse get INVALID_ARGUMENT with a reason, never a
// silent OK or a bare UNIMPLEMENTED. gRPC 1.51's callback API answers a
// unary or server-streaming call whose request fails to deserialize
// (truncated bytes, invalid UTF-8 in a string field, nesting deeper than
// protobuf's limit of 100) with UNIMPLEMENTED and no message, and reports a
// streamed message that fails to parse exactly like the client's half-close
// (OnReadDone(false)). So:
//  * ParseErrorInterceptorFactory(): a server interceptor that turns the
//    status of a unary or server-streaming call whose request did not parse
//    into INVALID_ARGUMENT "<method>: the request is not a valid <type>:
//    <reason>";
//  * ParseRequest(): parses a streamed message that the service read raw
//    (Submit reads grpc::ByteBuffers) and says why it did not parse.
// The reason is protobuf's own log line when it wrote one (it names the
// field: "String field 'jobd.v1.JobSpec.task' contains invalid UTF-8
// data"). InstallProtobufLogHandler() sends protobuf's log lines to spdlog
// (a client's bad request at debug level, so that it cannot flood the log)
// and keeps the last one of each thread for these messages.
//
// Thread-safety: everything is thread-safe; InstallProtobufLogHandler must
// be called once, before any thread parses a message.
#ifndef JOBD_SERVER_FRONTEND_REQUEST_ERRORS_H_
#define JOBD_SERVER_FRONTEND_REQUEST_ERRORS_H_

#include <memory>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_interceptor.h"

namespace jobd {

void InstallProtobufLogHandler();

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ParseErrorInterceptorFactory();

// Parses `raw` into `message` (consuming `raw`); InvalidArgument "not a
// valid <type>: <reason>" if it does not parse.
absl::Status ParseRequest(grpc::ByteBuffer& raw,
                          google::protobuf::Message& message);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_REQUEST_ERRORS_H_
