// Test helpers for cluster mode with real processes: a redis-server
// (tests/redis/redis_server.h) and jobd nodes (daemon_harness.h) on Unix
// sockets, started together and waited for until every node sees all of
// them alive (StartNodes); the testing task `ledger`, which appends a line
// to a file as it begins (the file counts the runs); what a test reads of
// Redis itself (PendingOf, KeysOf); and LoadStream, many jobs on one
// Submit stream with every event they get back.
//
// Thread-safety: TestCluster is the test thread's; LoadStream runs a
// writer and a reader thread of its own and may be queried from any
// thread. Ownership: TestCluster owns Redis, the nodes and the temp
// directory (the ledger); LoadStream owns its stream and threads (its
// destructor cancels and joins them).
#ifndef JOBD_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
#define JOBD_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "jobd/v1/jobd.grpc.pb.h"
#include "tests/integration/daemon_harness.h"
#include "tests/redis/redis_client.h"
#include "tests/redis/redis_server.h"

namespace jobd::testing {

// The tests' timings (each unless a node's `extra` gives it): 200 ms
// heartbeat and reaper period, 1 s node TTL (a dead node's entries are
// reclaimed within 1.2 s of its last renewal), 4 partitions.
inline constexpr absl::Duration kTestHeartbeat = absl::Milliseconds(200);
inline constexpr absl::Duration kTestNodeTtl = absl::Seconds(1);
inline constexpr absl::Duration kTestReaperPeriod = absl::Milliseconds(200);

// One node of a TestCluster.
struct NodeConfig {
  std::string name;
  int threads = 1;                 // --thread-workers.
  std::vector<std::string> extra;  // More options; they win over defaults.
};

// jobd's options for `config` on `redis`.
std::vector<std::string> ClusterArgs(const RedisServer& redis,
                                     const NodeConfig& config);

class TestCluster {
 public:
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  RedisServer& redis() { return *redis_; }
  const std::string& dir() const { return dir_->path(); }
  const std::string& ledger() const { return ledger_; }  // dir()/ledger.
  size_t size() const { return nodes_.size(); }
  Daemon& daemon(size_t i) { return *nodes_.at(i).daemon; }
  v1::JobService::Stub& stub(size_t i) { return *nodes_.at(i).stub; }
  const NodeConfig& config(size_t i) const { return nodes_.at(i).config; }

  // Starts one more node and waits until it sees `alive` nodes alive.
  // Its index.
  absl::StatusOr<size_t> Add(NodeConfig config, int alive);
  // Starts node `i` again (after a kill) with the same options and
  // journal: a new incarnation (epoch) under the same name; waits as Add.
  absl::Status Restart(size_t i, int alive);

 private:
  friend absl::StatusOr<std::unique_ptr<TestCluster>> StartNodes(
      const std::string&, std::vector<NodeConfig>, std::vector<std::string>);
  struct Node {
    NodeConfig config;
    std::unique_ptr<Daemon> daemon;
    std::unique_ptr<v1::JobService::Stub> stub;
  };
  TestCluster() = default;
  // ClusterArgs, and the node's journal in dir()/<name> (a restart keeps
  // it) unless its `extra` names a --state-dir.
  std::vector<std::string> Args(const NodeConfig& config) const;
  absl::Status Launch(Node& node, int alive);

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<TempDir> dir_;
  std::string ledger_;
  std::vector<Node> nodes_;
};

// Starts a redis-server (with `redis_args` added), a temp directory named
// after `prefix` and `nodes`, and waits (20 s at most) until each node
// sees all of them alive.
absl::StatusOr<std::unique_ptr<TestCluster>> StartNodes(
    const std::string& prefix, std::vector<NodeConfig> nodes,
    std::vector<std::string> redis_args = {});

// True once `stub`'s node has joined and sees `nodes` nodes alive
// (bounded by `limit`).
bool Joined(v1::JobService::Stub& stub, int nodes,
            absl::Duration limit = absl::Seconds(20));

// A job of the testing task `ledger`: appends `line` to `path`, sleeps
// `ms`, returns `line`; on the thread pool.
v1::JobSpec Ledger(const std::string& path, const std::string& line, int ms,
                   v1::Delivery delivery = v1::DELIVERY_AT_MOST_ONCE);

// The runs that began, by line.
std::map<std::string, int> ReadLedger(const std::string& path);

// The `ledger` jobs in `states` (any if empty) that `stub`'s node holds.
std::vector<v1::Job> JobsOn(v1::JobService::Stub& stub,
                            std::vector<v1::JobState> states);

// The ends of a Submit stream's `ledger` jobs, by the line each appends.
std::map<std::string, std::vector<v1::JobEvent>> EndsByLine(
    const StreamResult& r, const std::vector<v1::JobSpec>& specs);

// Entries pending in the partition streams under the consumers whose name
// starts with `prefix` ("node-c:" for every incarnation of node-c), read
// from Redis itself; -1 if Redis did not answer.
int64_t PendingOf(RedisClient& redis, int partitions,
                  const std::string& prefix);

// The keys of `redis` that match the glob `pattern` (SCAN ... MATCH); a
// test failure, and those found so far, if Redis did not answer.
std::vector<std::string> KeysOf(RedisClient& redis, const std::string& pattern);

// The node's work sharing counters (GetStats).
v1::ClusterWork Work(v1::JobService::Stub& stub);

class LoadStream;
// What a failed wait shows: the first `max` jobs of `stream` (on the node
// `node` behind `stub`) without an end, each with its state there and
// what Redis holds of it (its publication marker, its entry, who holds
// that, its done set).
std::string Unended(const LoadStream& stream, v1::JobService::Stub& stub,
                    const RedisServer& redis, const std::string& node,
                    size_t max = 5);

// Many jobs on one Submit stream: written in messages of `batch` items
// (client tags 1..n) on one thread, while another reads every event and
// notes, per job, its id, when it was accepted and its ends, with the
// times they arrived (this process's clock).
class LoadStream {
 public:
  struct Item {
    std::string job_id;  // Once accepted.
    absl::Time accepted = absl::InfinitePast();
    std::vector<v1::JobEvent> ends;  // Its end, REJECTED included.
    absl::Time ended = absl::InfinitePast();
  };

  LoadStream(v1::JobService::Stub& stub, std::vector<v1::JobSpec> specs,
             size_t batch = 1000, uint32_t window = 0);
  ~LoadStream();
  LoadStream(const LoadStream&) = delete;
  LoadStream& operator=(const LoadStream&) = delete;

  // Waits until every job has ended or the stream is over (its node
  // died, or it ended it), up to `limit`; true if every job ended.
  bool Wait(absl::Duration limit);
  // Jobs ended so far.
  size_t ended() const;
  // Ends the stream from this side (its node was killed, say) and joins.
  void Cancel();
  // After Wait returned true, or Cancel: every job, by tag - 1.
  std::vector<Item> items() const;
  grpc::Status status() const;

 private:
  void Write(std::vector<v1::JobSpec> specs, size_t batch, uint32_t window);
  void Read();
  void Join();

  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitResponse>>
      stream_;
  const size_t n_;
  std::thread writer_, reader_;
  mutable absl::Mutex mu_;
  std::vector<Item> items_ ABSL_GUARDED_BY(mu_);
  size_t ended_ ABSL_GUARDED_BY(mu_) = 0;
  bool over_ ABSL_GUARDED_BY(mu_) = false;  // The reader is done.
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd::testing

#endif  // JOBD_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
