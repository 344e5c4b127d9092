#include "server/cluster/work_sharing.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "asio/post.hpp"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_id.h"
#include "server/jobs/proto_time.h"
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
      results_timer_(io),
      settle_timer_(io),
      note_timer_(io) {
  for (int p = 0; p < options_.partitions; ++p) all_partitions_.push_back(p);
  results_after_.assign(all_partitions_.size(), "0");
  reclaim_cursor_.assign(all_partitions_.size(), "0-0");
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
    // A drain is posted or waiting already (it takes jobs off only once
    // they are durable, and drains again if more are left).
    if (to_publish_.size() > 1) return;
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

void WorkSharing::HandBack(uint64_t id) {
  absl::MutexLock lock(&mu_);
  handed_back_.insert(id);
}

void WorkSharing::StopEntry(int partition, const std::string& entry,
                            int index) {
  for (const auto& [tag, held] : held_) {
    if (held.partition != partition || held.entry != entry ||
        held.index != index) {
      continue;
    }
    if (held.local_id != 0) {
      (void)scheduler_.Cancel(held.local_id);
    } else if (held.unbegun) {  // Waiting here, not admitted: ends now.
      Held stopped = held;
      const uint64_t stopped_tag = tag;
      held_.erase(stopped_tag);
      stopped.unbegun = false;
      v1::Job end;
      end.set_state(v1::JOB_STATE_CANCELLED);
      end.mutable_error()->set_reason(v1::ERROR_REASON_CANCELLED);
      end.mutable_error()->set_message("withdrawn by its node before it began");
      CompleteEntry(std::move(stopped), end, /*dead_letter=*/false);
    }
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
    self->note_timer_.cancel();
    self->settle_timer_.cancel();
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
  if (stopped_ || drain_waiting_) return;  // The waiting drain goes on.
  // Published together (packed), once the last one's outbox row is
  // durable, and with it every earlier one's (the journal is this node's
  // record of them until Redis has them). The jobs stay in to_publish_
  // meanwhile: those handed over until then whose rows are in the same
  // commit (the rest of a Submit message, say) go in the same packs.
  std::vector<SharedJob> again;
  const bool republish = republish_ && ready_;
  if (republish) {
    republish_ = false;
    // Everything in the outbox now; publishing one twice is a no-op. (Read
    // first: a job there whose row is not durable yet is in to_publish_
    // too, handed over under the same lock, and waited for below.)
    again = scheduler_.Outbox();
  }
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    if (to_publish_.empty() && !republish) return;
    for (const SharedJob& job : to_publish_) {
      ticket = std::max(ticket, job.ticket);
    }
  }
  drain_waiting_ = true;
  scheduler_.WhenDurable(
      ticket, [self = weak_from_this(), ticket,
               again = std::move(again)](bool durable) mutable {
        auto s = self.lock();
        // (Stopped: its io_context may be going; the jobs stay in the
        // outbox for the next start.)
        if (s == nullptr || s->halted_.load()) return;
        asio::post(s->io_,
                   [s, ticket, durable, again = std::move(again)]() mutable {
                     s->drain_waiting_ = false;
                     s->PublishNow(std::move(again), ticket, durable);
                   });
      });
}

void WorkSharing::PublishNow(std::vector<SharedJob> jobs, uint64_t durable,
                             bool ok) {
  if (stopped_) return;
  bool more;
  {
    absl::MutexLock lock(&mu_);
    std::deque<SharedJob> later;
    for (SharedJob& job : to_publish_) {
      if (job.ticket > durable) {
        later.push_back(std::move(job));
      } else if (ok) {
        jobs.push_back(std::move(job));
      }
      // (Not durable, the journal failed: kept in the outbox for the next
      // start.)
    }
    to_publish_.swap(later);
    more = !to_publish_.empty();
  }
  if (more) DrainOutbox();  // Handed over since, in a later commit.
  if (!ok || jobs.empty()) return;
  if (!Sharing()) {
    republish_ = true;
    return;
  }
  // By partition, in packs of at most --cluster-pack.
  std::vector<std::vector<JobEntry>> packs(all_partitions_.size());
  for (SharedJob& job : jobs) {
    const int p = PartitionOf(job.id);
    std::vector<JobEntry>& pack = packs[static_cast<size_t>(p)];
    pack.push_back(JobEntry{.origin = options_.node_name,
                            .id = job.id,
                            .create_ns = job.create_ns,
                            .owner = std::move(job.owner),
                            .spec = std::move(job.spec)});
    if (static_cast<int>(pack.size()) >= options_.pack) {
      PublishPack(p, std::exchange(pack, {}));
    }
  }
  for (size_t i = 0; i < packs.size(); ++i) {
    if (!packs[i].empty()) PublishPack(all_partitions_[i], std::move(packs[i]));
  }
}

void WorkSharing::PublishPack(int partition, std::vector<JobEntry> pack) {
  if (stopped_) return;
  std::vector<std::pair<uint64_t, int64_t>> ids;
  ids.reserve(pack.size());
  for (const JobEntry& job : pack) ids.emplace_back(job.id, job.create_ns);
  // Their markers last as long as their results would
  // (--cluster-results-ttl).
  stream_->PublishJobs(partition, pack, options_.results_ttl,
                       [self = shared_from_this(),
                        ids = std::move(ids)](absl::StatusOr<std::string> r) {
                         if (!r.ok()) {
                           self->republish_ =
                               true;  // Again at the next heartbeat.
                           return;
                         }
                         // Marked even when a job is no longer in the outbox:
                         // its end may have come back (taken, run, completed
                         // elsewhere) before this reply.
                         for (const auto& [id, create_ns] : ids) {
                           (void)self->scheduler_.MarkPublished(id, create_ns);
                         }
                         absl::MutexLock lock(&self->mu_);
                         self->stats_.published += ids.size();
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
  if (stopped_ || settling_) return;
  const std::string consumer = ConsumerNow();
  if (!Sharing() || consumer.empty()) return ArmTake(absl::Milliseconds(100));
  // Jobs taken here that wait to begin go first: nothing more is taken
  // while some wait for a slot (while only marks are in flight, more may
  // be: so that marks and takes overlap for short jobs).
  StartUnbegun();
  const int idle = unbegun_.empty() ? scheduler_.IdleSlots() : 0;
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
  // start), for at most `idle` jobs in all; then, if there was nothing,
  // wait.
  TakeNow(take_turn_, 0, consumer, idle, 0);
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
  // As many entries as hold about `budget` jobs, by the last ones seen.
  const int entries =
      std::clamp(budget / std::max(1, jobs_per_entry_), 1, kMaxTake);
  ++reads_;
  stream_->TakeNow(all_partitions_[(start + tried) % n], consumer, entries,
                   [self = shared_from_this(), start, tried, consumer, budget,
                    got](absl::StatusOr<std::vector<StreamEntry>> r) mutable {
                     --self->reads_;
                     if (!r.ok()) return self->ArmTake(absl::Milliseconds(100));
                     const int taken =
                         self->RunTaken(std::move(*r), consumer, budget);
                     self->TakeNow(start, tried + 1, std::move(consumer),
                                   budget - taken, got + taken);
                   });
}

void WorkSharing::TakeBlocking(std::string consumer) {
  // Nothing anywhere: wait on every partition for one entry (COUNT is
  // per stream: entries arriving at once in several partitions may take
  // a few more jobs than the free slots; they queue here).
  ++reads_;
  stream_->TakeAny(all_partitions_, consumer, 1, absl::Milliseconds(200),
                   [self = shared_from_this(),
                    consumer](absl::StatusOr<std::vector<StreamEntry>> r) {
                     --self->reads_;
                     if (!r.ok()) return self->ArmTake(absl::Milliseconds(100));
                     (void)self->RunTaken(std::move(*r), consumer,
                                          std::numeric_limits<int>::max());
                     self->ArmTake(absl::ZeroDuration());
                   });
}

int WorkSharing::RunTaken(std::vector<StreamEntry> entries,
                          const std::string& consumer, int room) {
  int ran = 0;
  size_t jobs = 0;
  for (StreamEntry& e : entries) {
    jobs += e.jobs.size();
    // The slots seen free before the read may be gone (a blocking read
    // waits; local jobs came meanwhile), or taken by the entries before
    // it: what cannot start here now is given back, for a node that has
    // room. An entry is run whole (what of it cannot start queues here).
    if (ran >= room || scheduler_.IdleSlots() <= 0) {
      // Held (renewed) until Redis took it back: a give-back that met
      // Redis down is sent again at the next heartbeat.
      for (const PackedJob& packed : e.jobs) {
        GiveBack(Held{.partition = e.partition,
                      .entry = e.id,
                      .index = packed.index,
                      .count = std::max(1, e.count),
                      .consumer = consumer,
                      .origin = e.origin});
      }
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      stats_.taken += e.jobs.size();
    }
    ran += static_cast<int>(e.jobs.size());
    RunEntry(std::move(e), consumer, /*reclaimed=*/false);
  }
  if (!entries.empty()) {
    jobs_per_entry_ = std::max<int>(1, static_cast<int>(jobs / entries.size()));
  }
  return ran;
}

void WorkSharing::RunEntry(StreamEntry entry, const std::string& consumer,
                           bool reclaimed) {
  Held base;
  base.partition = entry.partition;
  base.entry = entry.id;
  base.consumer = consumer;
  base.origin = entry.origin;
  base.count = std::max(1, entry.count);
  if (entry.origin.empty() || entry.count <= 0) {
    // Not a job entry of ours: nobody waits for it. Acknowledged as a
    // dead letter so that it is not taken again.
    spdlog::warn(
        "cluster: entry {} of partition {} is not a job; "
        "dead-lettered",
        entry.id, entry.partition);
    base.origin = "unknown";
    base.count = 1;
    CompleteEntry(base, ErrorEnd(v1::ERROR_REASON_INVALID_INPUT, "not a job"),
                  /*dead_letter=*/true);
    return;
  }
  // Past --cluster-max-deliveries every job of the entry is dead-lettered.
  const bool dead = reclaimed && options_.max_deliveries > 0 &&
                    entry.deliveries > options_.max_deliveries;
  // Reclaimed from this node's own earlier consumer (it lost its lease
  // and joined again while its jobs ran): the jobs still held here go on
  // under the new consumer, rather than run twice.
  absl::flat_hash_set<int> here;
  if (reclaimed) {
    for (auto& [tag, held] : held_) {
      if (held.partition == entry.partition && held.entry == entry.id) {
        held.consumer = consumer;
        here.insert(held.index);
      }
    }
  }
  std::vector<NewJob> jobs;
  std::vector<uint64_t> tags;
  for (PackedJob& packed : entry.jobs) {
    if (here.contains(packed.index)) continue;
    Held held = base;
    held.index = packed.index;
    if (!absl::SimpleAtoi(packed.id, &held.origin_id) ||
        !absl::SimpleAtoi(packed.create_ns, &held.create_ns)) {
      spdlog::warn("cluster: job {} of entry {} of partition {} is not a job",
                   packed.index, entry.id, entry.partition);
      CompleteEntry(held, ErrorEnd(v1::ERROR_REASON_INVALID_INPUT, "not a job"),
                    /*dead_letter=*/true);
      continue;
    }
    v1::JobSpec spec;
    if (!spec.ParseFromString(packed.spec)) {
      CompleteEntry(
          held,
          ErrorEnd(v1::ERROR_REASON_INVALID_INPUT,
                   "its spec could not be read on node " + options_.node_name),
          /*dead_letter=*/true);
      continue;
    }
    if (dead) {
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
      continue;
    }
    // An at-most-once job of an entry of several is marked begun before
    // it starts (StartUnbegun); one alone in its entry is begun once taken.
    const bool at_most_once = spec.delivery() != v1::DELIVERY_AT_LEAST_ONCE;
    const bool marked = base.count > 1;
    if (reclaimed && at_most_once &&
        (!marked || absl::c_linear_search(entry.begun, packed.index))) {
      {
        absl::MutexLock lock(&mu_);
        ++stats_.lost;
      }
      CompleteEntry(held,
                    ErrorEnd(v1::ERROR_REASON_LOST_ON_RESTART,
                             "the node that held it stopped renewing it (dead "
                             "or cut off from Redis) when it may have begun; "
                             "an at-most-once job is not run again"),
                    /*dead_letter=*/false);
      continue;
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
      continue;
    }
    const uint64_t tag = next_tag_++;
    made->owner = packed.owner.empty() ? "anonymous" : packed.owner;
    made->foreign = true;
    made->tag = tag;
    held.unbegun = at_most_once && marked;
    held_.emplace(tag, std::move(held));
    if (at_most_once && marked) {
      unbegun_.emplace_back(tag, *std::move(made));
      continue;
    }
    jobs.push_back(*std::move(made));
    tags.push_back(tag);
  }
  if (!jobs.empty()) Admit(std::move(jobs), std::move(tags));
  StartUnbegun();
}

void WorkSharing::StartUnbegun() {
  if (stopped_ || marking_ > 0 || unbegun_.empty()) return;
  if (settling_ || scheduler_.draining()) {
    // Never begun here: for another node, at once.
    for (auto& [tag, job] : unbegun_) {
      auto it = held_.find(tag);
      if (it == held_.end() || !it->second.unbegun) continue;
      Held held = std::move(it->second);
      held_.erase(it);
      held.unbegun = false;
      GiveBack(std::move(held));
    }
    unbegun_.clear();
    return;
  }
  // As many as there are free slots, one script per entry.
  struct Group {
    std::vector<int> indexes;
    std::vector<std::pair<uint64_t, NewJob>> jobs;
  };
  std::map<std::tuple<int, std::string, std::string>, Group> groups;
  for (int room = scheduler_.IdleSlots() + MarkAhead();
       room > 0 && !unbegun_.empty();) {
    auto [tag, job] = std::move(unbegun_.front());
    unbegun_.pop_front();
    auto it = held_.find(tag);
    if (it == held_.end() || !it->second.unbegun) continue;
    const Held& held = it->second;
    Group& group = groups[{held.partition, held.entry, held.consumer}];
    group.indexes.push_back(held.index);
    group.jobs.emplace_back(tag, std::move(job));
    --room;
  }
  for (auto& [key, group] : groups) {
    const auto& [partition, entry, consumer] = key;
    ++marking_;
    stream_->MarkBegun(
        partition, consumer, entry, group.indexes,
        [self = shared_from_this(), partition = partition, entry = entry,
         consumer = consumer, jobs = std::move(group.jobs),
         ends = ends_](absl::StatusOr<Fence> fence) mutable {
          --self->marking_;
          if (self->stopped_) return;
          self->ends_per_mark_ +=
              (static_cast<double>(self->ends_ - ends) - self->ends_per_mark_) /
              4;
          if (fence.ok() && *fence != Fence::kDone) {
            // Not pending under `consumer` any more. Reclaimed by this node
            // itself, under its new consumer (it lost its lease and joined
            // again: RunEntry kept its jobs): they wait to be marked under
            // that one. By another node: never begun here, dropped.
            for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
              auto held = self->held_.find(it->first);
              if (held != self->held_.end() && held->second.unbegun &&
                  held->second.consumer != consumer) {
                self->unbegun_.push_front(std::move(*it));
              }
            }
            self->DropEntry(partition, entry, consumer);
            return self->StartUnbegun();
          }
          // Redis did not answer: they wait at the front, again soon (the
          // take loop's next look, or the next heartbeat). Marked, but the
          // node began to drain or stop meanwhile: given back all the same
          // (StartUnbegun).
          const bool stopping = self->settling_ || self->scheduler_.draining();
          if (!fence.ok() || stopping) {
            for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
              self->unbegun_.push_front(std::move(*it));
            }
            if (stopping) self->StartUnbegun();
            return;
          }
          std::vector<NewJob> admit;
          std::vector<uint64_t> tags;
          for (auto& [tag, job] : jobs) {
            auto it = self->held_.find(tag);
            if (it == self->held_.end() || !it->second.unbegun) continue;
            it->second.unbegun = false;
            admit.push_back(std::move(job));
            tags.push_back(tag);
          }
          if (!admit.empty()) self->Admit(std::move(admit), std::move(tags));
          self->StartUnbegun();
        });
  }
}

int WorkSharing::MarkAhead() const {
  return static_cast<int>(std::min<double>(2 * ends_per_mark_, kMaxMarkAhead));
}

void WorkSharing::Admit(std::vector<NewJob> jobs, std::vector<uint64_t> tags) {
  std::vector<Admission> admitted;
  // Its start and progress too: noted to its origin (SendNotes).
  scheduler_.Submit(
      jobs,
      Subscriber{.sink = sink_,
                 .mask = kTerminalEvents | EventBit(v1::EVENT_TYPE_STARTED) |
                         EventBit(v1::EVENT_TYPE_PROGRESS)},
      admitted);
  for (size_t i = 0; i < tags.size(); ++i) {
    auto it = held_.find(tags[i]);
    if (it == held_.end()) continue;  // Ended already.
    if (i < admitted.size() && admitted[i].status.ok()) {
      it->second.local_id = admitted[i].job_id;
      runs_here_.Set(absl::StrCat(it->second.origin, ":", it->second.origin_id,
                                  ":", it->second.create_ns),
                     admitted[i].job_id);
      continue;
    }
    Held held = std::move(it->second);
    held_.erase(it);
    if (scheduler_.draining()) {
      GiveBack(std::move(held));  // This node drains: for another node.
      continue;
    }
    CompleteEntry(
        std::move(held),
        ErrorEnd(
            v1::ERROR_REASON_NODE_REFUSED,
            fmt::format("node {} could not admit it: {}", options_.node_name,
                        i < admitted.size()
                            ? std::string(admitted[i].status.message())
                            : "no admission")),
        /*dead_letter=*/false);
  }
}

void WorkSharing::OnEnds() {
  // A slot is free again: a job waiting for its begun mark, or a take
  // loop waiting for one, goes on now.
  StartUnbegun();
  if (take_busy_) ArmTake(absl::ZeroDuration());
  for (EndSink::Item& item : sink_->Take()) {
    const uint64_t tag = item.tag;
    auto it = held_.find(tag);
    if (it == held_.end()) continue;  // Reclaimed from here: dropped.
    if (item.end == nullptr) {        // Its start or progress: a note, soon.
      if (item.type == v1::EVENT_TYPE_STARTED) {
        it->second.start_ns = absl::ToUnixNanos(item.time);
      } else {
        it->second.progress = std::move(item.progress);
      }
      noting_.insert(tag);
      if (!note_armed_) {
        note_armed_ = true;
        note_timer_.expires_after(absl::ToChronoNanoseconds(kNoteDelay));
        note_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
          self->note_armed_ = false;
          if (!ec && !self->stopped_) self->SendNotes();
        });
      }
      continue;
    }
    const std::shared_ptr<JobEnd> end = std::move(item.end);
    Held held = std::move(it->second);
    held_.erase(it);
    ++ends_;
    bool back;
    {
      absl::MutexLock lock(&mu_);
      back = handed_back_.erase(held.local_id) > 0;
    }
    if (back) {
      GiveBack(std::move(held));  // Not run here after all.
      continue;
    }
    v1::Job job;
    job.set_state(end->state);
    SetEnd(*end, &job);
    CompleteEntry(held, job, /*dead_letter=*/false);
  }
}

void WorkSharing::SendNotes() {
  std::map<std::string, v1::ListJobsResponse> by_origin;
  for (uint64_t tag : noting_) {
    auto it = held_.find(tag);
    // Ended meanwhile (its end carries its start), or given back.
    if (it == held_.end() || !it->second.result.empty() ||
        it->second.give_back || it->second.start_ns == 0) {
      continue;
    }
    const Held& held = it->second;
    v1::Job& job = *by_origin[held.origin].add_jobs();
    job.set_id(std::to_string(held.origin_id));
    *job.mutable_create_time() =
        ToProtoTime(absl::FromUnixNanos(held.create_ns));
    job.set_state(v1::JOB_STATE_RUNNING);
    *job.mutable_start_time() = ToProtoTime(absl::FromUnixNanos(held.start_ns));
    if (held.progress != nullptr) *job.mutable_progress() = *held.progress;
  }
  noting_.clear();
  if (!notify_) return;
  for (auto& [origin, jobs] : by_origin) {
    notify_(origin, jobs.SerializeAsString());
  }
}

void WorkSharing::CompleteEntry(Held held, const v1::Job& end,
                                bool dead_letter) {
  v1::Job result = end;
  result.set_id(std::to_string(held.origin_id));
  *result.mutable_create_time() =
      ToProtoTime(absl::FromUnixNanos(held.create_ns));
  // Its origin tells its clients it started (if no note did).
  if (held.start_ns != 0) {
    *result.mutable_start_time() =
        ToProtoTime(absl::FromUnixNanos(held.start_ns));
  }
  held.result = result.SerializeAsString();
  held.dead_letter = dead_letter;
  const uint64_t tag = next_tag_++;
  held_.insert_or_assign(tag, std::move(held));
  to_send_.push_back(tag);
  PostSendEnds();
}

void WorkSharing::GiveBack(Held held) {
  held.give_back = true;
  const uint64_t tag = next_tag_++;
  held_.insert_or_assign(tag, std::move(held));
  SendAgain(tag);
}

void WorkSharing::SendAgain(uint64_t tag) {
  held_.at(tag).sending = false;
  to_send_.push_back(tag);
  PostSendEnds();
}

void WorkSharing::PostSendEnds() {
  // Sent with the other ends of this moment, in one script per partition.
  if (send_posted_) return;
  send_posted_ = true;
  asio::post(io_, [self = shared_from_this()] {
    self->send_posted_ = false;
    self->SendEnds();
  });
}

void WorkSharing::SendEnds() {
  if (stopped_) return;
  std::map<std::pair<int, std::string>, std::vector<uint64_t>> groups;
  // Give-backs: one script per entry.
  std::map<std::tuple<int, std::string, std::string>, std::vector<uint64_t>>
      backs;
  for (uint64_t tag : std::exchange(to_send_, {})) {
    auto it = held_.find(tag);
    if (it == held_.end() || it->second.sending ||
        (it->second.result.empty() && !it->second.give_back)) {
      continue;
    }
    it->second.sending = true;
    if (it->second.give_back) {
      backs[{it->second.partition, it->second.consumer, it->second.entry}]
          .push_back(tag);
      continue;
    }
    std::vector<uint64_t>& group =
        groups[{it->second.partition, it->second.consumer}];
    group.push_back(tag);
    if (group.size() >= static_cast<size_t>(kCompleteBatch)) {
      SendEndChunk(it->second.partition, it->second.consumer,
                   std::exchange(group, {}));
    }
  }
  for (auto& [key, tags] : groups) {
    if (!tags.empty()) SendEndChunk(key.first, key.second, std::move(tags));
  }
  for (auto& [key, tags] : backs) {
    auto& [partition, consumer, entry] = key;
    SendGiveBack(partition, consumer, entry, std::move(tags));
  }
}

void WorkSharing::SendGiveBack(int partition, std::string consumer,
                               std::string entry, std::vector<uint64_t> tags) {
  std::vector<int> indexes;
  indexes.reserve(tags.size());
  for (uint64_t tag : tags) indexes.push_back(held_.at(tag).index);
  stream_->Release(
      partition, consumer, entry, indexes,
      [self = shared_from_this(), partition, entry, consumer,
       tags = std::move(tags)](absl::StatusOr<Fence> r) {
        if (!r.ok()) {
          // Redis down: given back at the next heartbeat (or, stopped by
          // then, its entry is reclaimed once idle).
          spdlog::warn(
              "cluster: could not give back {} job(s) of entry {}: {}; again "
              "at the next heartbeat",
              tags.size(), entry, std::string(r.status().message()));
          for (uint64_t tag : tags) {
            auto it = self->held_.find(tag);
            if (it != self->held_.end()) it->second.sending = false;
          }
          return;
        }
        size_t forgotten = 0;
        for (uint64_t tag : tags) {
          auto it = self->held_.find(tag);
          if (it == self->held_.end()) continue;
          if (*r != Fence::kDone && it->second.consumer != consumer) {
            self->SendAgain(tag);  // Re-pointed to the new consumer: as it.
            continue;
          }
          self->held_.erase(it);
          ++forgotten;
        }
        if (*r == Fence::kDone) {
          spdlog::debug(
              "cluster: gave back {} job(s) of entry {} of "
              "partition {}",
              forgotten, entry, partition);
          absl::MutexLock lock(&self->mu_);
          self->stats_.released += forgotten;
        }
        // Otherwise reclaimed from here meanwhile: the reclaimer has them.
      });
}

bool WorkSharing::Unsettled() const {
  // A read in flight may deliver entries, pending here at once in Redis.
  // Jobs waiting to begin are given back first (StartUnbegun).
  if (!to_send_.empty() || send_posted_ || reads_ > 0 || marking_ > 0 ||
      !unbegun_.empty()) {
    return true;
  }
  for (const auto& [tag, held] : held_) {
    if (!held.result.empty() || held.give_back) return true;
  }
  return false;
}

void WorkSharing::Settle(std::function<void(bool)> done) {
  asio::post(io_, [self = shared_from_this(), done = std::move(done)] {
    self->settling_ = true;  // No new take or reclaim from now on.
    self->OnEnds();  // Ends the sink holds now; what waits to begin goes back.
    self->SettleLoop(std::move(done));
  });
}

void WorkSharing::SettleLoop(std::function<void(bool)> done) {
  if (stopped_ || !commands_->connected()) return done(!Unsettled());
  if (!Unsettled()) return done(true);
  settle_timer_.expires_after(std::chrono::milliseconds(5));
  settle_timer_.async_wait(
      [self = shared_from_this(), done = std::move(done)](std::error_code ec) {
        if (ec) return done(false);
        self->SettleLoop(std::move(done));
      });
}

void WorkSharing::SendEndChunk(int partition, std::string consumer,
                               std::vector<uint64_t> tags) {
  std::vector<Completion> ends;
  ends.reserve(tags.size());
  for (uint64_t tag : tags) {
    const Held& held = held_.at(tag);
    ends.push_back(Completion{.entry = held.entry,
                              .index = held.index,
                              .count = held.count,
                              .origin = held.origin,
                              .result = held.result,
                              .dead_letter = held.dead_letter});
  }
  stream_->CompleteJobs(
      partition, consumer, ends,
      [self = shared_from_this(), consumer,
       tags = std::move(tags)](absl::StatusOr<std::vector<Fence>> r) {
        if (!r.ok()) {
          // Redis down (or the reply lost): still held, and sent again
          // at the next heartbeat. Sent twice, the second finds it not
          // pending, or done in its entry's set: the first was done.
          spdlog::warn(
              "cluster: could not complete {} job(s): {}; again at the "
              "next heartbeat",
              tags.size(), std::string(r.status().message()));
          for (uint64_t tag : tags) {
            auto it = self->held_.find(tag);
            if (it != self->held_.end()) it->second.sending = false;
          }
          return;
        }
        for (size_t i = 0; i < tags.size(); ++i) {
          auto it = self->held_.find(tags[i]);
          if (it == self->held_.end()) continue;  // Found reclaimed meanwhile.
          if ((*r)[i] != Fence::kDone && it->second.consumer != consumer) {
            // Its entry went to this node's new consumer meanwhile (this
            // node reclaimed it from its own old epoch): sent again as it.
            self->SendAgain(tags[i]);
            continue;
          }
          const Held held = std::move(it->second);
          self->held_.erase(it);
          absl::MutexLock lock(&self->mu_);
          if ((*r)[i] == Fence::kDone) {
            ++self->stats_.completed;
            continue;
          }
          ++self->stats_.refused;  // Reclaimed from here: dropped.
          spdlog::info(
              "cluster: the end of job {} of {} (entry {}) was refused: {}; "
              "dropped",
              held.origin_id, held.origin, held.entry,
              (*r)[i] == Fence::kOwnedByAnother ? "another node holds it"
                                                : "it is not pending");
        }
      });
}

uint64_t WorkSharing::RunOf(const std::string& origin, uint64_t id,
                            int64_t create_ns) const {
  const uint64_t* local =
      runs_here_.Find(absl::StrCat(origin, ":", id, ":", create_ns));
  return local == nullptr ? 0 : *local;
}

void WorkSharing::Locate(
    uint64_t id, int64_t create_ns,
    std::function<void(absl::StatusOr<std::string>)> done) {
  if (const std::string* node = ran_at_.Find(id)) return done(*node);
  stream_->Holder(PartitionOf(id), options_.node_name, id, create_ns,
                  [done = std::move(done)](absl::StatusOr<std::string> r) {
                    if (!r.ok()) return done(r.status());
                    // The consumer is "<node>:<epoch>".
                    done(r->substr(0, r->rfind(':')));
                  });
}

void WorkSharing::DropEntry(int partition, const std::string& entry,
                            const std::string& consumer) {
  std::vector<uint64_t> local;
  uint64_t dropped = 0;
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->second.partition != partition || it->second.entry != entry ||
        it->second.consumer != consumer) {
      ++it;
      continue;
    }
    if (it->second.local_id != 0) local.push_back(it->second.local_id);
    ++dropped;
    held_.erase(it++);
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.claims_lost += dropped;
    for (uint64_t id : local) handed_back_.erase(id);
  }
  for (uint64_t id : local) (void)scheduler_.Cancel(id);
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
        // Once the ends read are durable here, the results and the jobs'
        // markers go: one XDEL and one DEL per partition (one slot each).
        std::map<int,
                 std::pair<std::vector<std::string>, std::vector<std::string>>>
            gone;
        uint64_t last_ticket = 0;
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
              (ref = ParseJobRef(job.id(), "id")).ok() &&
              IsTerminal(job.state())) {
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
          if (id != 0 && e.for_job.empty() && !e.by.empty()) {
            self->ran_at_.Set(id, e.by.substr(0, e.by.rfind(':')));
          }
          uint64_t ticket = 0;
          // (A mirror whose claim's answer is still on its way is held.)
          if (id != 0 && end != nullptr &&
              (self->scheduler_.EndShared(id, create_ns, end,
                                          job.has_start_time()
                                              ? FromProtoTime(job.start_time())
                                              : absl::InfinitePast(),
                                          &ticket) ||
               (!e.for_job.empty() &&
                self->scheduler_.ClaimLost(id, create_ns, holder, holder_node,
                                           end, &ticket)))) {
            absl::MutexLock lock(&self->mu_);
            ++self->stats_.results;
          }
          last_ticket = std::max(last_ticket, ticket);
          auto& [del, markers] = gone[e.partition];
          if (del.empty()) {
            del = {"XDEL", WorkStream::ResultsKey(e.partition,
                                                  self->options_.node_name)};
            markers = {"DEL"};
          }
          del.push_back(e.id);
          markers.push_back(WorkStream::MarkerKey(
              e.partition, self->options_.node_name, id, create_ns));
        }
        if (!gone.empty()) {
          self->scheduler_.WhenDurable(
              last_ticket, [weak = self->weak_from_this(),
                            gone = std::move(gone)](bool durable) mutable {
                // On the journal's thread, perhaps after Stop (then the
                // results are read again at the next start).
                auto self = weak.lock();
                if (!durable || self == nullptr || self->halted_.load()) {
                  return;
                }
                for (auto& [p, commands] : gone) {
                  self->commands_->Command(std::move(commands.first),
                                           [](absl::StatusOr<RedisValue>) {});
                  self->commands_->Command(std::move(commands.second),
                                           [](absl::StatusOr<RedisValue>) {});
                }
              });
        }
        self->ResultsLoop();
      });
}

}  // namespace jobd::cluster
