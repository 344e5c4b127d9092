// The fixture shared by the integration tests of the coroutine reactor's
// tasks (reactor_test.cc: sleep and http.get; exec_test.cc: exec): a real
// daemon per test, jobs run one at a time or held RUNNING on a stream of
// their own, and shorthands for keyword arguments and result fields.
//
// Thread-safety: a fixture belongs to its test's thread. Ownership: it owns
// the daemon it starts (stopped, by pid, when the test ends).
#ifndef JOBD_TESTS_INTEGRATION_REACTOR_FIXTURE_H_
#define JOBD_TESTS_INTEGRATION_REACTOR_FIXTURE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"
#include "tests/integration/daemon_harness.h"

namespace jobd::testing {

// A spec of `task` with keyword arguments.
inline v1::JobSpec KwSpec(
    const std::string& task,
    std::map<std::string, google::protobuf::Value> kwargs) {
  v1::JobSpec s;
  s.set_task(task);
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  for (auto& [k, v] : kwargs) (*s.mutable_kwargs()->mutable_fields())[k] = v;
  return s;
}

inline google::protobuf::Value Str(const std::string& s) {
  google::protobuf::Value v;
  v.set_string_value(s);
  return v;
}
inline google::protobuf::Value Num(double d) {
  google::protobuf::Value v;
  v.set_number_value(d);
  return v;
}
inline google::protobuf::Value Bool(bool b) {
  google::protobuf::Value v;
  v.set_bool_value(b);
  return v;
}
inline google::protobuf::Value List(const std::vector<std::string>& items) {
  google::protobuf::Value v;
  for (const std::string& i : items) {
    v.mutable_list_value()->add_values()->set_string_value(i);
  }
  return v;
}

inline const google::protobuf::Value& Field(const v1::JobEvent& e,
                                            const std::string& name) {
  return e.result().value().struct_value().fields().at(name);
}

class ReactorTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> args = {},
                   std::vector<std::string> env = {}) {
    auto d = Daemon::Start(std::move(args), std::move(env));
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    stub_ = daemon_->NewStub();
  }

  v1::JobEvent RunOne(const v1::JobSpec& spec) {
    return testing::RunOne(*stub_, spec);
  }

  v1::GetStatsResponse Stats() { return testing::GetStats(*stub_); }

  uint32_t ReactorBusy() {
    const v1::GetStatsResponse stats = Stats();
    for (const v1::ExecutorStats& e : stats.executors()) {
      if (e.executor() == v1::EXECUTOR_REACTOR) return e.busy();
    }
    return ~0u;
  }

  // A job submitted on its own stream; Started() returns once it runs.
  class Running {
   public:
    Running(v1::JobService::Stub& stub, const v1::JobSpec& spec) {
      Deadline(ctx_, absl::Seconds(60));
      stream_ = stub.Submit(&ctx_);
      v1::SubmitRequest req;
      auto* item = req.add_items();
      item->set_client_tag(1);
      *item->mutable_spec() = spec;
      stream_->Write(req);
    }
    ~Running() {
      ctx_.TryCancel();
      stream_->Finish();
    }
    // The job's id once it is RUNNING, or "" if it ended or was rejected.
    std::string Started() {
      v1::SubmitResponse resp;
      while (stream_->Read(&resp)) {
        for (const v1::JobEvent& e : resp.events()) {
          if (e.type() == v1::EVENT_TYPE_STARTED) return e.job_id();
          if (v1::EndsSubmitItem(e.type())) return "";
        }
      }
      return "";
    }
    // Its terminal event.
    v1::JobEvent End() {
      v1::SubmitResponse resp;
      while (stream_->Read(&resp)) {
        for (const v1::JobEvent& e : resp.events()) {
          if (v1::EndsSubmitItem(e.type())) return e;
        }
      }
      return {};
    }

   private:
    grpc::ClientContext ctx_;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
        stream_;
  };

  void CancelJob(const std::string& id) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::CancelJobResponse resp;
    ASSERT_TRUE(stub_->CancelJob(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.state(), v1::JOB_STATE_CANCELLED);
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_REACTOR_FIXTURE_H_
