// textstats: an example jobd task plugin (README "Task plugins"), one task
// in each form the SDK offers:
//
//   textstats.count PATH       sync, CPU-bound: a text file's lines, words,
//                              bytes and longest line, read in 256 KiB
//                              chunks with progress and a cancel check
//                              after each (thread pool or process pool)
//   textstats.wait_for PATH PATTERN [poll_ms]
//                              coroutine, IO-bound: waits on the reactor
//                              until a line of the file contains PATTERN
//                              (a log line, say) and returns it
//   textstats.size_after PATH delay_ms
//                              timer: the file's size once delay_ms passed
//
// Built by jobd's own build and, as a user would, against the installed SDK
// (this folder's CMakeLists.txt works both ways).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "workers/sdk/plugin.h"
#include "workers/sdk/utf8.h"

namespace textstats {
namespace {

using jobd::AsyncTaskContext;
using jobd::ParamType;
using jobd::TaskContext;
using jobd::TaskOutput;

constexpr size_t kChunkBytes = 256 * 1024;
constexpr size_t kMaxLineBytes = 64 * 1024;  // What wait_for returns of a line.

// An open file, closed when this goes.
class File {
 public:
  static absl::StatusOr<File> Open(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      std::string message =
          absl::StrCat("path: cannot open '", jobd::ClipUtf8(path, 1024),
                       "': ", std::strerror(error));
      return error == ENOENT ? absl::NotFoundError(message)
                             : absl::FailedPreconditionError(message);
    }
    return File(fd);
  }
  File(File&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  File& operator=(File&&) = delete;
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  explicit File(int fd) : fd_(fd) {}
  int fd_;
};

void SetNumber(google::protobuf::Value& object, const std::string& key,
               double n) {
  (*object.mutable_struct_value()->mutable_fields())[key].set_number_value(n);
}

// textstats.count: sync, on a pool thread or in a worker process.
absl::StatusOr<TaskOutput> Count(TaskContext& ctx) {
  const std::string& path = ctx.args().String("path");
  absl::StatusOr<File> file = File::Open(path);
  if (!file.ok()) return file.status();
  struct stat st {};
  if (fstat(file->fd(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError("path: not a regular file");
  }
  const double size = static_cast<double>(st.st_size);
  std::string chunk(kChunkBytes, '\0');
  uint64_t bytes = 0, lines = 0, words = 0, line = 0, longest = 0;
  bool in_word = false;
  for (;;) {
    if (ctx.cancelled()) {
      return absl::CancelledError(
          absl::StrCat("textstats.count cancelled after ", bytes, " bytes"));
    }
    const ssize_t n = read(file->fd(), chunk.data(), chunk.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("reading path: ", std::strerror(errno)));
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      const unsigned char c = static_cast<unsigned char>(chunk[i]);
      if (c == '\n') {
        ++lines;
        longest = std::max(longest, line);
        line = 0;
      } else {
        ++line;
      }
      const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r' ||
                         c == '\v' || c == '\f';
      if (!space && !in_word) ++words;
      in_word = !space;
    }
    bytes += static_cast<uint64_t>(n);
    if (size > 0) {
      ctx.ReportProgress(std::min(1.0, static_cast<double>(bytes) / size),
                         absl::StrCat(bytes, " bytes read"));
    }
  }
  longest = std::max(longest, line);
  if (line > 0) ++lines;  // A last line without a newline.
  TaskOutput out;
  SetNumber(out.value, "bytes", static_cast<double>(bytes));
  SetNumber(out.value, "lines", static_cast<double>(lines));
  SetNumber(out.value, "words", static_cast<double>(words));
  SetNumber(out.value, "longest_line", static_cast<double>(longest));
  return out;
}

// Where textstats.wait_for is in its file between two looks.
struct Scan {
  off_t offset = 0;      // Bytes already looked at.
  uint64_t line_no = 0;  // Complete lines among them.
  std::string line;      // The current line so far (at most kMaxLineBytes).
};

struct Found {
  uint64_t line_no = 0;
  std::string text;
};

// Reads what was appended since the last look; the first line containing
// `pattern`, if any. Blocking: runs on the reactor's blocking threads.
absl::StatusOr<std::optional<Found>> LookAgain(const std::string& path,
                                               const std::string& pattern,
                                               Scan& scan) {
  absl::StatusOr<File> file = File::Open(path);
  if (!file.ok()) {
    // Not there yet: wait for it to appear.
    if (absl::IsNotFound(file.status())) {
      return std::optional<Found>();
    }
    return file.status();
  }
  std::string chunk(kChunkBytes, '\0');
  for (;;) {
    const ssize_t n =
        pread(file->fd(), chunk.data(), chunk.size(), scan.offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("reading path: ", std::strerror(errno)));
    }
    if (n == 0) return std::optional<Found>();
    for (ssize_t i = 0; i < n; ++i) {
      ++scan.offset;
      if (chunk[i] != '\n') {
        if (scan.line.size() < kMaxLineBytes) scan.line.push_back(chunk[i]);
        continue;
      }
      ++scan.line_no;
      if (scan.line.find(pattern) != std::string::npos) {
        return Found{scan.line_no, std::move(scan.line)};
      }
      scan.line.clear();
    }
  }
}

// textstats.wait_for: a coroutine on one of the reactor's loops.
asio::awaitable<absl::StatusOr<TaskOutput>> WaitFor(AsyncTaskContext& ctx) {
  const std::string path = ctx.args().String("path");
  const std::string pattern = ctx.args().String("pattern");
  const absl::Duration poll = absl::Milliseconds(ctx.args().Int("poll_ms"));
  Scan scan;
  // The reactor's own io_context: the timer's service is the one jobd runs.
  asio::steady_timer timer(ctx.io());
  for (int looks = 1;; ++looks) {
    absl::StatusOr<std::optional<Found>> found = co_await ctx.RunBlocking(
        [&path, &pattern, &scan] { return LookAgain(path, pattern, scan); });
    if (!found.ok()) co_return found.status();
    if (found->has_value()) {
      TaskOutput out;
      SetNumber(out.value, "line", static_cast<double>((*found)->line_no));
      SetNumber(out.value, "looks", looks);
      (*out.value.mutable_struct_value()->mutable_fields())["text"]
          .set_string_value(jobd::MakeValidUtf8((*found)->text));
      co_return out;
    }
    ctx.ReportProgress(-1, absl::StrCat("not yet, after ", scan.line_no,
                                        " lines; look ", looks));
    // A cancel, the job's timeout or shutdown aborts this wait (and the job).
    timer.expires_after(absl::ToChronoMilliseconds(poll));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

absl::Status Register(jobd::TaskRegistry& registry) {
  absl::Status s = registry.Add(
      {.name = "textstats.count",
       .description = "Counts the lines, words and bytes of a text file and "
                      "its longest line (in bytes); reports progress.",
       .default_kind = jobd::v1::JOB_KIND_CPU_BOUND,
       .params = {jobd::Param("path", ParamType::kString,
                              "the file, an absolute path")},
       .run = Count});
  if (!s.ok()) return s;
  s = registry.Add(
      {.name = "textstats.wait_for",
       .description = "Waits until a line of a file contains `pattern` "
                      "(looking every poll_ms milliseconds) and returns "
                      "{line, text, looks}.",
       .default_kind = jobd::v1::JOB_KIND_IO_BOUND,
       .params = {jobd::Param("path", ParamType::kString, "the file"),
                  jobd::Param("pattern", ParamType::kString,
                              "text the line must contain"),
                  jobd::OptionalParam("poll_ms", ParamType::kInt,
                                      jobd::NumberValue(100),
                                      "milliseconds between looks, >= 1")},
       .async = jobd::MakeAsyncTask(WaitFor),
       .validate = [](const jobd::TaskArgs& args) {
         return args.Int("poll_ms") >= 1
                    ? absl::OkStatus()
                    : absl::InvalidArgumentError("poll_ms: must be >= 1");
       }});
  if (!s.ok()) return s;
  return registry.Add(
      {.name = "textstats.size_after",
       .description = "Waits `delay_ms` milliseconds, then returns the "
                      "file's size in bytes (null if it does not exist).",
       .default_kind = jobd::v1::JOB_KIND_IO_BOUND,
       .params = {jobd::Param("path", ParamType::kString, "the file"),
                  jobd::Param("delay_ms", ParamType::kInt,
                              "milliseconds to wait, >= 0")},
       .async = jobd::MakeTimerTask(
           {.delay = [](const jobd::TaskArgs& args)
                -> absl::StatusOr<absl::Duration> {
              if (args.Int("delay_ms") < 0) {
                return absl::InvalidArgumentError("delay_ms: must be >= 0");
              }
              return absl::Milliseconds(args.Int("delay_ms"));
            },
            .then = [](AsyncTaskContext& ctx) -> absl::StatusOr<TaskOutput> {
              TaskOutput out;
              struct stat st {};
              if (stat(ctx.args().String("path").c_str(), &st) == 0) {
                out.value.set_number_value(static_cast<double>(st.st_size));
              } else {
                out.value.set_null_value(google::protobuf::NULL_VALUE);
              }
              return out;
            }})});
}

}  // namespace
}  // namespace textstats

JOBD_PLUGIN(textstats::Register)
