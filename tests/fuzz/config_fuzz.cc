// libFuzzer target: the configuration parser (server/config.h) on arbitrary
// config-file contents: every file must parse or fail with a message.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("jobd-config-fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) != static_cast<ssize_t>(size)) {
    close(fd);
    return 0;
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  std::string args[] = {"jobd", "--config", path};
  char* argv[] = {args[0].data(), args[1].data(), args[2].data(), nullptr};
  (void)jobd::ParseConfig(3, argv);
  close(fd);
  return 0;
}
