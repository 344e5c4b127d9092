// UniqueFd: owns one file descriptor and closes it when it goes (or is
// reset), like std::unique_ptr for descriptors.
//
// Thread-safety: none; an object belongs to one thread at a time.
// Ownership: the object owns its descriptor; release() gives it up.
#ifndef JOBD_WORKERS_OS_UNIQUE_FD_H_
#define JOBD_WORKERS_OS_UNIQUE_FD_H_

#include <utility>

namespace jobd {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

}  // namespace jobd

#endif  // JOBD_WORKERS_OS_UNIQUE_FD_H_
