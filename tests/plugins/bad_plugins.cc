// Plugins jobd must refuse, one per BAD_* definition (tests/CMakeLists.txt
// builds this file once for each):
//   BAD_FAILS       its registration returns an error
//   BAD_THROWS      its registration throws
//   BAD_DUP=NAME    it registers a task called NAME (taken: a built-in, or
//                   another plugin's)
//   BAD_ABI         its stamp says SDK 99.<this minor> and another protobuf
//   BAD_NO_ENTRY    a shared object without JOBD_PLUGIN
#include <stdexcept>

#include "workers/sdk/plugin.h"

namespace {

[[maybe_unused]] jobd::TaskDef Harmless(std::string name) {
  return {.name = std::move(name),
          .description = "never runs",
          .run = [](jobd::TaskContext&) -> absl::StatusOr<jobd::TaskOutput> {
            return jobd::TaskOutput{};
          }};
}

[[maybe_unused]] absl::Status Register(jobd::TaskRegistry& registry) {
#if defined(BAD_FAILS)
  if (absl::Status s = registry.Add(Harmless("badplugin.first")); !s.ok()) {
    return s;
  }
  return absl::UnavailableError("the license server is unreachable");
#elif defined(BAD_THROWS)
  throw std::runtime_error("configuration file /etc/badplugin.conf is bad");
#elif defined(BAD_DUP)
  return registry.Add(Harmless(BAD_DUP));
#else
  return registry.Add(Harmless("badplugin.abi"));
#endif
}

}  // namespace

#if defined(BAD_ABI)
// What JOBD_PLUGIN defines, with the stamp of another SDK and protobuf.
constexpr jobd::PluginAbi OtherAbi() {
  jobd::PluginAbi abi = jobd::ThisBuildAbi();
  abi.sdk_major = 99;
  abi.protobuf = 3000000;
  return abi;
}
extern "C" {
__attribute__((
    visibility("default"))) extern const jobd::PluginAbi jobd_plugin_abi;
const jobd::PluginAbi jobd_plugin_abi = OtherAbi();
__attribute__((visibility("default"))) void jobd_plugin_register(
    jobd::TaskRegistry* registry, absl::Status* status) {
  *status = Register(*registry);
}
}
#elif defined(BAD_NO_ENTRY)
extern "C" __attribute__((visibility("default"))) int not_a_plugin() {
  return 1;
}
#else
JOBD_PLUGIN(Register)
#endif
