// The Scheduler's read side: jobs and pages of them, waits, watches,
// durability of what clients are shown, and stats (scheduler.h).
#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "server/jobs/proto_time.h"
#include "server/scheduler/scheduler.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {

absl::StatusOr<ListJobsQuery> ListJobsQueryOf(
    const v1::ListJobsRequest& request, std::string owner) {
  ListJobsQuery query;
  query.owner = std::move(owner);
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError("page_size: must not be negative");
  }
  query.limit = request.page_size() == 0
                    ? 100
                    : std::min<size_t>(request.page_size(), 1000);
  for (int s : request.states()) {
    if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          fmt::format("states: invalid value {}", s));
    }
    query.states.push_back(static_cast<v1::JobState>(s));
  }
  query.task = request.task();
  return query;
}

void AddListJobsPage(std::vector<v1::Job> jobs, bool more, size_t limit,
                     v1::ListJobsResponse* response) {
  if (!jobs.empty() && (more || jobs.size() == limit)) {
    response->set_next_page_token(jobs.back().id());
  }
  for (v1::Job& job : jobs) *response->add_jobs() = std::move(job);
}

namespace {

absl::Status JobNotFound(uint64_t id) {
  return absl::NotFoundError(
      fmt::format("job {} not found (unknown or expired)", id));
}

}  // namespace

absl::StatusOr<v1::Job> Scheduler::GetJob(uint64_t id,
                                          std::string_view owner) const {
  absl::MutexLock lock(&mu_);
  const Job* job = table_.FindOwned(id, owner);
  if (job == nullptr) return JobNotFound(id);
  return Snapshot(*job);
}

absl::StatusOr<OutputRead> Scheduler::ReadOutput(uint64_t id,
                                                 std::string_view owner,
                                                 uint64_t offset,
                                                 size_t max_bytes) const {
  absl::MutexLock lock(&mu_);
  const Job* job = table_.FindOwned(id, owner);
  if (job == nullptr) return JobNotFound(id);
  OutputRead read =
      outputs_.Read(id, offset, max_bytes, IsTerminal(job->state));
  if (job->cluster == Job::kOutbox || job->cluster == Job::kPublished) {
    read.shared = true;
    read.create_ns = absl::ToUnixNanos(job->create_time);
  }
  return read;
}

bool Scheduler::WhenOutput(uint64_t id, uint64_t offset, const void* key,
                           std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  Job* job = table_.Find(id);
  if (job == nullptr || IsTerminal(job->state)) return false;
  if (!job->output) MarkOutput(*job);  // Its end releases the waiter.
  return outputs_.AddWaiter(id, offset, key, std::move(fn));
}

void Scheduler::CancelWhenOutput(uint64_t id, const void* key) {
  outputs_.RemoveWaiter(id, key);
}

void Scheduler::ShowJob(uint64_t id, std::string_view owner,
                        JobCallback done) const {
  absl::StatusOr<v1::Job> job;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    const Job* found = table_.FindOwned(id, owner);
    if (found == nullptr) {
      job = JobNotFound(id);
    } else {
      job = Snapshot(*found);
      ticket = events_.TicketOf(found->last_sequence);
    }
  }
  if (ticket == 0) return done(std::move(job));
  WhenDurable(
      ticket,
      [this, done = std::move(done), job = std::move(job)](bool durable) {
        done(durable ? job : NotDurable());
      },
      Journal::Wait::kFailFast);
}

void Scheduler::ShowJobs(const ListJobsQuery& query, PageCallback done) const {
  std::vector<v1::Job> jobs;
  bool more = false;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    jobs = ListLocked(query, &more, &ticket);
  }
  if (ticket == 0) return done(std::move(jobs), more);
  WhenDurable(
      ticket,
      [this, done = std::move(done), jobs = std::move(jobs),
       more](bool durable) mutable {
        if (durable) {
          done(std::move(jobs), more);
        } else {
          done(NotDurable(), false);
        }
      },
      Journal::Wait::kFailFast);
}

std::vector<v1::Job> Scheduler::ListJobs(const ListJobsQuery& query,
                                         bool* more) const {
  absl::MutexLock lock(&mu_);
  return ListLocked(query, more, nullptr);
}

std::vector<v1::Job> Scheduler::ListLocked(const ListJobsQuery& query,
                                           bool* more, uint64_t* ticket) const {
  std::vector<v1::Job> out;
  size_t bytes = 0;
  size_t scanned = 0;
  if (more != nullptr) *more = false;
  // False to stop.
  auto visit = [&](const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (out.size() >= query.limit ||
        (query.max_scanned > 0 && scanned++ >= query.max_scanned)) {
      return false;
    }
    if (!query.states.empty() &&
        std::find(query.states.begin(), query.states.end(), job.ShownState()) ==
            query.states.end()) {
      return true;
    }
    if (!query.task.empty() && job.spec.task()->name != query.task) {
      return true;
    }
    if (!query.owner.empty() && *job.owner != query.owner) return true;
    if (query.own_only && job.cluster == Job::kForeign) return true;
    v1::Job snapshot = Snapshot(job);
    if (query.max_bytes > 0) {
      const size_t size = snapshot.ByteSizeLong() + 8;  // Tag and length.
      if (!out.empty() && bytes + size > query.max_bytes) {
        if (more != nullptr) *more = true;
        return false;
      }
      bytes += size;
    }
    if (ticket != nullptr) {
      *ticket = std::max(*ticket, events_.TicketOf(job.last_sequence));
    }
    out.push_back(std::move(snapshot));
    return true;
  };
  const JobTable::Map& jobs = table_.jobs();
  if (query.newest_first) {
    auto it =
        query.before_id > 0 ? jobs.lower_bound(query.before_id) : jobs.end();
    while (it != jobs.begin()) {
      --it;
      if (!visit(*it->second)) break;
    }
  } else {
    for (auto it = jobs.upper_bound(query.after_id); it != jobs.end(); ++it) {
      if (!visit(*it->second)) break;
    }
  }
  return out;
}

absl::Status Scheduler::NotDurable() const {
  const std::string error =
      journal_ != nullptr ? journal_->last_error() : std::string();
  if (journal_ == nullptr || journal_->accepting() || error.empty()) {
    return absl::UnavailableError(
        "jobd is stopping and could not record this in its journal; ask "
        "again after it restarts");
  }
  return absl::UnavailableError(fmt::format(
      "jobd cannot write its journal ({}), so this is not durable yet; retry "
      "once it can (see its log)",
      error));
}

uint64_t Scheduler::durable_ticket() const {
  return journal_ == nullptr ? std::numeric_limits<uint64_t>::max()
                             : journal_->durable();
}

uint64_t Scheduler::journal_ticket() const {
  return journal_ == nullptr ? 0 : journal_->ticket();
}

void Scheduler::WhenDurable(uint64_t ticket,
                            std::function<void(bool durable)> fn,
                            Journal::Wait wait) const {
  if (journal_ == nullptr) {
    fn(true);
  } else {
    journal_->WhenDurable(ticket, std::move(fn), wait);
  }
}

void Scheduler::WaitJob(uint64_t id, absl::Time deadline,
                        std::function<void(absl::StatusOr<v1::Job>)> done,
                        std::string_view owner) {
  absl::StatusOr<v1::Job> now_result;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.FindOwned(id, owner);
    if (job == nullptr) {
      now_result = JobNotFound(id);
    } else if (IsTerminal(job->state) || deadline <= clock_.Now()) {
      now_result = Snapshot(*job);
      const uint64_t ticket = events_.TicketOf(job->last_sequence);
      if (ticket != 0) {  // Its latest change is not durable yet.
        journal_->WhenDurable(
            ticket,
            [this, done = std::move(done), r = std::move(now_result)](
                bool durable) { done(durable ? r : NotDurable()); },
            Journal::Wait::kFailFast);
        return;
      }
    } else {
      const uint64_t waiter_id = next_waiter_++;
      const TimerQueue::TimerId timer = timers_.Schedule(
          deadline, [this, id, waiter_id] { FireWaiter(id, waiter_id); });
      job->extras().waiters.push_back({waiter_id, timer, std::move(done)});
      return;
    }
  }
  done(std::move(now_result));
}

void Scheduler::FireWaiter(uint64_t id, uint64_t waiter_id) {
  JobCallback done;
  absl::StatusOr<v1::Job> snapshot;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    if (job == nullptr || job->more == nullptr) return;
    auto& waiters = job->more->waiters;
    auto w =
        std::find_if(waiters.begin(), waiters.end(),
                     [&](const Job::Waiter& x) { return x.id == waiter_id; });
    if (w == waiters.end()) return;
    done = std::move(w->done);
    waiters.erase(w);
    snapshot = Snapshot(*job);
    ticket = events_.TicketOf(job->last_sequence);
  }
  if (ticket == 0) return done(std::move(snapshot));
  WhenDurable(
      ticket,
      [this, done = std::move(done), snapshot = std::move(snapshot)](
          bool durable) { done(durable ? snapshot : NotDurable()); },
      Journal::Wait::kFailFast);
}

absl::StatusOr<WatchResult> Scheduler::Watch(const std::vector<uint64_t>& ids,
                                             uint64_t after_sequence,
                                             const Subscriber& subscriber) {
  After after;
  WatchResult result;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t id : ids) {
      if (table_.FindOwned(id, subscriber.owner) == nullptr) {
        return JobNotFound(id);
      }
    }
    const absl::flat_hash_set<uint64_t> wanted(ids.begin(), ids.end());
    auto deliver = [&](const Event& e) {
      if ((subscriber.mask & EventBit(e.type)) &&
          subscriber.sink->Deliver(e, subscriber.tag)) {
        after.flush.push_back(subscriber.sink);
      }
    };
    const uint64_t oldest = events_.oldest();
    result.oldest_retained_sequence = oldest;
    if (after_sequence > 0) {
      result.events_lost = after_sequence + 1 < oldest;
      events_.ForEachAfter(
          after_sequence,
          [&](const LoggedEvent& logged) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            if (!wanted.empty() && !wanted.contains(logged.job_id)) return;
            // Another owner's job, or one since forgotten, stays unseen.
            const Job* job = table_.FindOwned(logged.job_id, subscriber.owner);
            if (job != nullptr) deliver(events_.Replay(logged, *job));
          });
    }
    if (ids.empty()) events_.AddWatcher(subscriber);
    for (uint64_t id : wanted) {
      Job& job = *table_.Find(id);
      if (!IsTerminal(job.state)) {
        job.subscribers.push_back(
            {subscriber.sink, subscriber.tag, subscriber.mask});
        continue;
      }
      // Ended: make sure the watcher hears how, exactly once.
      if (job.last_sequence <= after_sequence) {
        result.already_seen_ends.push_back(id);  // Nothing more will come.
        continue;
      }
      const bool replayed = after_sequence > 0 && job.last_sequence >= oldest;
      if (replayed) continue;
      deliver(events_.EndOf(job));
    }
  }
  after.Run(journal_);
  return result;
}

uint64_t Scheduler::Unwatch(const EventSink* sink,
                            const std::vector<uint64_t>& ids) {
  absl::MutexLock lock(&mu_);
  events_.RemoveWatcher(sink);
  for (uint64_t id : ids) {
    Job* job = table_.Find(id);
    if (job == nullptr) continue;
    auto& subs = job->subscribers;
    subs.erase(std::remove_if(
                   subs.begin(), subs.end(),
                   [sink](const Job::Sub& s) { return s.sink.get() == sink; }),
               subs.end());
  }
  return events_.last_sequence();
}

v1::GetStatsResponse Scheduler::GetStats() const {
  v1::GetStatsResponse stats;
  std::vector<const JobExecutor*> executors;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 1; i < 4; ++i) {
      const Lane& lane = lanes_[i];
      const JobExecutor* executor = lane.executor();
      v1::ExecutorStats* s = stats.add_executors();
      s->set_executor(static_cast<v1::Executor>(i));
      s->set_enabled(executor != nullptr);
      s->set_workers(executor != nullptr ? executor->workers() : 0);
      s->set_busy(lane.busy());
      s->set_queued(lane.queued() + lane.claimed());
      s->set_completed(lane.succeeded());
      s->set_failed(lane.failed());
      s->set_cancelled(lane.cancelled());
      stats.set_succeeded(stats.succeeded() + lane.succeeded());
      stats.set_failed(stats.failed() + lane.failed());
      stats.set_cancelled(stats.cancelled() + lane.cancelled());
    }
    stats.set_accepted(accepted_);
    stats.set_rejected(rejected_);
    stats.set_live(table_.live());
    stats.set_waiting(waiting_.size());
    stats.set_waiting_on_dependencies(deps_.size());
    stats.set_retried(retried_);
    stats.set_expired(expired_);
    stats.set_retained(retention_.retained());
    stats.set_live_bytes(table_.live_bytes());
    stats.set_retained_bytes(retention_.retained_bytes());
    if (callback_hook_ != nullptr) callback_hook_->AddStats(&stats);
    const absl::Time now = clock_.Now();
    *stats.mutable_uptime() = ToProtoDuration(now - start_time_);
    *stats.mutable_start_time() = ToProtoTime(start_time_);
    stats.set_last_sequence(events_.last_sequence());
    stats.set_draining(draining_);
    stats.set_watchers(events_.watchers());
    for (v1::KeyLimit& key : keys_.List(1000)) {
      *stats.add_keys() = std::move(key);
    }
    for (const Lane& lane : lanes_) {
      if (lane.executor() != nullptr) executors.push_back(lane.executor());
    }
  }
  // Executors may read /proc and take their own locks: not under mu_.
  for (const JobExecutor* e : executors) e->AddStats(stats);
  if (journal_ != nullptr) journal_->AddStats(stats);
  // Its own lock (a leaf), taken after mu_ is released.
  const JobOutputs::Stats output = outputs_.stats();
  stats.set_output_bytes(output.bytes);
  stats.set_output_jobs(output.jobs);
  stats.set_output_dropped_bytes(output.dropped);
  return stats;
}

TaskCounters::Snapshot Scheduler::TaskEnds() const {
  absl::MutexLock lock(&mu_);
  return task_counters_.Copy();
}

bool Scheduler::IsQuarantined(const TaskDef& task) const {
  absl::MutexLock lock(&mu_);
  for (const Lane& lane : lanes_) {
    if (lane.executor() != nullptr && lane.executor()->IsQuarantined(task)) {
      return true;
    }
  }
  return false;
}

bool Scheduler::ClearQuarantine(std::string_view task) {
  absl::MutexLock lock(&mu_);
  bool was = false;
  for (Lane& lane : lanes_) {
    if (lane.executor() != nullptr) {
      was = lane.executor()->ClearQuarantine(task) || was;
    }
  }
  return was;
}

}  // namespace jobd
