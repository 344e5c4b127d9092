#include "workers/process/ipc.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace jobd {

void AppendFrame(const google::protobuf::MessageLite& message,
                 std::string& out) {
  const size_t size = message.ByteSizeLong();
  const size_t start = out.size();
  out.resize(start + kFrameHeaderBytes + size);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + start);
  p[0] = static_cast<uint8_t>(size);
  p[1] = static_cast<uint8_t>(size >> 8);
  p[2] = static_cast<uint8_t>(size >> 16);
  p[3] = static_cast<uint8_t>(size >> 24);
  message.SerializeWithCachedSizesToArray(p + kFrameHeaderBytes);
}

char* FrameReader::Room(size_t bytes) {
  if (pos_ > 0 && pos_ * 2 >= end_) {  // Keep the data at the front.
    std::memmove(buffer_.data(), buffer_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  // Grows (and zero-fills) only when the room is short, not per read.
  if (buffer_.size() - end_ < bytes) buffer_.resize(end_ + bytes);
  return buffer_.data() + end_;
}

void FrameReader::Append(std::string_view bytes) {
  std::memcpy(Room(bytes.size()), bytes.data(), bytes.size());
  end_ += bytes.size();
}

ReadResult FrameReader::ReadFrom(int fd) {
  constexpr size_t kChunk = 64 * 1024;
  char* room = Room(kChunk);
  const size_t offered = buffer_.size() - end_;
  ssize_t n;
  do {
    n = read(fd, room, offered);
  } while (n < 0 && errno == EINTR);
  drained_ = n >= 0 && static_cast<size_t>(n) < offered;
  if (n > 0) end_ += n;
  if (n > 0) return ReadResult::kData;
  if (n == 0) return ReadResult::kEof;
  return errno == EAGAIN || errno == EWOULDBLOCK ? ReadResult::kWouldBlock
                                                 : ReadResult::kError;
}

absl::StatusOr<bool> FrameReader::Next(google::protobuf::MessageLite& message) {
  const size_t available = end_ - pos_;
  if (available < kFrameHeaderBytes) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(buffer_.data() + pos_);
  const size_t size =
      static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 |
      static_cast<size_t>(p[2]) << 16 | static_cast<size_t>(p[3]) << 24;
  if (size > max_frame_bytes_) {
    return absl::DataLossError(
        fmt::format("frame of {} bytes exceeds the limit of {} bytes", size,
                    max_frame_bytes_));
  }
  if (available - kFrameHeaderBytes < size) return false;
  if (!message.ParseFromArray(p + kFrameHeaderBytes, static_cast<int>(size))) {
    return absl::DataLossError(fmt::format(
        "frame of {} bytes is not a valid {}", size, message.GetTypeName()));
  }
  pos_ += kFrameHeaderBytes + size;
  if (pos_ == end_) {
    pos_ = end_ = 0;
    if (buffer_.size() > kKeepBytes) std::string().swap(buffer_);
  }
  return true;
}

absl::Status OutBuffer::FlushTo(int fd) {
  while (pos_ < data_.size()) {
    const ssize_t n =
        send(fd, data_.data() + pos_, data_.size() - pos_, MSG_NOSIGNAL);
    if (n > 0) {
      pos_ += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return absl::UnavailableError(
        fmt::format("write to worker failed: {}", std::strerror(errno)));
  }
  if (pos_ == data_.size()) {
    data_.clear();
    pos_ = 0;
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(
          fmt::format("write failed: {}", std::strerror(errno)));
    }
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status SendPacket(int fd, const google::protobuf::MessageLite& message,
                        std::span<const int> fds) {
  std::string bytes = message.SerializeAsString();
  iovec iov{.iov_base = bytes.data(), .iov_len = bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  if (!fds.empty()) {
    if (fds.size() > 4) return absl::InvalidArgumentError("too many fds");
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return absl::UnavailableError(
        fmt::format("sendmsg failed: {}", std::strerror(errno)));
  }
  return absl::OkStatus();
}

ReadResult RecvPacket(int fd, google::protobuf::MessageLite& message,
                      std::vector<UniqueFd>& fds) {
  char bytes[64 * 1024];
  iovec iov{.iov_base = bytes, .iov_len = sizeof(bytes)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return errno == EAGAIN || errno == EWOULDBLOCK ? ReadResult::kWouldBlock
                                                   : ReadResult::kError;
  }
  const size_t fds_before = fds.size();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(received);
      }
    }
  }
  if (n == 0 && fds.size() == fds_before) return ReadResult::kEof;
  if ((msg.msg_flags & MSG_TRUNC) || !message.ParseFromArray(bytes, n)) {
    errno = EBADMSG;
    return ReadResult::kError;
  }
  return ReadResult::kData;
}

}  // namespace jobd
