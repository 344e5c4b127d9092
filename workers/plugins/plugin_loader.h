// The plugin loader: brings operators' own C++ tasks (shared objects built
// with workers/sdk/plugin.h) into a TaskRegistry at start, in the daemon
// and in the process pool's fork server, which must load the same set.
//
// Loading a plugin: dlopen(RTLD_NOW | RTLD_LOCAL) (every symbol resolved at
// once: a plugin that needs what jobd lacks is refused, never half-run),
// its ABI stamp read and compared with jobd's before any of its code runs,
// then its entry point called with the registry. Every refusal is an error
// naming the plugin's path and the reason; an exception thrown by the entry
// point is caught and refuses the plugin the same way. A plugin is never
// unloaded (dlclose), not even a refused one: its tasks' code must outlive
// them, and a refusal ends the process's start anyway.
//
// The SDK's symbols come from the executable: it is linked with
// ENABLE_EXPORTS and the whole SDK (see the top CMakeLists.txt).
//
// Thread-safety: call during start-up only, like TaskRegistry::Add.
// Ownership: the registry owns the tasks; the process owns the plugins.
#ifndef JOBD_WORKERS_PLUGINS_PLUGIN_LOADER_H_
#define JOBD_WORKERS_PLUGINS_PLUGIN_LOADER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

// Loads the plugin at `path` into `registry`; returns the names of the
// tasks it added. FailedPrecondition "plugin PATH: REASON" when the file is
// missing, not a shared object, not a jobd plugin (no entry point), built
// for another ABI (naming both), or its registration fails or throws
// (a task name taken by a built-in or another plugin, say).
absl::StatusOr<std::vector<std::string>> LoadPlugin(const std::string& path,
                                                    TaskRegistry& registry);

// Loads each of `paths` in order, logging what each added if `log`; the
// first refusal is returned (and the rest are not loaded).
absl::Status LoadPlugins(const std::vector<std::string>& paths,
                         TaskRegistry& registry, bool log = true);

// The plugins of directory `dir`: its *.so files (regular files or links to
// them), as absolute paths in name order. An error if `dir` is not a
// readable directory.
absl::StatusOr<std::vector<std::string>> ListPluginDirectory(
    const std::string& dir);

}  // namespace jobd

#endif  // JOBD_WORKERS_PLUGINS_PLUGIN_LOADER_H_
