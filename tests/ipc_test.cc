// Unit tests: the process pool's framing and fd passing (workers/ipc.h) over
// real socketpairs: short reads, several frames per read, oversized and
// corrupt frames, a non-blocking writer meeting a full socket, SCM_RIGHTS.
#include "workers/process/ipc.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobd/internal/worker.pb.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

internal::FromWorker Done(uint64_t id, const std::string& message) {
  internal::FromWorker m;
  m.mutable_done()->set_job_id(id);
  m.mutable_done()->set_message(message);
  return m;
}

TEST(FrameReaderTest, ReassemblesFramesFedOneByteAtATime) {
  std::string wire;
  AppendFrame(Done(1, "first"), wire);
  AppendFrame(Done(2, std::string(100000, 'x')), wire);
  FrameReader reader(1 << 20);
  internal::FromWorker got;
  std::vector<uint64_t> ids;
  for (char c : wire) {
    reader.Append(std::string_view(&c, 1));
    absl::StatusOr<bool> r = reader.Next(got);
    ASSERT_TRUE(r.ok()) << r.status();
    if (*r) ids.push_back(got.done().job_id());
  }
  EXPECT_THAT(ids, ::testing::ElementsAre(1, 2));
  EXPECT_EQ(got.done().message().size(), 100000u);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(FrameReaderTest, RejectsOversizedAndCorruptFrames) {
  internal::FromWorker got;
  FrameReader small(16);
  std::string wire;
  AppendFrame(Done(1, std::string(64, 'x')), wire);
  small.Append(wire);
  absl::StatusOr<bool> r = small.Next(got);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("exceeds the limit of 16"));

  FrameReader reader(1 << 20);
  const char garbage[] = {4, 0, 0, 0, '\xff', '\xff', '\xff', '\xff'};
  reader.Append(std::string_view(garbage, sizeof(garbage)));
  r = reader.Next(got);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not a valid"));
}

TEST(FrameIoTest, NonBlockingWriterAndReaderMoveManyFramesOverASocket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  fcntl(a.get(), F_SETFL, O_NONBLOCK);
  fcntl(b.get(), F_SETFL, O_NONBLOCK);
  OutBuffer out;
  constexpr int kFrames = 20000;  // Megabytes: the socket fills up.
  for (int i = 0; i < kFrames; ++i) {
    AppendFrame(Done(i, std::string(200, 'y')), out.data());
  }
  FrameReader reader(1 << 20);
  internal::FromWorker got;
  int received = 0;
  for (int round = 0; round < 100000 && received < kFrames; ++round) {
    ASSERT_TRUE(out.FlushTo(a.get()).ok());
    while (reader.ReadFrom(b.get()) == ReadResult::kData) {
    }
    for (;;) {
      absl::StatusOr<bool> r = reader.Next(got);
      ASSERT_TRUE(r.ok()) << r.status();
      if (!*r) break;
      ASSERT_EQ(got.done().job_id(), static_cast<uint64_t>(received));
      ++received;
    }
  }
  EXPECT_EQ(received, kFrames);
  EXPECT_TRUE(out.empty());
  a.reset();
  EXPECT_EQ(reader.ReadFrom(b.get()), ReadResult::kEof);
}

TEST(PacketTest, CarriesAMessageAndFileDescriptors) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);

  internal::ForkReply reply;
  reply.mutable_spawned()->set_request_id(7);
  reply.mutable_spawned()->set_pid(1234);
  const int fds[] = {read_end.get()};
  ASSERT_TRUE(SendPacket(a.get(), reply, fds).ok());

  internal::ForkReply got;
  std::vector<UniqueFd> received;
  ASSERT_EQ(RecvPacket(b.get(), got, received), ReadResult::kData);
  EXPECT_EQ(got.spawned().request_id(), 7u);
  EXPECT_EQ(got.spawned().pid(), 1234);
  ASSERT_EQ(received.size(), 1u);
  // The received fd is the same pipe: what goes in one end comes out there.
  ASSERT_EQ(write(write_end.get(), "z", 1), 1);
  char c = 0;
  ASSERT_EQ(read(received[0].get(), &c, 1), 1);
  EXPECT_EQ(c, 'z');
  EXPECT_EQ(fcntl(received[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

  a.reset();
  EXPECT_EQ(RecvPacket(b.get(), got, received), ReadResult::kEof);
}

}  // namespace
}  // namespace jobd
