#include "workers/sdk/plugin.h"

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace jobd {
namespace {

// Whether `abi` (of `abi.size` bytes) has the field at `offset`.
bool Has(const PluginAbi& abi, size_t offset) {
  return abi.size >= offset + sizeof(uint32_t);
}

// 3021012 -> "3.21.12".
std::string Dotted(uint32_t v) {
  return absl::StrCat(v / 1000000, ".", v / 1000 % 1000, ".", v % 1000);
}

// 102201 -> "1.22.1".
std::string AsioVersion(uint32_t v) {
  return absl::StrCat(v / 100000, ".", v / 100 % 1000, ".", v % 100);
}

struct Field {
  const char* name;
  size_t offset;
  uint32_t PluginAbi::*member;
};

constexpr Field kFields[] = {
    {"size of PluginAbi", offsetof(PluginAbi, size), &PluginAbi::size},
    {"SDK major version", offsetof(PluginAbi, sdk_major),
     &PluginAbi::sdk_major},
    {"SDK minor version", offsetof(PluginAbi, sdk_minor),
     &PluginAbi::sdk_minor},
    {"C++ ABI", offsetof(PluginAbi, gxx_abi), &PluginAbi::gxx_abi},
    {"libstdc++ string ABI", offsetof(PluginAbi, cxx11_abi),
     &PluginAbi::cxx11_abi},
    {"libstdc++", offsetof(PluginAbi, libstdcxx), &PluginAbi::libstdcxx},
    {"protobuf", offsetof(PluginAbi, protobuf), &PluginAbi::protobuf},
    {"absl LTS", offsetof(PluginAbi, absl_lts), &PluginAbi::absl_lts},
    {"Asio", offsetof(PluginAbi, asio), &PluginAbi::asio},
    {"Asio options", offsetof(PluginAbi, asio_flags), &PluginAbi::asio_flags},
    {"sizeof TaskDef", offsetof(PluginAbi, sizeof_task_def),
     &PluginAbi::sizeof_task_def},
    {"sizeof TaskParam", offsetof(PluginAbi, sizeof_task_param),
     &PluginAbi::sizeof_task_param},
    {"sizeof TaskArgs", offsetof(PluginAbi, sizeof_task_args),
     &PluginAbi::sizeof_task_args},
    {"sizeof TaskOutput", offsetof(PluginAbi, sizeof_task_output),
     &PluginAbi::sizeof_task_output},
    {"sizeof TaskContext", offsetof(PluginAbi, sizeof_task_context),
     &PluginAbi::sizeof_task_context},
    {"sizeof AsyncTask", offsetof(PluginAbi, sizeof_async_task),
     &PluginAbi::sizeof_async_task},
    {"sizeof AsyncTaskContext", offsetof(PluginAbi, sizeof_async_task_context),
     &PluginAbi::sizeof_async_task_context},
    {"sizeof TaskRegistry", offsetof(PluginAbi, sizeof_registry),
     &PluginAbi::sizeof_registry},
};

}  // namespace

std::string DescribeAbi(const PluginAbi& abi) {
  std::string out = absl::StrCat("SDK ", abi.sdk_major, ".", abi.sdk_minor);
  if (!Has(abi, offsetof(PluginAbi, sizeof_registry))) {
    return absl::StrCat(out, " (a stamp of ", abi.size, " bytes)");
  }
  absl::StrAppend(&out, " (C++ ABI ", abi.gxx_abi, ", libstdc++ ",
                  abi.libstdcxx, abi.cxx11_abi ? "" : " old string ABI",
                  ", protobuf ", Dotted(abi.protobuf), ", absl ", abi.absl_lts,
                  ", Asio ", AsioVersion(abi.asio), " options ", abi.asio_flags,
                  ", TaskDef ", abi.sizeof_task_def, " bytes)");
  return out;
}

std::string AbiDifferences(const PluginAbi& plugin, const PluginAbi& host) {
  std::vector<std::string> differ;
  for (const Field& f : kFields) {
    if (!Has(plugin, f.offset)) break;
    if (plugin.*f.member != host.*f.member) differ.push_back(f.name);
  }
  if (plugin.size < host.size && differ.empty()) {
    differ.push_back("size of PluginAbi");
  }
  return absl::StrJoin(differ, ", ");
}

}  // namespace jobd
