// IPC primitives of the process pool (workers/process_pool.h):
//  * Frames on stream sockets (daemon <-> worker): a 4-byte little-endian
//    length, then that many bytes of a serialized protobuf message.
//    FrameReader reassembles frames from short reads and rejects oversized
//    or unparsable ones; OutBuffer queues frames for a non-blocking socket.
//  * Packets on SOCK_SEQPACKET sockets (daemon <-> fork server): one message
//    per packet, optionally carrying file descriptors (SCM_RIGHTS).
//
// Thread-safety: none; each object belongs to one thread at a time (callers
// lock). Functions are reentrant.
#ifndef JOBD_WORKERS_PROCESS_IPC_H_
#define JOBD_WORKERS_PROCESS_IPC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "workers/os/unique_fd.h"

namespace jobd {

// Bytes of the length prefix.
inline constexpr size_t kFrameHeaderBytes = 4;

// Appends one frame holding `message` to `out`.
void AppendFrame(const google::protobuf::MessageLite& message,
                 std::string& out);

// What a read from a socket gave.
enum class ReadResult { kData, kWouldBlock, kEof, kError };

class FrameReader {
 public:
  explicit FrameReader(size_t max_frame_bytes)
      : max_frame_bytes_(max_frame_bytes) {}

  // One read() from `fd` into the buffer (EINTR retried). kError sets errno.
  ReadResult ReadFrom(int fd);
  // The last ReadFrom got less than it offered: the socket had no more then
  // (a further read would most likely find nothing).
  bool drained() const { return drained_; }
  // Adds bytes as if read (tests).
  void Append(std::string_view bytes);

  // Parses the next complete frame into `message`: true if one was parsed,
  // false if more bytes are needed. DataLoss for a frame longer than the
  // limit or one that does not parse; the stream is unusable after that.
  absl::StatusOr<bool> Next(google::protobuf::MessageLite& message);

  size_t buffered() const { return end_ - pos_; }

 private:
  // Buffer memory kept between frames; more is freed once a big frame is
  // parsed.
  static constexpr size_t kKeepBytes = 1 << 20;

  // At least `bytes` of room after end_; returns where it starts.
  char* Room(size_t bytes);

  size_t max_frame_bytes_;
  std::string buffer_;  // Bytes [pos_, end_) are read and not parsed yet.
  size_t pos_ = 0;
  size_t end_ = 0;
  bool drained_ = false;
};

// Frames waiting to be written to a non-blocking socket.
class OutBuffer {
 public:
  std::string& data() { return data_; }  // Append frames here.
  bool empty() const { return pos_ == data_.size(); }
  size_t size() const { return data_.size() - pos_; }
  // Writes as much as the socket takes. OK when everything or part of it was
  // written (check empty()); an error status if the peer is gone.
  absl::Status FlushTo(int fd);

 private:
  std::string data_;
  size_t pos_ = 0;
};

// Writes all of `data` to a blocking fd (EINTR retried).
absl::Status WriteAll(int fd, std::string_view data);

// Sends `message` as one packet on a SOCK_SEQPACKET socket, with `fds`.
absl::Status SendPacket(int fd, const google::protobuf::MessageLite& message,
                        std::span<const int> fds = {});

// Receives one packet into `message`; received fds are appended to `fds`.
// kData, kWouldBlock (non-blocking socket), kEof, or kError (errno set; also
// for a packet that does not parse, with errno = EBADMSG).
ReadResult RecvPacket(int fd, google::protobuf::MessageLite& message,
                      std::vector<UniqueFd>& fds);

}  // namespace jobd

#endif  // JOBD_WORKERS_PROCESS_IPC_H_
