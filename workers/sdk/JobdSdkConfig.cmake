# JobdSdk: build jobd task plugins (workers/sdk/plugin.h) out of jobd's
# tree. One target, jobd::plugin_sdk: the SDK's headers, C++20, and the
# protobuf, absl and Asio settings jobd was built with. Link a MODULE
# library with it and load it with `jobd --plugin PATH`.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(Protobuf)
find_dependency(absl CONFIG)
include("${CMAKE_CURRENT_LIST_DIR}/JobdSdkTargets.cmake")
