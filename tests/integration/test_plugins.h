// What the plugin tests share: where the build put the test plugins
// (tests/plugins/, JOBD_TEST_PLUGIN_DIR) and the spec of a plugin task's
// job.
//
// Thread-safety: pure functions. Ownership: none.
#ifndef JOBD_TESTS_INTEGRATION_TEST_PLUGINS_H_
#define JOBD_TESTS_INTEGRATION_TEST_PLUGINS_H_

#include <string>
#include <vector>

#include "jobd/v1/jobd.pb.h"

namespace jobd::testing {

// The test plugin `name` (plugintest, bad_abi, ...): its .so file.
inline std::string TestPlugin(const std::string& name) {
  return std::string(JOBD_TEST_PLUGIN_DIR) + "/" + name + ".so";
}

// A CPU-bound job of `task` with string `args`, on `executor`.
inline v1::JobSpec PluginSpec(const std::string& task,
                              const std::vector<std::string>& args,
                              v1::Executor executor) {
  v1::JobSpec s;
  s.set_task(task);
  s.set_kind(v1::JOB_KIND_CPU_BOUND);
  s.set_executor(executor);
  for (const std::string& a : args) s.add_args()->set_string_value(a);
  return s;
}

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_TEST_PLUGINS_H_
