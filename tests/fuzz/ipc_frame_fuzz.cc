// libFuzzer target: the IPC frame decoder (workers/ipc.h) on arbitrary
// bytes, as a worker or a daemon would read them from a socket. It must
// parse or reject every input without crashing, leaking or reading out of
// bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "jobd/internal/worker.pb.h"
#include "workers/process/ipc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (int side = 0; side < 2; ++side) {
    jobd::FrameReader reader(1 << 20);
    // In two pieces, as short reads deliver them.
    reader.Append(bytes.substr(0, size / 2));
    reader.Append(bytes.substr(size / 2));
    jobd::internal::ToWorker to_worker;
    jobd::internal::FromWorker from_worker;
    for (int i = 0; i < 1000; ++i) {
      absl::StatusOr<bool> got =
          side == 0 ? reader.Next(to_worker) : reader.Next(from_worker);
      if (!got.ok() || !*got) break;
    }
  }
  return 0;
}
