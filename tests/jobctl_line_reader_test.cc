// Unit tests of jobctl's LineReader (client/jobctl/line_reader.h), map's
// stdin: lines from a pipe or a file, '\r' dropped, a last line without
// '\n', "no full line yet" without blocking, and a line over the limit.
#include <stdio.h>
#include <unistd.h>

#include <string>

#include "client/jobctl/line_reader.h"
#include "gtest/gtest.h"

namespace jobd::jobctl {
namespace {

using jobd::client::InputStatus;

class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe(fds_), 0); }
  ~Pipe() {
    CloseWriter();
    ::close(fds_[0]);
  }
  int reader() const { return fds_[0]; }
  void Write(const std::string& s) {
    ASSERT_EQ(::write(fds_[1], s.data(), s.size()),
              static_cast<ssize_t>(s.size()));
  }
  void CloseWriter() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }

 private:
  int fds_[2] = {-1, -1};
};

TEST(JobctlLineReaderTest, LinesThenTheUnterminatedLastOne) {
  Pipe p;
  p.Write("a\nb\r\n\n\r\nlast");
  p.CloseWriter();
  LineReader lines(p.reader());
  std::string_view line;
  for (const char* want : {"a", "b", "", "", "last"}) {
    ASSERT_EQ(lines.Next(&line, /*may_block=*/true), InputStatus::kReady);
    EXPECT_EQ(line, want);
  }
  EXPECT_EQ(lines.Next(&line, true), InputStatus::kEnd);
  EXPECT_EQ(lines.Next(&line, false), InputStatus::kEnd);
}

TEST(JobctlLineReaderTest, NotReadyUntilALineIsComplete) {
  Pipe p;
  LineReader lines(p.reader());
  std::string_view line;
  EXPECT_EQ(lines.Next(&line, /*may_block=*/false), InputStatus::kNotReady);
  p.Write("par");
  EXPECT_EQ(lines.Next(&line, false), InputStatus::kNotReady);
  p.Write("tial\nnext");
  ASSERT_EQ(lines.Next(&line, false), InputStatus::kReady);
  EXPECT_EQ(line, "partial");
  EXPECT_EQ(lines.Next(&line, false), InputStatus::kNotReady);
  p.CloseWriter();
  ASSERT_EQ(lines.Next(&line, false), InputStatus::kReady);
  EXPECT_EQ(line, "next");
  EXPECT_EQ(lines.Next(&line, false), InputStatus::kEnd);
}

TEST(JobctlLineReaderTest, LinesLongerThanOneRead) {
  FILE* f = ::tmpfile();
  ASSERT_NE(f, nullptr);
  const std::string big(200000, 'x');
  const std::string input = "short\n" + big + "\n" + big + "y";
  ASSERT_EQ(::fwrite(input.data(), 1, input.size(), f), input.size());
  ASSERT_EQ(::fflush(f), 0);
  ASSERT_EQ(::lseek(::fileno(f), 0, SEEK_SET), 0);
  LineReader lines(::fileno(f));
  std::string_view line;
  ASSERT_EQ(lines.Next(&line, true), InputStatus::kReady);
  EXPECT_EQ(line, "short");
  ASSERT_EQ(lines.Next(&line, true), InputStatus::kReady);
  EXPECT_EQ(line, big);
  ASSERT_EQ(lines.Next(&line, false), InputStatus::kReady);
  EXPECT_EQ(line, big + "y");
  EXPECT_EQ(lines.Next(&line, true), InputStatus::kEnd);
  ::fclose(f);
}

TEST(JobctlLineReaderTest, ALineOverTheLimitEndsTheInputAndSaysWhichLine) {
  // Without a limit a line with no '\n' would be buffered whole, however
  // big: here 1 MiB against a limit of 100 KiB, read 64 KiB at a time.
  FILE* f = ::tmpfile();
  ASSERT_NE(f, nullptr);
  const std::string fits(100 << 10, 'f');
  const std::string input =
      "a\n" + fits + "\n" + std::string(1 << 20, 'x') + "\nafter\n";
  ASSERT_EQ(::fwrite(input.data(), 1, input.size(), f), input.size());
  ASSERT_EQ(::fflush(f), 0);
  ASSERT_EQ(::lseek(::fileno(f), 0, SEEK_SET), 0);
  LineReader lines(::fileno(f), 100 << 10);
  std::string_view line;
  ASSERT_EQ(lines.Next(&line, true), InputStatus::kReady);
  EXPECT_EQ(line, "a");
  ASSERT_EQ(lines.Next(&line, true), InputStatus::kReady);
  EXPECT_EQ(line, fits);  // At the limit: still a line.
  EXPECT_EQ(lines.Next(&line, true), InputStatus::kEnd);
  EXPECT_EQ(lines.error(),
            "stdin line 3 is longer than 102400 bytes (jobd's message "
            "limit); stopped reading there");
  EXPECT_EQ(lines.Next(&line, true), InputStatus::kEnd);  // And stays so.
  ::fclose(f);
}

}  // namespace
}  // namespace jobd::jobctl
