// LineReader: the lines of a file descriptor (map's stdin), read in 64 KiB
// blocks, that can tell "no full line yet" without blocking, so that map
// keeps its jobs flowing while its input trickles in. A trailing '\r' is
// dropped; a last line without '\n' still counts. A line longer than the
// limit (by default jobd's message limit: it could not be sent whole) ends
// the input there, and error() says which line: the buffer stays bounded.
//
// Thread-safety: single-threaded (map calls it from the thread that pulls
// its inputs). Ownership: does not own the fd; a returned line points into
// the reader's buffer and is valid until the next call.
#ifndef JOBD_CLIENT_JOBCTL_LINE_READER_H_
#define JOBD_CLIENT_JOBCTL_LINE_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "client/client.h"

namespace jobd::jobctl {

// jobd's default message limit (max-message-bytes).
inline constexpr size_t kMaxLineBytes = 16 << 20;

class LineReader {
 public:
  explicit LineReader(int fd, size_t max_line_bytes = kMaxLineBytes)
      : fd_(fd), max_line_bytes_(max_line_bytes) {}

  // kReady with *line set, kNotReady (only if !may_block: no full line is
  // buffered and the fd has nothing to read now), or kEnd (end of file or a
  // read error, once every line was returned).
  jobd::client::InputStatus Next(std::string_view* line, bool may_block);

  // Why the input ended early ("" if it did not).
  const std::string& error() const { return error_; }

 private:
  const int fd_;
  const size_t max_line_bytes_;
  std::string error_;
  uint64_t lines_ = 0;  // Returned so far.
  std::string buf_;
  size_t start_ = 0;  // Where the next line starts in buf_.
  bool eof_ = false;
};

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_LINE_READER_H_
