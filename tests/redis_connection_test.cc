// RedisConnection (server/cluster/redis_connection.h) against a real
// redis-server started by the test (tests/redis/redis_server.h): replies
// converted, big values through partial reads and writes, fail-fast while
// down, reconnect after kill -9 and restart on the same socket, the reply
// timeout (a stopped server), the blocking connection apart, bounds.
#include "server/cluster/redis_connection.h"

#include <signal.h>

#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cluster/redis_endpoint.h"
#include "tests/redis/redis_call.h"
#include "tests/redis/redis_server.h"

namespace jobd::cluster {
namespace {

using testing::Call;
using ::testing::HasSubstr;
using testing::IoThread;
using testing::RedisServer;

// Records the connection's ups and downs; waits for the next up.
class StateLog {
 public:
  void On(bool up) {
    absl::MutexLock lock(&mu_);
    (up ? ups_ : downs_)++;
  }
  bool WaitUps(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]()
                       ABSL_SHARED_LOCKS_REQUIRED(mu_) { return ups_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }
  bool WaitDowns(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]()
                       ABSL_SHARED_LOCKS_REQUIRED(mu_) { return downs_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  absl::Mutex mu_;
  int ups_ ABSL_GUARDED_BY(mu_) = 0;
  int downs_ ABSL_GUARDED_BY(mu_) = 0;
};

class RedisConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
  }
  void TearDown() override {
    for (auto& c : conns_) c->Stop();
    io_.Join();
  }

  RedisConnectionOptions Options(const std::string& name = "test") {
    RedisConnectionOptions o;
    o.endpoint.unix_path = redis_->socket_path();
    o.name = name;
    o.first_backoff = absl::Milliseconds(20);
    o.max_backoff = absl::Milliseconds(100);
    o.reply_timeout = absl::Seconds(5);
    return o;
  }
  // A started connection, its ups and downs counted in `log`.
  std::shared_ptr<RedisConnection> Connect(RedisConnectionOptions o,
                                           StateLog* log = nullptr) {
    auto conn = RedisConnection::Create(io_.io(), std::move(o));
    if (log != nullptr) conn->SetStateListener([log](bool up) { log->On(up); });
    conn->Start();
    conns_.push_back(conn);
    return conn;
  }

  // Declared first, so destroyed last: the connections' timers and
  // descriptors belong to its io_context (TearDown joins its thread).
  IoThread io_;
  std::unique_ptr<RedisServer> redis_;
  // Outlives the connections: their listener runs until they stopped.
  StateLog log_;
  std::vector<std::shared_ptr<RedisConnection>> conns_;
};

TEST_F(RedisConnectionTest, RepliesBecomeOwnedValues) {
  auto conn = Connect(Options());
  // Queued while connecting: sent once the connection is up.
  auto ping = Call(*conn, {"PING"});
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->type, RedisValue::Type::kStatus);
  EXPECT_EQ(ping->str, "PONG");

  const std::string binary("a\0b\xff", 4);
  auto set = Call(*conn, {"SET", "k", binary});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE(set->is_ok());
  auto get = Call(*conn, {"GET", "k"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->type, RedisValue::Type::kString);
  EXPECT_EQ(get->str, binary);

  auto nil = Call(*conn, {"GET", "missing"});
  ASSERT_TRUE(nil.ok()) << nil.status();
  EXPECT_TRUE(nil->is_nil());

  auto incr = Call(*conn, {"INCRBY", "n", "41"});
  ASSERT_TRUE(incr.ok());
  EXPECT_EQ(incr->type, RedisValue::Type::kInteger);
  EXPECT_EQ(incr->integer, 41);

  ASSERT_TRUE(Call(*conn, {"RPUSH", "l", "x", "y"}).ok());
  auto range = Call(*conn, {"LRANGE", "l", "0", "-1"});
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->type, RedisValue::Type::kArray);
  ASSERT_EQ(range->elements.size(), 2u);
  EXPECT_EQ(range->elements[1].str, "y");

  // A Redis error reply is a status with Redis's text.
  auto wrong = Call(*conn, {"INCR", "l"});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(wrong.status().message(), HasSubstr("WRONGTYPE"));
  // Nested error replies (inside EXEC) stay values.
  auto script =
      Call(*conn, {"EVAL", "return {1, redis.error_reply('no')}", "0"});
  ASSERT_TRUE(script.ok()) << script.status();
  ASSERT_EQ(script->elements.size(), 2u);
  EXPECT_TRUE(script->elements[1].is_error());
  EXPECT_EQ(conn->connects(), 1u);
}

// Replies larger than one read and commands larger than one write: the
// edge-triggered reactor must not stall on bytes hiredis left behind.
TEST_F(RedisConnectionTest, BigValuesAndManyPipelinedCommands) {
  auto conn = Connect(Options());
  std::string big(8 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>('a' + i % 26);
  auto set = Call(*conn, {"SET", "big", big});
  ASSERT_TRUE(set.ok()) << set.status();
  auto get = Call(*conn, {"GET", "big"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_TRUE(get->str == big);

  // 5000 commands at once; replies come back in order, each to its own.
  constexpr int kCount = 5000;
  absl::Mutex mu;
  int answered = 0;
  bool in_order = true;
  absl::Notification all;
  for (int i = 0; i < kCount; ++i) {
    conn->Command({"INCR", "counter"}, [&, i](absl::StatusOr<RedisValue> r) {
      absl::MutexLock lock(&mu);
      if (!r.ok() || r->integer != i + 1) in_order = false;
      if (++answered == kCount) all.Notify();
    });
  }
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(in_order);
}

TEST_F(RedisConnectionTest, FailsFastWhileRedisIsDown) {
  RedisConnectionOptions o = Options();
  o.endpoint.unix_path = redis_->dir() + "/nobody.sock";
  o.first_backoff = absl::Seconds(10);  // Stays down for the whole test.
  o.max_backoff = absl::Seconds(10);
  auto conn = Connect(o);
  const absl::Time start = absl::Now();
  auto r = Call(*conn, {"PING"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("nobody.sock"));
  EXPECT_THAT(r.status().message(), HasSubstr("not connected"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(conn->connected());
}

TEST_F(RedisConnectionTest, ReconnectsAfterKillAndRestartOnTheSameSocket) {
  StateLog& log = log_;
  auto conn = Connect(Options(), &log);
  ASSERT_TRUE(log.WaitUps(1, absl::Seconds(10)));
  ASSERT_TRUE(Call(*conn, {"SET", "a", "1"}).ok());

  // A blocking command in flight when the server dies fails UNAVAILABLE.
  absl::Notification failed;
  absl::Status in_flight;
  conn->Command(
      {"BLPOP", "nothing", "30"},
      [&](absl::StatusOr<RedisValue> r) {
        in_flight = r.status();
        failed.Notify();
      },
      absl::Seconds(30));
  // PING behind it waits for BLPOP: it is answered (failed) with it.
  redis_->Kill();
  ASSERT_TRUE(failed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(in_flight.code(), absl::StatusCode::kUnavailable) << in_flight;
  ASSERT_TRUE(log.WaitDowns(1, absl::Seconds(10)));

  // Down: commands fail at once.
  auto down = Call(*conn, {"PING"});
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE(log.WaitUps(2, absl::Seconds(10)));
  auto after = Call(*conn, {"SET", "b", "2"});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(conn->connects(), 2u);
  EXPECT_TRUE(conn->connected());
}

// hiredis has no timeouts: a server that stops answering (SIGSTOP) makes
// the watchdog drop the connection and fail what is in flight.
TEST_F(RedisConnectionTest, ReplyTimeoutDropsAStalledConnection) {
  RedisConnectionOptions o = Options();
  o.reply_timeout = absl::Milliseconds(300);
  StateLog& log = log_;
  auto conn = Connect(o, &log);
  ASSERT_TRUE(log.WaitUps(1, absl::Seconds(10)));
  ASSERT_EQ(kill(redis_->pid(), SIGSTOP), 0);
  const absl::Time start = absl::Now();
  auto r = Call(*conn, {"PING"});
  const absl::Duration took = absl::Now() - start;
  ASSERT_EQ(kill(redis_->pid(), SIGCONT), 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(3));
  ASSERT_TRUE(log.WaitUps(2, absl::Seconds(10)));
  EXPECT_TRUE(Call(*conn, {"PING"}).ok());
}

// A blocking read on its own connection does not hold the commands up.
TEST_F(RedisConnectionTest, BlockingReadsHaveAConnectionOfTheirOwn) {
  auto commands = Connect(Options("commands"));
  auto blocking = Connect(Options("blocking"));
  absl::Notification popped;
  absl::StatusOr<RedisValue> pop;
  blocking->Command(
      {"BLPOP", "q", "20"},
      [&](absl::StatusOr<RedisValue> r) {
        pop = std::move(r);
        popped.Notify();
      },
      absl::Seconds(20));
  const absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Call(*commands, {"PING"}).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(popped.HasBeenNotified());
  ASSERT_TRUE(Call(*commands, {"LPUSH", "q", "job"}).ok());
  ASSERT_TRUE(popped.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(pop.ok()) << pop.status();
  ASSERT_EQ(pop->elements.size(), 2u);
  EXPECT_EQ(pop->elements[1].str, "job");
}

TEST_F(RedisConnectionTest, BoundsWhatIsInFlightAndStopFailsIt) {
  RedisConnectionOptions o = Options();
  o.max_in_flight_bytes = 1024;
  auto conn = Connect(o);
  auto big = Call(*conn, {"SET", "k", std::string(2048, 'x')});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Call(*conn, {"SET", "k", "small"}).ok());

  absl::Notification failed;
  absl::Status status;
  conn->Command(
      {"BLPOP", "nothing", "30"},
      [&](absl::StatusOr<RedisValue> r) {
        status = r.status();
        failed.Notify();
      },
      absl::Seconds(30));
  ASSERT_TRUE(Call(*conn, {"PING"}, absl::Milliseconds(200)).status().code() ==
              absl::StatusCode::kDeadlineExceeded);  // Behind the BLPOP.
  conn->Stop();
  ASSERT_TRUE(failed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("stopped"));
  auto after = Call(*conn, {"PING"});
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable);
}

TEST(RedisEndpointTest, ParsesUrlsAndNamesTheOptionInRefusals) {
  auto tcp = ParseRedisUrl("redis://127.0.0.1:6380/3", "--cluster");
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 6380);
  EXPECT_EQ(tcp->db, 3);
  EXPECT_EQ(tcp->ToString(), "redis://127.0.0.1:6380/3");
  auto plain = ParseRedisUrl("redis://redis.internal", "--cluster");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->port, 6379);
  EXPECT_EQ(plain->db, 0);
  auto v6 = ParseRedisUrl("redis://[::1]:7000/0", "--cluster");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "redis://[::1]:7000/0");
  auto unix_url = ParseRedisUrl("unix:///run/redis/redis.sock", "--cluster");
  ASSERT_TRUE(unix_url.ok());
  EXPECT_EQ(unix_url->unix_path, "/run/redis/redis.sock");

  for (const char* bad :
       {"", "http://x:1/0", "redis://", "redis://h:0/0", "redis://h:70000",
        "redis://h:1/x", "redis://h:1/2000", "redis://user:pw@h:1/0",
        "unix://relative.sock", "unix:///s?db=2", "redis://h :1/0",
        "redis://::1:6379/0"}) {
    auto r = ParseRedisUrl(bad, "--cluster");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--cluster:")) << bad;
  }
}

}  // namespace
}  // namespace jobd::cluster
