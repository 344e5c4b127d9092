#include "server/cluster/work_sharing.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "asio/post.hpp"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_id.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd::cluster {
namespace {

v1::Job ErrorEnd(v1::ErrorReason reason, std::string message) {
  v1::Job job;
  job.set_state(v1::JOB_STATE_FAILED);
  job.mutable_error()->set_reason(reason);
  job.mutable_error()->set_message(std::move(message));
  return job;
}

}  // namespace

WorkSharing::WorkSharing(asio::io_context& io,
                         std::shared_ptr<WorkStream> stream,
                         std::shared_ptr<RedisConnection> commands,
                         std::shared_ptr<RedisConnection> results,
                         std::shared_ptr<Membership> membership,
                         const ClusterOptions& options, Scheduler& scheduler,
                         MakeJob make_job)
    : io_(io),
      stream_(std::move(stream)),
      commands_(std::move(commands)),
      results_(std::move(results)),
      membership_(std::move(membership)),
      options_(options),
      scheduler_(scheduler),
      make_job_(std::move(make_job)),
      sink_(std::make_shared<EndSink>(io)),
      take_timer_(io),
      beat_timer_(io),
      reap_timer_(io),
      results_timer_(io) {
  for (int p = 0; p < options_.partitions; ++p) all_partitions_.push_back(p);
  results_after_.assign(all_partitions_.size(), "0");
}

WorkSharing::~WorkSharing() = default;

bool WorkSharing::Sharing() const {
  return ready_.load(std::memory_order_relaxed) && commands_->connected();
}

void WorkSharing::Publish(SharedJob job) {
  {
    absl::MutexLock lock(&mu_);
    if (unhooked_) return;  // Stays in the outbox for the next start.
    to_publish_.push_back(std::move(job));
    if (to_publish_.size() > 1) return;  // A drain is posted already.
  }
  asio::post(io_, [self = weak_from_this()] {
    if (auto s = self.lock()) s->DrainOutbox();
  });
}

void WorkSharing::Withdraw(uint64_t id, int64_t create_ns) {
  if (!withdraw_ || halted_.load()) return;
  asio::post(io_, [fn = withdraw_, p = PartitionOf(id), id, create_ns] {
    fn(p, id, create_ns);
  });
}

void WorkSharing::StopEntry(int partition, const std::string& entry) {
  for (const auto& [tag, held] : held_) {
    if (held.partition != partition || held.entry != entry) continue;
    if (held.local_id != 0) (void)scheduler_.Cancel(held.local_id);
    return;
  }
}

void WorkSharing::Start() {
  sink_->SetOnEnds([owner = weak_from_this()] {
    if (auto self = owner.lock()) self->OnEnds();
  });
  asio::post(io_, [self = shared_from_this()] {
    if (self->started_ || self->stopped_) return;
    self->started_ = true;
    if (self->commands_->connected()) self->Prepare();
    self->ArmTake(absl::ZeroDuration());
    self->ResultsLoop();
    self->Beat();
    self->Reclaim();
  });
}

void WorkSharing::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (unhooked_) return;
    unhooked_ = true;
  }
  halted_ = true;
  sink_->Detach();
  scheduler_.SetWorkShare(nullptr);
  ready_ = false;
  asio::post(io_, [self = shared_from_this()] {
    self->stopped_ = true;
    self->take_timer_.cancel();
    self->beat_timer_.cancel();
    self->reap_timer_.cancel();
    self->results_timer_.cancel();
  });
}

void WorkSharing::OnConnectionState(bool up) {
  if (!up) {
    ready_ = false;
    return;
  }
  if (started_ && !stopped_) Prepare();
}

std::string WorkSharing::ConsumerNow() const {
  const uint64_t epoch = membership_->Snapshot().epoch;
  if (epoch == 0) return {};
  return WorkStream::Consumer(options_.node_name, epoch);
}

int WorkSharing::PartitionOf(uint64_t id) const {
  return static_cast<int>(
      keys::Fnv1a(std::to_string(id), keys::Fnv1a(options_.node_name)) %
      static_cast<uint64_t>(options_.partitions));
}

void WorkSharing::Prepare() {
  if (preparing_ || stopped_) return;
  preparing_ = true;
  auto left = std::make_shared<int>(options_.partitions);
  auto failed = std::make_shared<bool>(false);
  for (int p : all_partitions_) {
    stream_->EnsureGroup(
        p, [self = shared_from_this(), left, failed](absl::StatusOr<bool> r) {
          if (!r.ok()) *failed = true;
          if (--*left > 0) return;
          self->preparing_ = false;
          if (*failed) {
            spdlog::warn(
                "cluster: could not create the partitions' groups; "
                "retrying at the next heartbeat");
            return;
          }
          self->ready_ = true;
          self->republish_ = true;  // What the outbox holds (a restart's).
          self->DrainOutbox();
        });
  }
}

void WorkSharing::DrainOutbox() {
  if (stopped_) return;
  std::deque<SharedJob> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(to_publish_);
  }
  if (republish_ && ready_) {
    republish_ = false;
    // Everything in the outbox now; publishing one twice is a no-op.
    for (SharedJob& job : scheduler_.Outbox()) jobs.push_back(std::move(job));
  }
  for (SharedJob& job : jobs) {
    // Once its outbox row is durable: the journal is this node's record of
    // it until Redis has it.
    const uint64_t ticket = job.ticket;
    scheduler_.WhenDurable(
        ticket,
        [self = weak_from_this(), job = std::move(job)](bool durable) mutable {
          if (!durable) return;  // Kept in the outbox for the next start.
          auto s = self.lock();
          // (Stopped: its io_context may be going; the job stays in the
          // outbox for the next start.)
          if (s == nullptr || s->halted_.load()) return;
          asio::post(s->io_, [s, job = std::move(job)]() mutable {
            s->PublishNow(std::move(job));
          });
        });
  }
}

void WorkSharing::PublishNow(SharedJob job) {
  if (stopped_) return;
  if (!Sharing()) {
    republish_ = true;
    return;
  }
  JobEntry entry;
  entry.origin = options_.node_name;
  entry.id = job.id;
  entry.create_ns = job.create_ns;
  entry.owner = std::move(job.owner);
  entry.spec = std::move(job.spec);
  const uint64_t id = job.id;
  const int64_t create_ns = job.create_ns;
  // Its marker lasts as long as its result would (--cluster-results-ttl).
  stream_->PublishJob(PartitionOf(id), entry, options_.results_ttl,
                      [self = shared_from_this(), id,
                       create_ns](absl::StatusOr<std::string> r) {
                        if (!r.ok()) {
                          self->republish_ =
                              true;  // Again at the next heartbeat.
                          return;
                        }
                        // Counted even when the job is no longer in
                        // the outbox: its end may have come back (taken,
                        // run, completed elsewhere) before this reply.
                        (void)self->scheduler_.MarkPublished(id, create_ns);
                        absl::MutexLock lock(&self->mu_);
                        ++self->stats_.published;
                      });
}

void WorkSharing::ArmTake(absl::Duration after, bool busy) {
  if (stopped_) return;
  take_busy_ = busy;
  take_timer_.expires_after(absl::ToChronoNanoseconds(after));
  take_timer_.async_wait(
      [self = shared_from_this(), armed = ++take_armed_](std::error_code ec) {
        // (A wait that had fired already when it was armed again is
        // queued anyway: one loop only.)
        if (ec || armed != self->take_armed_) return;
        self->take_busy_ = false;
        self->TakeLoop();
      });
}

void WorkSharing::TakeLoop() {
  if (stopped_) return;
  const std::string consumer = ConsumerNow();
  if (!Sharing() || consumer.empty()) return ArmTake(absl::Milliseconds(100));
  const int idle = scheduler_.IdleSlots();
  // No room: looked at again in 10 ms, or at once when a job taken here
  // ends (OnEnds).
  if (idle <= 0) return ArmTake(absl::Milliseconds(10), /*busy=*/true);
  // A reclaim the reaper could not do for want of a free slot comes
  // first: a dead node's entries are older than anything to take.
  if (reclaim_due_) {
    reclaim_due_ = false;
    return ReclaimFrom(0, consumer, idle, [self = shared_from_this()] {
      self->ArmTake(absl::ZeroDuration());
    });
  }
  // First what is there now, partition after partition (from a turning
  // start), at most `idle` in all; then, if there was nothing, wait.
  TakeNow(take_turn_, 0, consumer, std::min(idle, kMaxTake), 0);
  take_turn_ = (take_turn_ + 1) % static_cast<int>(all_partitions_.size());
}

void WorkSharing::TakeNow(int start, int tried, std::string consumer,
                          int budget, int got) {
  const int n = static_cast<int>(all_partitions_.size());
  if (stopped_) return;
  if (budget <= 0) return ArmTake(absl::ZeroDuration());
  if (tried == n) {
    if (got > 0) return ArmTake(absl::ZeroDuration());
    return TakeBlocking(std::move(consumer));
  }
  stream_->TakeNow(all_partitions_[(start + tried) % n], consumer, budget,
                   [self = shared_from_this(), start, tried, consumer, budget,
                    got](absl::StatusOr<std::vector<StreamEntry>> r) mutable {
                     if (!r.ok()) return self->ArmTake(absl::Milliseconds(100));
                     const int taken = static_cast<int>(r->size());
                     self->RunTaken(std::move(*r), consumer);
                     self->TakeNow(start, tried + 1, std::move(consumer),
                                   budget - taken, got + taken);
                   });
}

void WorkSharing::TakeBlocking(std::string consumer) {
  // Nothing anywhere: wait on every partition for one entry (COUNT is
  // per stream: entries arriving at once in several partitions may take
  // a few more than the free slots; they queue here).
  stream_->TakeAny(all_partitions_, consumer, 1, absl::Milliseconds(200),
                   [self = shared_from_this(),
                    consumer](absl::StatusOr<std::vector<StreamEntry>> r) {
                     if (!r.ok()) return self->ArmTake(absl::Milliseconds(100));
                     self->RunTaken(std::move(*r), consumer);
                     self->ArmTake(absl::ZeroDuration());
                   });
}

void WorkSharing::RunTaken(std::vector<StreamEntry> entries,
                           const std::string& consumer) {
  for (StreamEntry& e : entries) {
    // The slot seen free before the read may be gone (a blocking read
    // waits; local jobs came meanwhile): what cannot start here now is
    // given back, for a node that has room.
    if (scheduler_.IdleSlots() <= 0) {
      {
        absl::MutexLock lock(&mu_);
        ++stats_.released;
      }
      stream_->Release(e.partition, consumer, e.id, [](absl::StatusOr<Fence>) {
        // Not given back (Redis down): it stays pending
        // here and is reclaimed once idle.
      });
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      ++stats_.taken;
    }
    RunEntry(std::move(e), consumer, /*reclaimed=*/false);
  }
}

void WorkSharing::RunEntry(StreamEntry entry, const std::string& consumer,
                           bool reclaimed) {
  Held held;
  held.partition = entry.partition;
  held.entry = entry.id;
  held.consumer = consumer;
  held.origin = entry.origin;
  if (!absl::SimpleAtoi(entry.origin_id, &held.origin_id) ||
      !absl::SimpleAtoi(entry.create_ns, &held.create_ns) ||
      entry.origin.empty()) {
    // Not a job entry of ours: nobody waits for it. Acknowledged as a
    // dead letter so that it is not taken again.
    spdlog::warn(
        "cluster: entry {} of partition {} is not a job; "
        "dead-lettered",
        entry.id, entry.partition);
    held.origin = "unknown";
    CompleteEntry(held, ErrorEnd(v1::ERROR_REASON_INVALID_INPUT, "not a job"),
                  /*dead_letter=*/true);
    return;
  }
  v1::JobSpec spec;
  if (!spec.ParseFromString(entry.payload)) {
    CompleteEntry(
        held,
        ErrorEnd(v1::ERROR_REASON_INVALID_INPUT,
                 "its spec could not be read on node " + options_.node_name),
        /*dead_letter=*/true);
    return;
  }
  if (reclaimed) {
    if (options_.max_deliveries > 0 &&
        entry.deliveries > options_.max_deliveries) {
      {
        absl::MutexLock lock(&mu_);
        ++stats_.dead_lettered;
      }
      CompleteEntry(
          held,
          ErrorEnd(v1::ERROR_REASON_DEAD_LETTER,
                   fmt::format("delivered {} times (--cluster-max-deliveries "
                               "is {}): dead-lettered",
                               entry.deliveries, options_.max_deliveries)),
          /*dead_letter=*/true);
      return;
    }
    if (spec.delivery() != v1::DELIVERY_AT_LEAST_ONCE) {
      {
        absl::MutexLock lock(&mu_);
        ++stats_.lost;
      }
      CompleteEntry(held,
                    ErrorEnd(v1::ERROR_REASON_LOST_ON_RESTART,
                             "the node that held it stopped renewing it (dead "
                             "or cut off from Redis); an at-most-once job is "
                             "not run again"),
                    /*dead_letter=*/false);
      return;
    }
  }
  spec.clear_callback_url();  // Its node calls back, with its end.
  absl::StatusOr<NewJob> made = make_job_(std::move(spec));
  if (!made.ok()) {
    CompleteEntry(
        held,
        ErrorEnd(v1::ERROR_REASON_NODE_REFUSED,
                 fmt::format("node {} cannot run it: {}", options_.node_name,
                             std::string(made.status().message()))),
        /*dead_letter=*/false);
    return;
  }
  const uint64_t tag = next_tag_++;
  made->owner = entry.owner.empty() ? "anonymous" : entry.owner;
  made->foreign = true;
  made->tag = tag;
  held_.emplace(tag, held);
  std::vector<NewJob> jobs;
  jobs.push_back(*std::move(made));
  std::vector<Admission> admitted;
  scheduler_.Submit(jobs, Subscriber{.sink = sink_, .mask = kTerminalEvents},
                    admitted);
  if (admitted.empty() || !admitted[0].status.ok()) {
    held_.erase(tag);
    CompleteEntry(
        held,
        ErrorEnd(
            v1::ERROR_REASON_NODE_REFUSED,
            fmt::format("node {} could not admit it: {}", options_.node_name,
                        admitted.empty()
                            ? "no admission"
                            : std::string(admitted[0].status.message()))),
        /*dead_letter=*/false);
    return;
  }
  if (auto it = held_.find(tag); it != held_.end()) {
    it->second.local_id = admitted[0].job_id;
  }
}

void WorkSharing::OnEnds() {
  // A slot is free again: a take loop waiting for one goes on now.
  if (take_busy_) ArmTake(absl::ZeroDuration());
  for (auto& [tag, end] : sink_->Take()) {
    auto it = held_.find(tag);
    if (it == held_.end()) continue;  // Reclaimed from here: dropped.
    const Held held = std::move(it->second);
    held_.erase(it);
    v1::Job job;
    job.set_state(end->state);
    SetEnd(*end, &job);
    CompleteEntry(held, job, /*dead_letter=*/false);
  }
}

void WorkSharing::CompleteEntry(Held held, const v1::Job& end,
                                bool dead_letter) {
  v1::Job result = end;
  result.set_id(std::to_string(held.origin_id));
  result.mutable_create_time()->set_seconds(held.create_ns / 1000000000);
  result.mutable_create_time()->set_nanos(
      static_cast<int32_t>(held.create_ns % 1000000000));
  held.result = result.SerializeAsString();
  held.dead_letter = dead_letter;
  const uint64_t tag = next_tag_++;
  held_.insert_or_assign(tag, std::move(held));
  SendEnd(tag);
}

void WorkSharing::SendEnd(uint64_t tag) {
  auto it = held_.find(tag);
  if (it == held_.end() || it->second.sending || stopped_) return;
  Held& held = it->second;
  held.sending = true;
  stream_->CompleteJob(
      held.partition, held.consumer, held.entry, held.origin, held.result,
      held.dead_letter,
      [self = shared_from_this(), tag](absl::StatusOr<Fence> r) {
        auto it = self->held_.find(tag);
        if (it == self->held_.end()) return;  // Found reclaimed meanwhile.
        if (!r.ok()) {
          // Redis down (or the reply lost): still held, and sent again
          // at the next heartbeat. Sent twice, the second finds it not
          // pending: the first was done.
          it->second.sending = false;
          spdlog::warn(
              "cluster: could not complete entry {}: {}; again at the "
              "next heartbeat",
              it->second.entry, std::string(r.status().message()));
          return;
        }
        const Held held = std::move(it->second);
        self->held_.erase(it);
        absl::MutexLock lock(&self->mu_);
        if (*r == Fence::kDone) {
          ++self->stats_.completed;
        } else {
          ++self->stats_.refused;  // Reclaimed from here: dropped.
          spdlog::info(
              "cluster: the end of entry {} (job {} of {}) was "
              "refused: {}; dropped",
              held.entry, held.origin_id, held.origin,
              *r == Fence::kOwnedByAnother ? "another node holds it"
                                           : "it is not pending");
        }
      });
}

void WorkSharing::ResultsLoop() {
  if (stopped_) return;
  if (!results_->connected()) {
    results_timer_.expires_after(std::chrono::milliseconds(100));
    results_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec) self->ResultsLoop();
    });
    return;
  }
  WorkStream::ReadResults(
      *results_, all_partitions_, options_.node_name, results_after_,
      kResultsBatch, absl::Milliseconds(500),
      [self = shared_from_this()](absl::StatusOr<std::vector<StreamEntry>> r) {
        if (self->stopped_) return;
        if (!r.ok()) {
          self->results_timer_.expires_after(std::chrono::milliseconds(100));
          self->results_timer_.async_wait([self](std::error_code ec) {
            if (!ec) self->ResultsLoop();
          });
          return;
        }
        for (StreamEntry& e : *r) {
          self->results_after_[static_cast<size_t>(e.partition)] = e.id;
          v1::Job job;
          uint64_t id = 0;
          int64_t create_ns = 0;
          std::shared_ptr<JobEnd> end;
          // A bare number (this node's job), or a mirror's holder's
          // qualified id ("42@node").
          absl::StatusOr<JobRef> ref;
          if (job.ParseFromString(e.payload) &&
              (ref = ParseJobRef(job.id(), "id")).ok()) {
            id = ref->number;
            create_ns = job.create_time().seconds() * 1000000000 +
                        job.create_time().nanos();
            end = EndOfResult(job);
          }
          // A mirror's end (key_claims.h): the job here is named apart.
          const uint64_t holder = id;
          const std::string holder_node = ref.ok() ? ref->node : "";
          if (!e.for_job.empty()) {
            const std::pair<std::string, std::string> f =
                absl::StrSplit(e.for_job, ':');
            if (!absl::SimpleAtoi(f.first, &id) ||
                !absl::SimpleAtoi(f.second, &create_ns)) {
              id = 0;
            }
          }
          uint64_t ticket = 0;
          // (A mirror whose claim's answer is still on its way is held.)
          if (id != 0 && end != nullptr &&
              (self->scheduler_.EndShared(id, create_ns, end, &ticket) ||
               (!e.for_job.empty() &&
                self->scheduler_.ClaimLost(id, create_ns, holder, holder_node,
                                           end, &ticket)))) {
            absl::MutexLock lock(&self->mu_);
            ++self->stats_.results;
          }
          // Once the end is durable here, the result and the job's marker
          // go.
          std::vector<std::string> del = {
              "XDEL",
              WorkStream::ResultsKey(e.partition, self->options_.node_name),
              e.id};
          std::string marker = WorkStream::MarkerKey(
              e.partition, self->options_.node_name, id, create_ns);
          self->scheduler_.WhenDurable(
              ticket, [weak = self->weak_from_this(), del = std::move(del),
                       marker = std::move(marker)](bool durable) mutable {
                // On the journal's thread, perhaps after Stop (then the
                // result is read again at the next start).
                auto self = weak.lock();
                if (!durable || self == nullptr || self->halted_.load()) {
                  return;
                }
                self->commands_->Command(std::move(del),
                                         [](absl::StatusOr<RedisValue>) {});
                self->commands_->Command({"DEL", std::move(marker)},
                                         [](absl::StatusOr<RedisValue>) {});
              });
        }
        self->ResultsLoop();
      });
}

}  // namespace jobd::cluster
