// What machine a benchmark ran on, for its printed header.
#ifndef JOBD_BENCH_MACHINE_H_
#define JOBD_BENCH_MACHINE_H_

#include <fstream>
#include <string>

namespace jobd::bench {

// The "model name" of /proc/cpuinfo, or "unknown".
inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0)
      return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace jobd::bench

#endif  // JOBD_BENCH_MACHINE_H_
