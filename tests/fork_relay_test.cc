// Unit tests: the process pool's end of the fork server (workers/process/
// internal/fork_relay.h) against a real fork server (this binary in
// fork-server mode, as jobd starts a replacement): a worker forked with its
// descriptors and limits, its exit reported, a dead fork server reaped and
// replaced (its workers dying with it), and Stop ending the fork server and
// its workers.
#include "workers/process/internal/fork_relay.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/process/result_ring.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

struct Recorder : ForkServerRelay::Events {
  struct Spawned {
    uint64_t request_id;
    pid_t pid;
    std::vector<UniqueFd> fds;
  };
  void OnSpawned(uint64_t request_id, pid_t pid,
                 std::vector<UniqueFd>& fds) override {
    spawned.push_back({request_id, pid, std::move(fds)});
  }
  void OnSpawnFailed(uint64_t request_id, std::string_view error) override {
    failed.emplace_back(request_id, std::string(error));
  }
  void OnExited(pid_t pid, int wait_status) override {
    exited.emplace_back(pid, wait_status);
  }
  std::vector<Spawned> spawned;
  std::vector<std::pair<uint64_t, std::string>> failed;
  std::vector<std::pair<pid_t, int>> exited;
};

// Whether `pidfd` says its process ended, within 10 s.
bool EndsSoon(int pidfd) {
  pollfd p{.fd = pidfd, .events = POLLIN};
  return poll(&p, 1, 10000) == 1;
}

class ForkRelayTest : public ::testing::Test {
 protected:
  void TearDown() override {
    relay_.reset();  // Stops the fork server, which kills its workers.
  }

  void StartRelay() {
    options_.self_exe = "/proc/self/exe";
    absl::StatusOr<ForkServerProcess> server =
        SpawnForkServer(options_.self_exe, options_.fork_server_args);
    ASSERT_TRUE(server.ok()) << server.status();
    relay_ =
        std::make_unique<ForkServerRelay>(loop_, options_, *std::move(server));
  }

  enum class Pumped { kDone, kTimedOut, kForkServerGone };
  // Reads the fork server's replies until `done()`, for up to 10 s.
  Pumped Pump(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done()) {
      if (absl::Now() >= deadline) return Pumped::kTimedOut;
      for (const epoll_event& e : loop_.Wait(deadline)) {
        if (EventGen(e.data.u64) != relay_->gen()) continue;
        if (!relay_->ReadReplies(recorder_)) return Pumped::kForkServerGone;
      }
    }
    return Pumped::kDone;
  }

  // Forks one worker; its entry in recorder_.spawned.
  Recorder::Spawned* SpawnOne() {
    const size_t before = recorder_.spawned.size();
    absl::StatusOr<uint64_t> id = relay_->RequestSpawn();
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return nullptr;
    EXPECT_EQ(Pump([&] { return recorder_.spawned.size() > before; }),
              Pumped::kDone);
    if (recorder_.spawned.size() <= before) return nullptr;
    Recorder::Spawned& s = recorder_.spawned.back();
    EXPECT_EQ(s.request_id, *id);
    return &s;
  }

  ProcessPoolOptions options_;
  EpollLoop loop_;
  Recorder recorder_;
  std::unique_ptr<ForkServerRelay> relay_;
};

TEST_F(ForkRelayTest, ForksAWorkerWithItsDescriptorsAndReportsItsExit) {
  ASSERT_NO_FATAL_FAILURE(StartRelay());
  EXPECT_TRUE(relay_->running());
  EXPECT_GT(relay_->pid(), 0);
  Recorder::Spawned* w = SpawnOne();
  ASSERT_NE(w, nullptr);
  EXPECT_GT(w->pid, 0);
  ASSERT_EQ(w->fds.size(), 3u);  // Socket, result ring, pidfd.
  EXPECT_TRUE(ResultRing::Map(w->fds[1].get()).ok());
  EXPECT_EQ(getpgid(w->pid), w->pid);  // Its own process group.
  EXPECT_TRUE(recorder_.failed.empty());

  const pid_t pid = w->pid;
  w->fds[0].reset();  // Closing its socket makes it exit.
  ASSERT_EQ(Pump([&] { return !recorder_.exited.empty(); }), Pumped::kDone);
  EXPECT_EQ(recorder_.exited[0].first, pid);
  const int status = recorder_.exited[0].second;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(EndsSoon(w->fds[2].get()));
}

TEST_F(ForkRelayTest, RequestsCarryTheWorkersLimits) {
  options_.max_open_files = 77;
  options_.max_cpu_seconds = 1000;
  ASSERT_NO_FATAL_FAILURE(StartRelay());
  Recorder::Spawned* w = SpawnOne();
  ASSERT_NE(w, nullptr);
  // It applies its limits before it runs and says it is ready (a frame).
  pollfd ready{.fd = w->fds[0].get(), .events = POLLIN};
  ASSERT_EQ(poll(&ready, 1, 10000), 1);
  std::ifstream limits("/proc/" + std::to_string(w->pid) + "/limits");
  std::string line, open_files, cpu;
  while (std::getline(limits, line)) {
    if (line.starts_with("Max open files")) open_files = line;
    if (line.starts_with("Max cpu time")) cpu = line;
  }
  EXPECT_THAT(open_files, HasSubstr(" 77 "));
  EXPECT_THAT(cpu, HasSubstr(" 1000 "));  // Soft; the hard limit is 1001.
}

TEST_F(ForkRelayTest, ADeadForkServerIsReapedAndReplaced) {
  ASSERT_NO_FATAL_FAILURE(StartRelay());
  Recorder::Spawned* w = SpawnOne();
  ASSERT_NE(w, nullptr);
  const pid_t old_pid = relay_->pid();
  const uint64_t old_gen = relay_->gen();

  ASSERT_EQ(kill(old_pid, SIGKILL), 0);
  EXPECT_EQ(Pump([] { return false; }), Pumped::kForkServerGone);
  EXPECT_TRUE(EndsSoon(w->fds[2].get()));  // Its workers die with it.
  relay_->Reap(recorder_);
  EXPECT_EQ(relay_->pid(), 0);
  EXPECT_FALSE(relay_->running());
  EXPECT_EQ(relay_->restarts(), 1u);
  EXPECT_EQ(relay_->gen(), old_gen + 1);
  EXPECT_EQ(kill(old_pid, 0), -1);  // Reaped: no zombie left.

  ASSERT_TRUE(relay_->Start().ok());
  EXPECT_TRUE(relay_->running());
  EXPECT_GT(relay_->pid(), 0);
  EXPECT_NE(relay_->pid(), old_pid);
  ASSERT_NE(SpawnOne(), nullptr);  // The new one forks workers.
}

TEST_F(ForkRelayTest, StopEndsTheForkServerAndItsWorkers) {
  ASSERT_NO_FATAL_FAILURE(StartRelay());
  Recorder::Spawned* w = SpawnOne();
  ASSERT_NE(w, nullptr);
  const pid_t server = relay_->pid();
  relay_->Stop();
  EXPECT_EQ(relay_->pid(), 0);
  EXPECT_FALSE(relay_->running());
  EXPECT_EQ(kill(server, 0), -1);  // Ended and reaped.
  EXPECT_TRUE(EndsSoon(w->fds[2].get()));
  EXPECT_EQ(relay_->restarts(), 0u);
}

}  // namespace
}  // namespace jobd

// This binary is also the fork server the tests start (SpawnForkServer).
int main(int argc, char** argv) {
  jobd::RunForkServerIfInvoked(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
