// libFuzzer target: the daemon's side of the result ring
// (workers/result_ring.h) on shared memory a task scribbled over: every
// position and length must be checked, so Peek() returns entries inside the
// ring or DataLoss, never reads outside it.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "workers/process/result_ring.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kCapacity = 4096;
  absl::StatusOr<jobd::UniqueFd> fd = jobd::ResultRing::Create(kCapacity);
  if (!fd.ok()) return 0;
  // The bytes become the header page then the entries, as a worker (or a
  // task scribbling on them) could have left them.
  void* p = mmap(nullptr, 4096 + kCapacity, PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd->get(), 0);
  if (p == MAP_FAILED) return 0;
  std::memcpy(p, data, std::min(size, size_t{4096 + kCapacity}));
  absl::StatusOr<jobd::ResultRing> ring = jobd::ResultRing::Map(fd->get());
  if (ring.ok()) {
    for (int i = 0; i < 10000; ++i) {
      absl::StatusOr<std::optional<jobd::ResultRing::Entry>> e = ring->Peek();
      if (!e.ok() || !e->has_value()) break;
      volatile size_t sum = 0;  // Touch every byte the entry claims.
      for (char c : (*e)->bytes) sum = sum + static_cast<unsigned char>(c);
      ring->Consume();
    }
    ring->Release();
  }
  munmap(p, 4096 + kCapacity);
  return 0;
}
