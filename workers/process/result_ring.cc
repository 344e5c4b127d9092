#include "workers/process/result_ring.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "fmt/format.h"

namespace jobd {
namespace {

constexpr size_t kHeaderBytes = 4096;
constexpr size_t kEntryHeaderBytes = 8;

size_t EntryBytes(size_t payload) {
  return kEntryHeaderBytes + ((payload + 7) & ~size_t{7});
}

absl::Status Errno(const char* what) {
  return absl::InternalError(fmt::format("{}: {}", what, std::strerror(errno)));
}

}  // namespace

// Lives in the shared page; accessed through std::atomic_ref only.
struct ResultRing::Header {
  alignas(64) uint64_t head;  // Written by the producer.
  alignas(64) uint64_t tail;  // Written by the consumer.
  alignas(64) uint32_t producer_waiting;
  uint32_t epoch;  // Futex word: bumped when room is given back.
  alignas(64) uint64_t jobs_taken;  // Written by the producer.
};
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);

ResultRing::Header* ResultRing::header() const {
  static_assert(sizeof(Header) <= kHeaderBytes);
  return reinterpret_cast<Header*>(base_);
}
char* ResultRing::data() const { return base_ + kHeaderBytes; }

absl::StatusOr<UniqueFd> ResultRing::Create(size_t capacity) {
  if (capacity < 4096 || (capacity & (capacity - 1)) != 0) {
    return absl::InvalidArgumentError("ring capacity must be a power of two");
  }
  UniqueFd fd(memfd_create("jobd-results", MFD_CLOEXEC));
  if (!fd.valid()) return Errno("memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(kHeaderBytes + capacity)) != 0) {
    return Errno("ftruncate");
  }
  return fd;
}

absl::StatusOr<ResultRing> ResultRing::Map(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return Errno("fstat");
  const size_t bytes = static_cast<size_t>(st.st_size);
  const size_t capacity = bytes > kHeaderBytes ? bytes - kHeaderBytes : 0;
  if (capacity < 4096 || (capacity & (capacity - 1)) != 0) {
    return absl::InvalidArgumentError(
        fmt::format("not a result ring: {} bytes", bytes));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Errno("mmap");
  ResultRing ring;
  ring.base_ = static_cast<char*>(p);
  ring.capacity_ = capacity;
  ring.map_bytes_ = bytes;
  Header* h = ring.header();
  ring.head_ = std::atomic_ref<uint64_t>(h->head).load();
  ring.tail_ = std::atomic_ref<uint64_t>(h->tail).load();
  ring.peeked_end_ = ring.tail_;
  ring.taken_ = std::atomic_ref<uint64_t>(h->jobs_taken).load();
  return ring;
}

ResultRing::ResultRing(ResultRing&& other) noexcept {
  *this = std::move(other);
}

ResultRing& ResultRing::operator=(ResultRing&& other) noexcept {
  if (this == &other) return *this;
  if (base_ != nullptr) munmap(base_, map_bytes_);
  base_ = std::exchange(other.base_, nullptr);
  capacity_ = std::exchange(other.capacity_, 0);
  map_bytes_ = std::exchange(other.map_bytes_, 0);
  head_ = other.head_;
  tail_ = other.tail_;
  peeked_end_ = other.peeked_end_;
  taken_ = other.taken_;
  return *this;
}

ResultRing::~ResultRing() {
  if (base_ != nullptr) munmap(base_, map_bytes_);
}

void ResultRing::Prefault() { madvise(base_, map_bytes_, MADV_POPULATE_WRITE); }

// ---- producer ----

void ResultRing::Append(Kind kind, std::string_view bytes,
                        absl::FunctionRef<void()> wake_consumer) {
  Header* h = header();
  std::atomic_ref<uint64_t> tail(h->tail);
  const size_t size = EntryBytes(bytes.size());
  for (;;) {
    const uint64_t off = head_ & (capacity_ - 1);
    const uint64_t to_end = capacity_ - off;
    const uint64_t need = size <= to_end ? size : to_end + size;
    if (capacity_ - (head_ - tail.load(std::memory_order_acquire)) >= need) {
      break;
    }
    wake_consumer();
    // Announce the wait, then look again (the consumer stores its position
    // before it looks at producer_waiting: one of us sees the other).
    std::atomic_ref<uint32_t> epoch(h->epoch);
    const uint32_t seen = epoch.load();
    std::atomic_ref<uint32_t>(h->producer_waiting).store(1);
    if (capacity_ - (head_ - tail.load()) >= need) continue;
    timespec timeout{.tv_sec = 0, .tv_nsec = 10'000'000};
    syscall(SYS_futex, &h->epoch, FUTEX_WAIT, seen, &timeout, nullptr, 0);
  }
  uint64_t off = head_ & (capacity_ - 1);
  if (size > capacity_ - off) {  // Pad to the end; the entry starts at 0.
    const uint32_t pad[2] = {
        static_cast<uint32_t>(capacity_ - off - kEntryHeaderBytes), kPadding};
    std::memcpy(data() + off, pad, sizeof(pad));
    head_ += capacity_ - off;
    off = 0;
  }
  const uint32_t entry[2] = {static_cast<uint32_t>(bytes.size()), kind};
  std::memcpy(data() + off, entry, sizeof(entry));
  if (!bytes.empty()) {
    std::memcpy(data() + off + kEntryHeaderBytes, bytes.data(), bytes.size());
  }
  head_ += size;
  std::atomic_ref<uint64_t>(h->head).store(head_, std::memory_order_release);
}

size_t ResultRing::used() const {
  return head_ - std::atomic_ref<uint64_t>(header()->tail)
                     .load(std::memory_order_relaxed);
}

void ResultRing::JobTaken() {
  std::atomic_ref<uint64_t>(header()->jobs_taken)
      .store(++taken_, std::memory_order_release);
}

// ---- consumer ----

absl::StatusOr<std::optional<ResultRing::Entry>> ResultRing::Peek() {
  const uint64_t head =
      std::atomic_ref<uint64_t>(header()->head).load(std::memory_order_acquire);
  for (;;) {
    const uint64_t avail = head - tail_;
    if (avail == 0) return std::nullopt;
    // Both positions come from the shared page: a misaligned read position
    // would put an entry header across the ring's end (past the mapping).
    if (avail > capacity_ || ((head | tail_) & 7) != 0) {
      return absl::DataLossError(
          fmt::format("result ring positions out of range (read {}, write {})",
                      tail_, head));
    }
    const uint64_t off = tail_ & (capacity_ - 1);
    uint32_t entry[2];
    std::memcpy(entry, data() + off, sizeof(entry));
    const uint64_t to_end = capacity_ - off;
    if (entry[1] == kPadding) {
      if (entry[0] != to_end - kEntryHeaderBytes || avail < to_end) {
        return absl::DataLossError("bad padding entry in the result ring");
      }
      tail_ += to_end;
      continue;
    }
    const uint64_t size = EntryBytes(entry[0]);
    if ((entry[1] != kResult && entry[1] != kResultOnSocket) || size > to_end ||
        size > avail) {
      return absl::DataLossError(
          fmt::format("bad entry in the result ring (kind {}, {} bytes)",
                      entry[1], entry[0]));
    }
    peeked_end_ = tail_ + size;
    return Entry{
        .kind = static_cast<Kind>(entry[1]),
        .bytes = std::string_view(data() + off + kEntryHeaderBytes, entry[0])};
  }
}

void ResultRing::Consume() { tail_ = peeked_end_; }

void ResultRing::Release() {
  Header* h = header();
  std::atomic_ref<uint64_t>(h->tail).store(tail_);
  std::atomic_ref<uint32_t> waiting(h->producer_waiting);
  if (waiting.load() != 0 && waiting.exchange(0) != 0) {
    std::atomic_ref<uint32_t>(h->epoch).fetch_add(1);
    syscall(SYS_futex, &h->epoch, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
}

uint64_t ResultRing::jobs_taken() const {
  return std::atomic_ref<uint64_t>(header()->jobs_taken)
      .load(std::memory_order_acquire);
}

}  // namespace jobd
