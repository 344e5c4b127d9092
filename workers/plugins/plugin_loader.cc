#include "workers/plugins/plugin_loader.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/plugin.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

using RegisterEntry = void (*)(TaskRegistry*, absl::Status*);

absl::Status Refused(const std::string& path, const std::string& reason) {
  return absl::FailedPreconditionError(
      absl::StrCat("plugin ", ClipUtf8(path, 4096), ": ", reason));
}

std::string DlError() {
  const char* e = dlerror();
  return e != nullptr ? ClipUtf8(e, 4096) : std::string("unknown error");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> LoadPlugin(const std::string& path,
                                                    TaskRegistry& registry) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Refused(path, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Refused(path, "not a regular file");
  // A path with a slash: dlopen must not search LD_LIBRARY_PATH for it.
  const std::string open_path =
      path.find('/') == std::string::npos ? "./" + path : path;
  dlerror();
  void* handle = dlopen(open_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return Refused(path, absl::StrCat("cannot load it: ", DlError()));
  }
  // From here on the plugin stays loaded, whatever happens (see the header).
  const auto* abi =
      static_cast<const PluginAbi*>(dlsym(handle, JOBD_PLUGIN_ABI_SYMBOL));
  auto* entry = reinterpret_cast<RegisterEntry>(
      dlsym(handle, JOBD_PLUGIN_REGISTER_SYMBOL));
  if (abi == nullptr || entry == nullptr) {
    return Refused(path,
                   "not a jobd plugin (no " JOBD_PLUGIN_ABI_SYMBOL
                   " or " JOBD_PLUGIN_REGISTER_SYMBOL
                   " symbol: define its entry point with JOBD_PLUGIN from "
                   "workers/sdk/plugin.h)");
  }
  static constexpr PluginAbi kHost = ThisBuildAbi();
  // Only the size and the version are read before the size is known good.
  if (abi->size < offsetof(PluginAbi, gxx_abi)) {
    return Refused(path, absl::StrCat("its ABI stamp is unreadable (",
                                      abi->size, " bytes)"));
  }
  if (std::string differ = AbiDifferences(*abi, kHost); !differ.empty()) {
    return Refused(
        path,
        absl::StrCat("built for ", DescribeAbi(*abi), ", but this jobd is ",
                     DescribeAbi(kHost), " (they differ in: ", differ,
                     "); rebuild the plugin against this jobd's SDK"));
  }

  std::vector<const TaskDef*> before = registry.List();
  absl::flat_hash_set<std::string> had;
  for (const TaskDef* t : before) had.insert(t->name);
  absl::Status status;
  try {
    entry(&registry, &status);
  } catch (const std::exception& e) {
    return Refused(path, absl::StrCat("its registration threw: ",
                                      ClipUtf8(e.what(), 4096)));
  } catch (...) {
    return Refused(path, "its registration threw a non-standard exception");
  }
  if (!status.ok()) {
    return Refused(path,
                   absl::StrCat("its registration failed: ",
                                ClipUtf8(std::string(status.message()), 4096)));
  }
  std::vector<std::string> added;
  for (const TaskDef* t : registry.List()) {
    if (!had.contains(t->name)) added.push_back(t->name);
  }
  return added;
}

absl::Status LoadPlugins(const std::vector<std::string>& paths,
                         TaskRegistry& registry, bool log) {
  for (const std::string& path : paths) {
    absl::StatusOr<std::vector<std::string>> added = LoadPlugin(path, registry);
    if (!added.ok()) return added.status();
    if (!log) continue;
    spdlog::info("plugin {}: {} task(s): {}", path, added->size(),
                 absl::StrJoin(*added, ", "));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListPluginDirectory(
    const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = fs::absolute(dir, ec);
  if (ec || !fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", ClipUtf8(dir, 4096), "' is not a directory"));
  }
  std::vector<std::string> found;
  fs::directory_iterator it(root, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read '", ClipUtf8(dir, 4096), "': ", ec.message()));
  }
  for (const fs::directory_entry& e : it) {
    if (e.path().extension() != ".so") continue;
    std::error_code type_ec;
    if (!e.is_regular_file(type_ec)) continue;  // Follows links.
    found.push_back(e.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace jobd
