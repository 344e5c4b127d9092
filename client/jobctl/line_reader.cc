#include "client/jobctl/line_reader.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace jobd::jobctl {

using jobd::client::InputStatus;

InputStatus LineReader::Next(std::string_view* line, bool may_block) {
  for (;;) {
    const size_t nl = buf_.find('\n', start_);
    if (nl != std::string::npos) {
      *line = std::string_view(buf_).substr(start_, nl - start_);
      start_ = nl + 1;
      if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
      ++lines_;
      return InputStatus::kReady;
    }
    if (eof_) {
      if (start_ < buf_.size()) {
        *line = std::string_view(buf_).substr(start_);
        start_ = buf_.size();
        ++lines_;
        return InputStatus::kReady;
      }
      return InputStatus::kEnd;
    }
    if (!may_block) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return InputStatus::kNotReady;
    }
    // No '\n' in what is buffered: too long a line ends the input.
    if (buf_.size() - start_ > max_line_bytes_) {
      error_ = absl::StrCat("stdin line ", lines_ + 1, " is longer than ",
                            max_line_bytes_,
                            " bytes (jobd's message limit); stopped reading "
                            "there");
      buf_.clear();
      buf_.shrink_to_fit();
      start_ = 0;
      eof_ = true;
      return InputStatus::kEnd;
    }
    // Compact, then read more.
    if (start_ > 0) {
      buf_.erase(0, start_);
      start_ = 0;
    }
    const size_t old = buf_.size();
    buf_.resize(old + 65536);
    ssize_t n;
    do {
      n = ::read(fd_, buf_.data() + old, 65536);
    } while (n < 0 && errno == EINTR);
    buf_.resize(old + (n > 0 ? n : 0));
    if (n <= 0) eof_ = true;
  }
}

}  // namespace jobd::jobctl
