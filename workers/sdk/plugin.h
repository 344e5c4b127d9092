// Task plugins: what the author of a plugin (a shared object jobd loads at
// start with --plugin or --plugin-dir) includes. A plugin registers its
// tasks, in any of the SDK's forms (task.h, async_task.h), with one entry
// point that JOBD_PLUGIN defines:
//
//   #include "workers/sdk/plugin.h"
//
//   absl::Status RegisterTasks(jobd::TaskRegistry& registry) {
//     return registry.Add({.name = "greet", ...});
//   }
//   JOBD_PLUGIN(RegisterTasks)
//
// Build it against the installed SDK (CMake: find_package(JobdSdk), link
// jobd::plugin_sdk, add_library(... MODULE ...)). The plugin links no copy of
// the SDK: its symbols (the registry, the generated jobd.v1 messages) come
// from the jobd executable that loads it, protobuf and absl from the same
// shared libraries, and Asio's services from jobd's io_contexts.
//
// JOBD_PLUGIN also stamps the plugin with the ABI it was built for
// (PluginAbi: the SDK's version, the compiler's C++ ABI, the libstdc++,
// protobuf, absl and Asio versions, the sizes of the SDK's structs). jobd
// compares it with its own before it calls anything in the plugin and
// refuses a plugin whose stamp differs, naming both.
//
// Thread-safety: the entry point is called once per registry, at start,
// before jobd has more than one thread using it. Ownership: the registry
// owns the TaskDefs; jobd never unloads a plugin, so code and data of the
// plugin the tasks point to live as long as the process.
#ifndef JOBD_WORKERS_SDK_PLUGIN_H_
#define JOBD_WORKERS_SDK_PLUGIN_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "asio/version.hpp"
#include "google/protobuf/stubs/common.h"
#include "workers/sdk/async_task.h"
#include "workers/sdk/task.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// The SDK's version: the major changes when a plugin built for an older SDK
// can no longer run; jobd accepts only its own major.minor.
inline constexpr uint32_t kSdkVersionMajor = 1;
inline constexpr uint32_t kSdkVersionMinor = 3;

// What a plugin was built for. Plain 32-bit fields only, `size` and the SDK
// version first: jobd reads them from a plugin of any version.
struct PluginAbi {
  uint32_t size;  // sizeof(PluginAbi)
  uint32_t sdk_major;
  uint32_t sdk_minor;
  uint32_t gxx_abi;     // __GXX_ABI_VERSION
  uint32_t cxx11_abi;   // _GLIBCXX_USE_CXX11_ABI (std::string's layout)
  uint32_t libstdcxx;   // _GLIBCXX_RELEASE
  uint32_t protobuf;    // GOOGLE_PROTOBUF_VERSION
  uint32_t absl_lts;    // ABSL_LTS_RELEASE_VERSION
  uint32_t asio;        // ASIO_VERSION
  uint32_t asio_flags;  // 1: ASIO_STANDALONE, 2: ASIO_NO_DEPRECATED
  // The SDK's structs as the plugin sees them.
  uint32_t sizeof_task_def;
  uint32_t sizeof_task_param;
  uint32_t sizeof_task_args;
  uint32_t sizeof_task_output;
  uint32_t sizeof_task_context;
  uint32_t sizeof_async_task;
  uint32_t sizeof_async_task_context;
  uint32_t sizeof_registry;
};

// The stamp of the code that includes this header.
constexpr PluginAbi ThisBuildAbi() {
  return PluginAbi{
      .size = sizeof(PluginAbi),
      .sdk_major = kSdkVersionMajor,
      .sdk_minor = kSdkVersionMinor,
#ifdef __GXX_ABI_VERSION
      .gxx_abi = __GXX_ABI_VERSION,
#else
      .gxx_abi = 0,
#endif
#ifdef _GLIBCXX_USE_CXX11_ABI
      .cxx11_abi = _GLIBCXX_USE_CXX11_ABI,
#else
      .cxx11_abi = 0,
#endif
#ifdef _GLIBCXX_RELEASE
      .libstdcxx = _GLIBCXX_RELEASE,
#else
      .libstdcxx = 0,
#endif
      .protobuf = GOOGLE_PROTOBUF_VERSION,
#ifdef ABSL_LTS_RELEASE_VERSION
      .absl_lts = ABSL_LTS_RELEASE_VERSION,
#else
      .absl_lts = 0,
#endif
      .asio = ASIO_VERSION,
      .asio_flags = 0
#ifdef ASIO_STANDALONE
                    | 1u
#endif
#ifdef ASIO_NO_DEPRECATED
                    | 2u
#endif
      ,
      .sizeof_task_def = sizeof(TaskDef),
      .sizeof_task_param = sizeof(TaskParam),
      .sizeof_task_args = sizeof(TaskArgs),
      .sizeof_task_output = sizeof(TaskOutput),
      .sizeof_task_context = sizeof(TaskContext),
      .sizeof_async_task = sizeof(AsyncTask),
      .sizeof_async_task_context = sizeof(AsyncTaskContext),
      .sizeof_registry = sizeof(TaskRegistry),
  };
}

// "SDK 1.0 (g++ ABI 1017, libstdc++ 12, ...)": what `abi` says, for messages.
// `abi` may come from a plugin of another SDK version: only the fields its
// `size` covers are read.
std::string DescribeAbi(const PluginAbi& abi);

// The fields in which `plugin` differs from `host` ("protobuf, sizeof
// TaskDef"), or "" if it matches.
std::string AbiDifferences(const PluginAbi& plugin, const PluginAbi& host);

// The entry point's signature: registers the plugin's tasks into
// `registry`; an error (or an exception) refuses the plugin and jobd does
// not start.
using PluginRegisterFn = absl::Status (*)(TaskRegistry& registry);

}  // namespace jobd

// The symbols jobd looks up in a plugin (C names: no mangling).
#define JOBD_PLUGIN_ABI_SYMBOL "jobd_plugin_abi"
#define JOBD_PLUGIN_REGISTER_SYMBOL "jobd_plugin_register"

// Defines the plugin's stamp and its entry point, which calls
// `register_fn(jobd::TaskRegistry&) -> absl::Status`. Once per plugin, at
// namespace scope.
#define JOBD_PLUGIN(register_fn)                                              \
  extern "C" {                                                                \
  __attribute__((                                                             \
      visibility("default"))) extern const ::jobd::PluginAbi jobd_plugin_abi; \
  const ::jobd::PluginAbi jobd_plugin_abi = ::jobd::ThisBuildAbi();           \
  __attribute__((visibility("default"))) void jobd_plugin_register(           \
      ::jobd::TaskRegistry* registry, ::absl::Status* status);                \
  void jobd_plugin_register(::jobd::TaskRegistry* registry,                   \
                            ::absl::Status* status) {                         \
    *status = (register_fn)(*registry);                                       \
  }                                                                           \
  }

#endif  // JOBD_WORKERS_SDK_PLUGIN_H_
