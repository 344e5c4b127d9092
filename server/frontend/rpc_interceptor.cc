#include "server/frontend/rpc_interceptor.h"

#include <atomic>
#include <string>

#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "jobd/v1/jobd.grpc.pb.h"

namespace jobd {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

class RpcStatsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcStatsInterceptor(RpcStats& stats, int method)
      : stats_(stats), method_(method), start_(absl::Now()) {
    stats_.Started(method_);
  }
  ~RpcStatsInterceptor() override {
    if (!ended_.load(std::memory_order_relaxed)) {
      stats_.Ended(method_, static_cast<int>(grpc::StatusCode::CANCELLED),
                   absl::Now() - start_);
    }
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) final {
    // Only the batch that sends the status has this hook point (once per
    // RPC); a stream's reads and writes may run on other threads meanwhile.
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS) &&
        !ended_.exchange(true, std::memory_order_relaxed)) {
      stats_.Ended(method_,
                   static_cast<int>(methods->GetSendStatus().error_code()),
                   absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  RpcStats& stats_;
  const int method_;
  const absl::Time start_;
  std::atomic<bool> ended_{false};
};

class RpcStatsInterceptorFactoryImpl final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcStatsInterceptorFactoryImpl(RpcStats& stats) : stats_(stats) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      ServerRpcInfo* info) final {
    return new RpcStatsInterceptor(stats_, stats_.IndexOf(info->method()));
  }

 private:
  RpcStats& stats_;
};

}  // namespace

std::vector<RpcStats::Method> JobServiceMethods() {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::JobService::service_full_name());
  std::vector<RpcStats::Method> methods;
  for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* m = service->method(i);
    methods.push_back({"/" + service->full_name() + "/" + m->name(), m->name(),
                       m->client_streaming() || m->server_streaming()});
  }
  return methods;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcStatsInterceptorFactory(RpcStats& stats) {
  return std::make_unique<RpcStatsInterceptorFactoryImpl>(stats);
}

}  // namespace jobd
