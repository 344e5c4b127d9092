// WorkSharing's upkeep, on the timers of the cluster thread: the heartbeat
// (renewing the claims of held entries, sending again ends that met Redis
// down) and the reaper period (reclaiming dead nodes' entries, trimming
// old results, the backlog for GetStats); and the stats readers. The rest
// of the class is in work_sharing.cc.
#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "server/cluster/work_sharing.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/spdlog.h"

namespace jobd::cluster {

void WorkSharing::Beat() {
  if (stopped_) return;
  if (commands_->connected()) {
    if (!ready_) Prepare();
    if (republish_) DrainOutbox();
    // Each held entry once (its jobs share it), and the ends that met
    // Redis down, again.
    std::set<std::tuple<int, std::string, std::string>> entries;
    for (auto& [tag, held] : held_) {
      entries.emplace(held.partition, held.entry, held.consumer);
      if ((!held.result.empty() || held.give_back) && !held.sending) {
        to_send_.push_back(tag);
      }
    }
    SendEnds();
    StartUnbegun();  // Those whose mark met Redis down; a drain's give-back.
    for (const auto& [partition, entry, consumer] : entries) {
      stream_->Renew(
          partition, consumer, entry,
          [self = shared_from_this(), partition = partition, entry = entry,
           consumer = consumer](absl::StatusOr<Renewal> r) {
            if (!r.ok()) return;
            if (r->fence == Fence::kDone) {
              // (Their origin's stop notices may have been lost.)
              for (int index : r->withdrawn) {
                self->StopEntry(partition, entry, index);
              }
              return;
            }
            // Reclaimed by another node (this one was taken for
            // dead): stopped here; their ends would be refused
            // anyway.
            self->DropEntry(partition, entry, consumer);
          });
    }
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.held = held_.size();
  }
  beat_timer_.expires_after(absl::ToChronoNanoseconds(options_.heartbeat));
  beat_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec) self->Beat();
  });
}

void WorkSharing::Reclaim() {
  if (stopped_) return;
  const std::string consumer = ConsumerNow();
  if (Sharing() && !consumer.empty() && !settling_) {
    RefreshBacklog();
    TrimResults();
    // What this node can start now, partition after partition.
    const int idle = scheduler_.IdleSlots();
    if (idle > 0) {
      ReclaimFrom(0, consumer, idle, [] {});
    } else {
      reclaim_due_ = true;  // The take loop's next free slot does it.
    }
  }
  reap_timer_.expires_after(absl::ToChronoNanoseconds(options_.reaper_period));
  reap_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec) self->Reclaim();
  });
}

void WorkSharing::ReclaimFrom(size_t index, std::string consumer, int budget,
                              std::function<void()> then) {
  if (stopped_) return;
  if (budget <= 0 || index >= all_partitions_.size()) return then();
  // Entries for about `budget` jobs, by the last ones taken, from where
  // the last look at this partition stopped (XAUTOCLAIM looks at a
  // bounded part of the pending list per call).
  const int p = all_partitions_[index];
  ++reads_;
  stream_->ReclaimCounted(
      p, consumer, options_.node_ttl,
      std::clamp(budget / std::max(1, jobs_per_entry_), 1, kReclaimBatch),
      reclaim_cursor_[index],
      [self = shared_from_this(), index, consumer, budget,
       then = std::move(then)](absl::StatusOr<Reclaimed> r) mutable {
        --self->reads_;
        if (self->stopped_) return;
        if (!r.ok()) return then();
        self->reclaim_cursor_[index] = r->next;
        for (StreamEntry& e : r->entries) {
          budget -= static_cast<int>(e.jobs.size());
          {
            absl::MutexLock lock(&self->mu_);
            self->stats_.reclaimed += e.jobs.size();
          }
          self->RunEntry(std::move(e), consumer, /*reclaimed=*/true);
        }
        self->ReclaimFrom(index + 1, std::move(consumer), budget,
                          std::move(then));
      });
}

void WorkSharing::TrimResults() {
  // One partition per period, in turn: every node's results there older
  // than --cluster-results-ttl (a live node reads its own at once; these
  // are a gone node's).
  const int p = all_partitions_[trim_turn_];
  trim_turn_ = (trim_turn_ + 1) % static_cast<int>(all_partitions_.size());
  stream_->TrimResults(
      p, options_.results_ttl,
      [self = shared_from_this(), p](absl::StatusOr<int64_t> r) {
        if (!r.ok() || *r <= 0) return;
        spdlog::info(
            "cluster: trimmed {} result(s) older than {} from partition {} "
            "(their nodes did not read them)",
            *r, absl::FormatDuration(self->options_.results_ttl), p);
      });
}

void WorkSharing::RefreshBacklog() {
  // Each partition's entries never delivered (the group's lag) and its
  // pending entries by consumer: two reads per partition and period.
  auto fresh =
      std::make_shared<std::vector<PartitionBacklog>>(all_partitions_.size());
  auto left = std::make_shared<size_t>(2 * all_partitions_.size());
  auto done = [self = shared_from_this(), fresh, left] {
    if (--*left > 0) return;
    absl::MutexLock lock(&self->mu_);
    self->backlog_ = std::move(*fresh);
  };
  for (size_t i = 0; i < all_partitions_.size(); ++i) {
    const int p = all_partitions_[i];
    (*fresh)[i].partition = p;
    commands_->Command({"XINFO", "GROUPS", WorkStream::JobsKey(p)},
                       [fresh, i, done](absl::StatusOr<RedisValue> r) {
                         if (r.ok()) {
                           for (const RedisValue& group : r->elements) {
                             const auto& f = group.elements;
                             bool ours = false;
                             int64_t lag = -1;
                             for (size_t k = 0; k + 1 < f.size(); k += 2) {
                               if (f[k].str == "name")
                                 ours = f[k + 1].str == WorkStream::kGroup;
                               if (f[k].str == "lag") lag = f[k + 1].integer;
                             }
                             if (ours)
                               (*fresh)[i].backlog = std::max<int64_t>(0, lag);
                           }
                         }
                         done();
                       });
    commands_->Command({"XPENDING", WorkStream::JobsKey(p), WorkStream::kGroup},
                       [fresh, i, done](absl::StatusOr<RedisValue> r) {
                         // [count, min id, max id, [[consumer, count], ...]].
                         if (r.ok() && r->elements.size() == 4) {
                           (*fresh)[i].pending = r->elements[0].integer;
                           for (const RedisValue& c : r->elements[3].elements) {
                             if (c.elements.size() != 2) continue;
                             int64_t n = 0;
                             if (!absl::SimpleAtoi(c.elements[1].str, &n))
                               continue;
                             (*fresh)[i].by_consumer.emplace_back(
                                 c.elements[0].str, n);
                           }
                         }
                         done();
                       });
  }
}

WorkSharingStats WorkSharing::Stats() const {
  WorkSharingStats s;
  {
    absl::MutexLock lock(&mu_);
    s = stats_;
  }
  s.shared_live = scheduler_.shared_jobs();
  return s;
}

std::vector<PartitionBacklog> WorkSharing::Backlog() const {
  absl::MutexLock lock(&mu_);
  return backlog_;
}

}  // namespace jobd::cluster
