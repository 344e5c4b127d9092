#include "tests/integration/cluster_fixture.h"

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/jobd/v1/terminal.h"

namespace jobd::testing {

std::vector<std::string> ClusterArgs(const RedisServer& redis,
                                     const NodeConfig& config) {
  std::vector<std::string> args = {"--cluster", redis.url(), "--node-name",
                                   config.name};
  auto add = [&](const std::string& flag, const std::string& value) {
    if (std::find(config.extra.begin(), config.extra.end(), flag) ==
        config.extra.end()) {
      args.insert(args.end(), {flag, value});
    }
  };
  auto ms = [](absl::Duration d) {
    return absl::StrCat(absl::ToInt64Milliseconds(d), "ms");
  };
  add("--cluster-partitions", "4");
  add("--cluster-heartbeat", ms(kTestHeartbeat));
  add("--cluster-node-ttl", ms(kTestNodeTtl));
  add("--cluster-reaper-period", ms(kTestReaperPeriod));
  add("--thread-workers", std::to_string(config.threads));
  args.insert(args.end(), config.extra.begin(), config.extra.end());
  return args;
}

TestCluster::~TestCluster() {
  // The nodes before Redis: they stop without waiting on it.
  nodes_.clear();
}

std::vector<std::string> TestCluster::Args(const NodeConfig& config) const {
  std::vector<std::string> args = ClusterArgs(*redis_, config);
  if (std::find(args.begin(), args.end(), "--state-dir") == args.end()) {
    args.insert(args.end(), {"--state-dir", dir() + "/" + config.name});
  }
  return args;
}

absl::Status TestCluster::Launch(Node& node, int alive) {
  auto d = Daemon::Start(Args(node.config));
  if (!d.ok()) return d.status();
  node.daemon = *std::move(d);
  node.stub = node.daemon->NewStub();
  if (!Joined(*node.stub, alive)) {
    return absl::DeadlineExceededError(absl::StrCat(
        node.config.name, " did not see ", alive, " nodes alive in time"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> TestCluster::Add(NodeConfig config, int alive) {
  nodes_.push_back({std::move(config), nullptr, nullptr});
  if (absl::Status s = Launch(nodes_.back(), alive); !s.ok()) return s;
  return nodes_.size() - 1;
}

absl::Status TestCluster::Restart(size_t i, int alive) {
  Node& node = nodes_.at(i);
  node.stub.reset();
  node.daemon.reset();  // Killed already: nothing to stop.
  return Launch(node, alive);
}

absl::StatusOr<std::unique_ptr<TestCluster>> StartNodes(
    const std::string& prefix, std::vector<NodeConfig> nodes,
    std::vector<std::string> redis_args) {
  std::unique_ptr<TestCluster> c(new TestCluster());
  auto redis = RedisServer::Start(std::move(redis_args));
  if (!redis.ok()) return redis.status();
  c->redis_ = *std::move(redis);
  c->dir_ = std::make_unique<TempDir>(prefix);
  if (c->dir_->path().empty()) return absl::InternalError("no temp dir");
  c->ledger_ = c->dir_->path() + "/ledger";
  for (NodeConfig& n : nodes) {
    c->nodes_.push_back({std::move(n), nullptr, nullptr});
    auto d = Daemon::Start(c->Args(c->nodes_.back().config));
    if (!d.ok()) return d.status();
    c->nodes_.back().daemon = *std::move(d);
    c->nodes_.back().stub = c->nodes_.back().daemon->NewStub();
  }
  for (TestCluster::Node& n : c->nodes_) {
    if (!Joined(*n.stub, static_cast<int>(c->nodes_.size()))) {
      return absl::DeadlineExceededError(
          absl::StrCat(n.config.name, " did not see every node alive"));
    }
  }
  return c;
}

bool Joined(v1::JobService::Stub& stub, int nodes, absl::Duration limit) {
  return WaitFor(
      [&] {
        const v1::GetStatsResponse s = GetStats(stub);
        if (!s.has_cluster() || !s.cluster().redis_connected() ||
            s.cluster().node_epoch() == 0) {
          return false;
        }
        int alive = 0;
        for (const v1::ClusterNode& n : s.cluster().nodes()) alive += n.alive();
        return alive >= nodes;
      },
      limit);
}

v1::JobSpec Ledger(const std::string& path, const std::string& line, int ms,
                   v1::Delivery delivery) {
  v1::JobSpec s;
  s.set_task("ledger");
  s.set_kind(v1::JOB_KIND_IO_BOUND);
  s.set_executor(v1::EXECUTOR_THREAD);
  s.set_delivery(delivery);
  s.add_args()->set_string_value(path);
  s.add_args()->set_string_value(line);
  s.add_args()->set_number_value(ms);
  return s;
}

std::map<std::string, int> ReadLedger(const std::string& path) {
  std::map<std::string, int> runs;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) ++runs[line];
  return runs;
}

std::vector<v1::Job> JobsOn(v1::JobService::Stub& stub,
                            std::vector<v1::JobState> states) {
  grpc::ClientContext ctx;
  Deadline(ctx, absl::Seconds(10));
  v1::ListJobsRequest req;
  for (v1::JobState s : states) req.add_states(s);
  req.set_task("ledger");
  req.set_page_size(1000);
  v1::ListJobsResponse resp;
  EXPECT_TRUE(stub.ListJobs(&ctx, req, &resp).ok());
  return {resp.jobs().begin(), resp.jobs().end()};
}

std::map<std::string, std::vector<v1::JobEvent>> EndsByLine(
    const StreamResult& r, const std::vector<v1::JobSpec>& specs) {
  std::map<std::string, std::vector<v1::JobEvent>> ends;
  for (const v1::JobEvent& e : r.Terminal()) {
    const size_t i = static_cast<size_t>(e.client_tag()) - 1;
    if (i < specs.size()) ends[specs[i].args(1).string_value()].push_back(e);
  }
  return ends;
}

int64_t PendingOf(RedisClient& redis, int partitions,
                  const std::string& prefix) {
  int64_t n = 0;
  for (int p = 0; p < partitions; ++p) {
    // [count, min id, max id, [[consumer, count], ...]] (nil lists when
    // nothing is pending).
    auto r =
        redis.Query({"XPENDING", absl::StrCat("{jobd:p", p, "}:jobs"), "jobd"});
    if (!r.ok()) return -1;
    if (r->elements.size() != 4) continue;
    for (const RedisReply& c : r->elements[3].elements) {
      int64_t count = 0;
      if (c.elements.size() == 2 &&
          absl::StartsWith(c.elements[0].str, prefix) &&
          absl::SimpleAtoi(c.elements[1].str, &count)) {
        n += count;
      }
    }
  }
  return n;
}

std::vector<std::string> KeysOf(RedisClient& redis,
                                const std::string& pattern) {
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    // [next cursor, [key, ...]]; a cursor of 0 ends the scan.
    auto r = redis.Query({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    if (!r.ok() || r->elements.size() != 2) {
      ADD_FAILURE() << "SCAN MATCH " << pattern << ": "
                    << (r.ok() ? "not [cursor, keys]" : r.status().ToString());
      return keys;
    }
    cursor = r->elements[0].str;
    for (const RedisReply& key : r->elements[1].elements) {
      keys.push_back(key.str);
    }
  } while (cursor != "0");
  return keys;
}

v1::ClusterWork Work(v1::JobService::Stub& stub) {
  return GetStats(stub).cluster().work();
}

LoadStream::LoadStream(v1::JobService::Stub& stub,
                       std::vector<v1::JobSpec> specs, size_t batch,
                       uint32_t window)
    : n_(specs.size()) {
  {
    absl::MutexLock lock(&mu_);
    items_.resize(n_);
  }
  stream_ = stub.Submit(&ctx_);
  writer_ = std::thread([this, specs = std::move(specs), batch, window] {
    Write(std::move(specs), batch, window);
  });
  reader_ = std::thread([this] { Read(); });
}

LoadStream::~LoadStream() { Cancel(); }

void LoadStream::Write(std::vector<v1::JobSpec> specs, size_t batch,
                       uint32_t window) {
  for (size_t first = 0; first < specs.size(); first += batch) {
    v1::SubmitRequest req;
    if (first == 0) req.mutable_options()->set_window(window);
    for (size_t i = first; i < std::min(specs.size(), first + batch); ++i) {
      v1::SubmitItem* item = req.add_items();
      item->set_client_tag(i + 1);
      *item->mutable_spec() = std::move(specs[i]);
    }
    if (!stream_->Write(req)) return;  // The stream is over.
  }
  stream_->WritesDone();
}

void LoadStream::Read() {
  v1::SubmitResponse resp;
  while (stream_->Read(&resp)) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    for (const v1::JobEvent& e : resp.events()) {
      const size_t i = static_cast<size_t>(e.client_tag()) - 1;
      if (i >= items_.size()) continue;
      Item& item = items_[i];
      if (e.type() == v1::EVENT_TYPE_ACCEPTED) {
        item.job_id = e.job_id();
        item.accepted = now;
      } else if (v1::EndsSubmitItem(e.type())) {
        if (item.ends.empty()) {
          ++ended_;
          item.ended = now;
        }
        item.ends.push_back(e);
      }
    }
  }
  // Finish once the writer is done with the stream too.
  if (writer_.joinable()) writer_.join();
  grpc::Status status = stream_->Finish();
  absl::MutexLock lock(&mu_);
  status_ = std::move(status);
  over_ = true;
}

std::string Unended(const LoadStream& stream, v1::JobService::Stub& stub,
                    const RedisServer& redis, const std::string& node,
                    size_t max) {
  std::string out;
  auto client = RedisClient::Connect(redis.socket_path());
  const std::vector<LoadStream::Item> items = stream.items();
  size_t shown = 0;
  for (size_t i = 0; i < items.size() && shown < max; ++i) {
    const LoadStream::Item& item = items[i];
    if (!item.ends.empty()) continue;
    ++shown;
    absl::StrAppend(&out, "\n  tag ", i + 1, " job '", item.job_id, "'");
    if (item.job_id.empty()) continue;
    grpc::ClientContext ctx;
    Deadline(ctx, absl::Seconds(5));
    v1::GetJobRequest req;
    req.set_job_id(item.job_id);
    v1::Job job;
    if (grpc::Status st = stub.GetJob(&ctx, req, &job); st.ok()) {
      absl::StrAppend(&out, " ", v1::JobState_Name(job.state()));
    } else {
      absl::StrAppend(&out, " (GetJob: ", st.error_message(), ")");
    }
    if (!client.ok()) continue;
    const std::string number = item.job_id.substr(0, item.job_id.find('@'));
    for (const std::string& marker :
         KeysOf(**client,
                absl::StrCat("{jobd:p*}:pub:", node, ":", number, ":*"))) {
      auto entry = (*client)->Query({"GET", marker});
      if (!entry.ok()) continue;
      const std::string prefix = marker.substr(0, marker.find('}') + 2);
      absl::StrAppend(&out, "; ", marker, " = ", entry->str);
      auto range =
          (*client)->Query({"XRANGE", prefix + "jobs", entry->str, entry->str});
      if (range.ok()) {
        absl::StrAppend(
            &out, range->elements.empty() ? " (entry gone)" : " (entry there)");
      }
      auto pending = (*client)->Query(
          {"XPENDING", prefix + "jobs", "jobd", entry->str, entry->str, "1"});
      if (pending.ok() && !pending->elements.empty() &&
          pending->elements[0].elements.size() == 4) {
        absl::StrAppend(&out, " pending under ",
                        pending->elements[0].elements[1].str, ", delivered ",
                        pending->elements[0].elements[3].integer, " times");
      }
      auto done = (*client)->Query({"HGETALL", prefix + "done:" + entry->str});
      if (done.ok() && !done->elements.empty()) {
        absl::StrAppend(&out, " done:");
        for (const RedisReply& f : done->elements) {
          absl::StrAppend(&out, " ", f.str);
        }
      }
    }
  }
  return out;
}

bool LoadStream::Wait(absl::Duration limit) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ended_ == n_ || over_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), limit);
  return ended_ == n_;
}

size_t LoadStream::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

void LoadStream::Cancel() {
  ctx_.TryCancel();
  if (reader_.joinable()) reader_.join();
}

std::vector<LoadStream::Item> LoadStream::items() const {
  absl::MutexLock lock(&mu_);
  return items_;
}

grpc::Status LoadStream::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

}  // namespace jobd::testing
