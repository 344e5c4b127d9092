// libFuzzer target: the job-spec validator (server/spec_validator.h) on
// every JobSpec the bytes parse as, against the built-in tasks (testing
// ones included): it must accept or reject with a status, never crash.
#include <cstddef>
#include <cstdint>

#include "server/frontend/spec_validator.h"
#include "workers/tasks/builtin_tasks.h"

namespace {

const jobd::TaskRegistry& Registry() {
  static const jobd::TaskRegistry* registry = [] {
    auto* r = new jobd::TaskRegistry();
    (void)jobd::RegisterBuiltinTasks(*r, {.testing_tasks = true});
    return r;
  }();
  return *registry;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  jobd::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  const jobd::SpecLimits limits{
      .max_payload_bytes = 4096, .max_value_depth = 8, .max_args_bytes = 4096};
  (void)jobd::ValidateSpec(std::move(spec), Registry(), limits);
  return 0;
}
