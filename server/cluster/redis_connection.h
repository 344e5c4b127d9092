// RedisConnection: one connection to Redis through hiredis 0.14's async API
// (redisAsyncContext), driven by Asio. hiredis has no Asio adapter and owns
// its socket: this class fills the context's event hooks (addRead, delRead,
// addWrite, delWrite, cleanup) with readiness waits (`async_wait`) on an
// `asio::posix::stream_descriptor` wrapping hiredis's fd; it never reads,
// writes or closes that fd, and releases the descriptor (without closing
// it) when hiredis cleans up. Asio's epoll reactor is edge-triggered and a
// hiredis read or write may leave bytes behind, so before each wait the fd
// is polled (level-triggered, zero timeout) and, when ready, hiredis is
// called again at once (posted).
//
// Commands take their arguments as strings (binary-safe) and answer once,
// on the io_context's thread, with an owned RedisValue (hiredis's replies
// never escape) or a status: UNAVAILABLE when the connection is down or is
// lost before the reply (the command may or may not have run),
// RESOURCE_EXHAUSTED past the bounds of commands in flight, INTERNAL for a
// Redis error reply (its text in the message). While the connection is
// down commands fail at once, without waiting; while it is being
// established they are queued in hiredis and sent once it is up.
//
// Redis going away: the connection is re-established with exponential
// backoff and jitter (first_backoff doubling up to max_backoff). hiredis
// 0.14 has no command timeouts: a reply not received within reply_timeout
// (plus the command's own BLOCK time) drops the connection, failing every
// command in flight, and reconnects. Replies come in order on one
// connection, so a blocking read (XREADGROUP BLOCK) stalls what is behind
// it: blocking reads get a connection of their own.
//
// hiredis writes with write(2): a write to a connection Redis has just
// closed raises SIGPIPE, which the process must ignore (jobd's main does,
// as must a test that kills its Redis).
//
// Thread-safety: Start, Stop and Command may be called from any thread
// (they post to the io_context); everything else runs on the io_context's
// thread, which must be one thread (the readiness check relies on no other
// thread running epoll_wait between the poll and the wait). The accessors
// are atomics. Ownership: made shared (Create); pending handlers hold it.
// The owner calls Stop and lets the io_context run until it has no work
// left before destroying the io_context.
#ifndef JOBD_SERVER_CLUSTER_REDIS_CONNECTION_H_
#define JOBD_SERVER_CLUSTER_REDIS_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "server/cluster/redis_endpoint.h"
#include "server/cluster/redis_value.h"

struct redisAsyncContext;

namespace jobd::cluster {

struct RedisConnectionOptions {
  RedisEndpoint endpoint;
  std::string name = "redis";  // In log lines: which connection this is.
  absl::Duration first_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
  // A reply later than this (plus the command's BLOCK time) drops the
  // connection.
  absl::Duration reply_timeout = absl::Seconds(5);
  size_t max_in_flight = 10000;                   // Commands awaiting replies.
  size_t max_in_flight_bytes = size_t{64} << 20;  // Their arguments' bytes.
};

using RedisCallback = absl::AnyInvocable<void(absl::StatusOr<RedisValue>)>;

class RedisConnection : public std::enable_shared_from_this<RedisConnection> {
 public:
  static std::shared_ptr<RedisConnection> Create(
      asio::io_context& io, RedisConnectionOptions options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Called on the io thread each time the connection comes up (true) or
  // goes down (false). Set before Start.
  void SetStateListener(std::function<void(bool up)> listener) {
    listener_ = std::move(listener);
  }

  // Connects (and keeps reconnecting) until Stop.
  void Start();
  // Drops the connection for good: commands in flight and later ones fail
  // UNAVAILABLE. Idempotent.
  void Stop();

  // Sends `argv` (a command and its arguments); `done` runs once, on the io
  // thread. `block`: how long the command may legitimately wait in Redis
  // (its BLOCK argument), added to the reply timeout.
  void Command(std::vector<std::string> argv, RedisCallback done,
               absl::Duration block = absl::ZeroDuration());

  bool connected() const { return connected_.load(std::memory_order_relaxed); }
  // Times the connection came up (the first time included).
  uint64_t connects() const {
    return connects_.load(std::memory_order_relaxed);
  }
  const RedisConnectionOptions& options() const { return options_; }

 private:
  struct Watch;
  struct Pending;
  enum class State { kIdle, kBackoff, kConnecting, kConnected, kStopped };

  RedisConnection(asio::io_context& io, RedisConnectionOptions options);

  void Connect();
  void ScheduleReconnect(const std::string& why);
  void DoCommand(std::vector<std::string> argv, RedisCallback done,
                 absl::Duration block);
  void Fail(RedisCallback done, absl::Status status);
  absl::Time NextDeadline() const;
  void ArmWatchdog();
  void OnWatchdog();
  void SetUp(bool up);
  absl::Status Down(const std::string& why) const;

  // hiredis callbacks (C linkage-compatible statics).
  static void OnConnect(const redisAsyncContext* ac, int status);
  static void OnDisconnect(const redisAsyncContext* ac, int status);
  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata);
  // Event hooks.
  static void AddRead(void* data);
  static void DelRead(void* data);
  static void AddWrite(void* data);
  static void DelWrite(void* data);
  static void Cleanup(void* data);
  static void ArmRead(const std::shared_ptr<Watch>& w);
  static void ArmWrite(const std::shared_ptr<Watch>& w);

  // Const after construction.
  asio::io_context& io_;
  const RedisConnectionOptions options_;

  // The io thread's.
  State state_ = State::kIdle;
  redisAsyncContext* ctx_ = nullptr;
  std::shared_ptr<Watch> watch_;  // ctx_'s fd on Asio.
  asio::steady_timer backoff_timer_;
  asio::steady_timer watchdog_timer_;
  bool watchdog_armed_ = false;
  int failures_ = 0;  // Attempts failed since the last connect.
  std::string last_error_;
  // Deadlines of the commands in flight, in order (replies come in order).
  std::deque<absl::Time> deadlines_;
  absl::Time connect_deadline_;  // While connecting.
  size_t in_flight_bytes_ = 0;
  std::function<void(bool)> listener_;

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> connects_{0};
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_REDIS_CONNECTION_H_
