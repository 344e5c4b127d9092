#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "server/jobs/proto_time.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {

namespace {

v1::EventType TerminalEventType(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      return v1::EVENT_TYPE_SUCCEEDED;
    case v1::JOB_STATE_CANCELLED:
      return v1::EVENT_TYPE_CANCELLED;
    default:
      return v1::EVENT_TYPE_FAILED;
  }
}

std::shared_ptr<JobEnd> MakeError(v1::JobState state, absl::StatusCode code,
                                  v1::ErrorReason reason, std::string message) {
  auto end = std::make_shared<JobEnd>();
  end->state = state;
  v1::JobError& error = end->mutable_error();
  error.set_code(static_cast<int32_t>(code));
  error.set_reason(reason);
  error.set_message(ClipUtf8(message, kMaxErrorMessageBytes));
  return end;
}

// Bytes of a result as it travels (value and payload, with their tags).
size_t ResultBytes(const google::protobuf::Value& value,
                   const std::string& payload) {
  return value.ByteSizeLong() + payload.size() + 16;
}

// The end of a job whose result does not fit a message with its spec.
std::shared_ptr<JobEnd> ResultTooLarge(size_t result_bytes, size_t spec_bytes,
                                       size_t limit) {
  return MakeError(
      v1::JOB_STATE_FAILED, absl::StatusCode::kResourceExhausted,
      v1::ERROR_REASON_RESULT_TOO_LARGE,
      fmt::format("the result is {} bytes: with the job's spec ({} bytes) it "
                  "does not fit one message of {} bytes (--max-message-bytes), "
                  "so it was dropped; return less, or bulk data elsewhere",
                  result_bytes, spec_bytes, limit));
}

// Minimum spacing of PROGRESS events of one job (the latest is always kept).
constexpr absl::Duration kProgressInterval = absl::Milliseconds(20);

// A spec's serialized size, which its admission computed: the spec is
// immutable from then on, so protobuf's cached size holds it (an atomic
// read instead of a walk over the arguments).
uint64_t SpecBytes(const v1::JobSpec& spec) {
  return static_cast<uint64_t>(spec.GetCachedSize());
}

// What an end's result or error adds to the byte budgets.
uint32_t EndBytes(const JobEnd& end) {
  const size_t bytes = end.state == v1::JOB_STATE_SUCCEEDED
                           ? end.result().ByteSizeLong()
                           : end.error().ByteSizeLong();
  return static_cast<uint32_t>(
      std::min<size_t>(bytes, std::numeric_limits<uint32_t>::max()));
}

// "1.5 MiB" (for refusals and logs).
std::string Bytes(uint64_t n) {
  if (n < 1024) return fmt::format("{} B", n);
  if (n < (1 << 20)) return fmt::format("{:.1f} KiB", n / 1024.0);
  if (n < (uint64_t{1} << 30)) return fmt::format("{:.1f} MiB", n / 1048576.0);
  return fmt::format("{:.2f} GiB", n / 1073741824.0);
}

// Sinks queue events, the resume log holds up to event_log_size of them
// (bench/README.md "reactor": memory per waiting job).
static_assert(sizeof(Event) <= 64);
// One per retained job; with make_shared's count, 80 bytes.
static_assert(sizeof(JobEnd) <= 56);

}  // namespace

// A job's bound arguments and, while it runs, its cancel token: one
// allocation, shared with the executor (JobRun::args and ::cancel alias it).
// Each run gets a fresh one, which tells a run from a later one.
struct Scheduler::RunState {
  explicit RunState(TaskArgs bound) : args(std::move(bound)) {}
  const TaskArgs args;
  CancelToken cancel;
};

struct Scheduler::Job {
  struct Waiter {
    uint64_t id;
    TimerQueue::TimerId timer;
    std::function<void(absl::StatusOr<v1::Job>)> done;
  };

  // A subscriber of this job alone (no owner filter: 32 bytes).
  struct Sub {
    std::shared_ptr<EventSink> sink;
    uint64_t tag = 0;
    uint32_t mask = kAllEvents;
  };

  // What few jobs have: made on first use.
  struct Extras {
    std::shared_ptr<const v1::Progress> progress;  // The latest.
    CompactTime last_progress_event = absl::InfinitePast();
    std::vector<Waiter> waiters;  // Cleared when it ends.
  };
  Extras& extras() {
    if (more == nullptr) more = std::make_unique<Extras>();
    return *more;
  }

  // Kept small (the job table holds up to max_queued + max_retained of
  // them): times in 8 bytes, fields ordered to pack, the rare ones apart.
  uint64_t id = 0;
  const std::string* owner = nullptr;       // Interned; never null.
  std::shared_ptr<const v1::JobSpec> spec;  // Immutable.
  const TaskDef* task = nullptr;
  std::shared_ptr<RunState> run;  // Released when the job ends.
  CompactTime create_time;
  CompactTime start_time = absl::InfinitePast();  // Set when RUNNING.
  CompactTime finish_time;
  std::shared_ptr<const JobEnd> end;
  std::unique_ptr<Extras> more;  // Progress, waiters.
  TimerQueue::TimerId timeout_timer = 0;
  uint64_t last_sequence = 0;
  uint64_t accepted_seq = 0, started_seq = 0;  // For the journal.
  v1::JobState state = v1::JOB_STATE_QUEUED;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;
  uint32_t attempts = 0;  // Runs started, ever.
  bool gated = false;     // QUEUED, claimed: waits for a durable claim (Lane).
  absl::InlinedVector<Sub, 1> subscribers;  // Cleared when it ends.
};

class Scheduler::Port : public ExecutorListener {
 public:
  Port(Scheduler& scheduler, v1::Executor kind)
      : scheduler_(scheduler), kind_(kind) {}
  void OnJobProgress(uint64_t job_id, double fraction,
                     std::string_view message) override {
    scheduler_.OnProgress(kind_, job_id, fraction, message);
  }
  void OnJobFinished(uint64_t job_id, JobOutcome outcome) override {
    FinishedJob job{.job_id = job_id, .outcome = std::move(outcome)};
    scheduler_.OnFinished(kind_, std::span<FinishedJob>(&job, 1));
  }
  void OnJobsFinished(std::span<FinishedJob> jobs) override {
    scheduler_.OnFinished(kind_, jobs);
  }

 private:
  Scheduler& scheduler_;
  const v1::Executor kind_;
};

void Scheduler::After::Run(Journal* journal) {
  // Sinks hold back what is not durable yet themselves (Event::ticket).
  for (const auto& sink : flush) sink->Flush();
  for (auto& [gate_ticket, fn] : gates) {
    journal->WhenDurable(gate_ticket, std::move(fn));
  }
  if (calls.empty()) return;
  if (journal == nullptr || ticket <= journal->durable()) {
    for (auto& call : calls) call(true);
    return;
  }
  // Answers to callers: never held through an outage.
  journal->WhenDurable(
      ticket,
      [calls = std::move(calls)](bool durable) {
        for (auto& call : calls) call(durable);
      },
      Journal::Wait::kFailFast);
}

Scheduler::Scheduler(SchedulerOptions options, const Clock& clock,
                     Journal* journal)
    : options_(std::move(options)),
      clock_(clock),
      journal_(journal),
      start_time_(clock.Now()),
      life_(std::make_shared<Life>()),
      limits_(options_),
      timers_(clock) {
  // The job table holds up to max_queued + max_retained jobs.
  static_assert(sizeof(Job) <= 192);
  static_assert(sizeof(LoggedEvent) == 32);
  {
    absl::MutexLock lock(&life_->mu);
    life_->self = this;
  }
  for (int i = 0; i < 4; ++i) {
    ports_[i] = std::make_unique<Port>(*this, static_cast<v1::Executor>(i));
  }
  ScheduleSweep();
}

Scheduler::~Scheduler() {
  {
    absl::MutexLock lock(&life_->mu);
    life_->self = nullptr;
    // Waits for the callbacks in progress.
    life_->mu.Await(absl::Condition(
        +[](int* calls) { return *calls == 0; }, &life_->calls));
  }
  StopExecutors(absl::InfiniteFuture());
  timers_.Stop();
}

ExecutorListener& Scheduler::listener_for(v1::Executor kind) {
  return *ports_.at(kind);
}

void Scheduler::AddExecutor(std::unique_ptr<JobExecutor> executor) {
  absl::MutexLock lock(&mu_);
  const v1::Executor kind = executor->kind();
  router_.SetEnabled(kind, true);
  lanes_.at(kind).executor = std::move(executor);
}

namespace {

// Idempotency keys are per owner: another caller's key finds nothing.
std::string IdempotencyKey(std::string_view owner, std::string_view key) {
  std::string k(owner);
  k.push_back('\0');
  k.append(key);
  return k;
}

}  // namespace

const std::string* Scheduler::Intern(std::string_view owner) {
  return &*owners_.emplace(owner).first;
}

Scheduler::Job* Scheduler::FindOwned(uint64_t id,
                                     std::string_view owner) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nullptr;
  if (!owner.empty() && *it->second->owner != owner) return nullptr;
  return it->second.get();
}

void Scheduler::Submit(std::vector<NewJob>& jobs, const Subscriber& subscriber,
                       std::vector<Admission>& out, const OwnerQuota& quota) {
  After after;
  {
    const bool journal_accepting = journal_ == nullptr || journal_->accepting();
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.Now();
    std::array<bool, 4> touched = {false, false, false, false};
    // Jobs that will start at once in a free slot do not count as queued.
    std::array<int, 4> free_slots = {0, 0, 0, 0};
    size_t queued = 0;
    for (int i = 0; i < 4; ++i) {
      const Lane& lane = lanes_[i];
      queued += lane.queued;
      if (lane.executor != nullptr && !draining_) {
        free_slots[i] = std::max<int>(
            0, lane.executor->capacity() - lane.busy -
                   static_cast<int>(lane.gated_jobs + lane.queued));
      }
    }
    for (NewJob& nj : jobs) {
      Admission& adm = out.emplace_back();
      Subscriber sub = subscriber;
      sub.tag = nj.tag;
      if (draining_) {
        adm.status = absl::UnavailableError(
            "jobd is draining (shutting down): not accepting new jobs");
        ++rejected_;
        continue;
      }
      if (!journal_accepting) {
        RelieveJournal();  // For the next try (at once if it can help).
        adm.status = absl::UnavailableError(
            "jobd cannot write its journal (disk full or I/O error; see its "
            "log): not accepting new jobs until it can; retry later");
        ++rejected_;
        continue;
      }
      const std::string* owner = Intern(nj.owner);
      const std::string key =
          nj.spec->idempotency_key().empty()
              ? std::string()
              : IdempotencyKey(*owner, nj.spec->idempotency_key());
      if (!key.empty()) {
        auto it = idempotency_.find(key);
        if (it != idempotency_.end()) {
          Job& job = *jobs_.at(it->second);
          adm.job_id = job.id;
          adm.duplicate = true;
          Event accepted;
          accepted.sequence = job.last_sequence;
          accepted.job_id = job.id;
          accepted.type = v1::EVENT_TYPE_ACCEPTED;
          accepted.time = now;
          accepted.executor = job.executor;
          accepted.duplicate = true;
          accepted.set_task(job.task);
          accepted.ticket = TicketOf(job.last_sequence);
          if ((sub.mask & EventBit(accepted.type)) &&
              sub.sink->Deliver(accepted, sub.tag)) {
            after.flush.push_back(sub.sink);
          }
          if (job.end != nullptr) {
            if (sub.sink->Deliver(EndOf(job, accepted.ticket), sub.tag)) {
              after.flush.push_back(sub.sink);
            }
          } else {
            job.subscribers.push_back({sub.sink, sub.tag, sub.mask});
          }
          continue;
        }
      }
      absl::StatusOr<v1::Executor> executor =
          router_.Route(*nj.task, nj.spec->kind(), nj.spec->executor());
      if (!executor.ok()) {
        adm.status = executor.status();
        ++rejected_;
        continue;
      }
      OwnerUsage& usage = usage_[owner];
      usage.max_bytes = quota.max_bytes;
      if (quota.max_live > 0 && usage.live >= quota.max_live) {
        adm.status = absl::ResourceExhaustedError(fmt::format(
            "caller '{}' has {} unfinished jobs and its limit is {} "
            "(quota-max-live); retry when some have ended",
            *owner, usage.live, quota.max_live));
        ++rejected_;
        continue;
      }
      const bool starts_now = free_slots[*executor] > 0;
      if (!starts_now && queued >= limits_.max_queued) {
        adm.status = absl::ResourceExhaustedError(
            fmt::format("queue full: {} jobs are queued and the limit is {} "
                        "(max_queued); retry later",
                        queued, limits_.max_queued));
        ++rejected_;
        continue;
      }
      // Computed once here; SpecBytes reads it back from the spec.
      const uint64_t bytes = nj.spec->ByteSizeLong();
      if (quota.max_bytes > 0 && usage.live_bytes + bytes > quota.max_bytes) {
        adm.status = absl::ResourceExhaustedError(fmt::format(
            "caller '{}' has {} in unfinished jobs, this one takes {}, and "
            "its limit is {} (quota-max-bytes); retry when some have ended",
            *owner, Bytes(usage.live_bytes), Bytes(bytes),
            Bytes(quota.max_bytes)));
        ++rejected_;
        continue;
      }
      if (limits_.max_live_bytes > 0 &&
          live_bytes_ + bytes > limits_.max_live_bytes) {
        adm.status = absl::ResourceExhaustedError(fmt::format(
            "unfinished jobs hold {}, this one takes {}, and the limit is {} "
            "(max-live-bytes); retry later",
            Bytes(live_bytes_), Bytes(bytes), Bytes(limits_.max_live_bytes)));
        ++rejected_;
        continue;
      }
      // Room for it within the owner's quota: its oldest results go first.
      TrimOwner(usage, bytes);
      ++usage.live;
      usage.live_bytes += bytes;
      live_bytes_ += bytes;
      auto job = std::make_unique<Job>();
      job->id = next_id_++;
      job->owner = owner;
      job->task = nj.task;
      job->run = std::make_shared<RunState>(std::move(nj.args));
      job->executor = *executor;
      job->create_time = now;
      job->spec = std::move(nj.spec);
      job->subscribers.push_back({std::move(sub.sink), sub.tag, sub.mask});
      Job& ref = *job;
      adm.job_id = ref.id;
      adm.bytes = bytes;
      if (!key.empty()) idempotency_.emplace(key, ref.id);
      jobs_.emplace(ref.id, std::move(job));
      ++accepted_;
      ++live_;
      Event e;
      e.type = v1::EVENT_TYPE_ACCEPTED;
      e.set_task(ref.task);
      Emit(ref, std::move(e), after);
      Lane& lane = lanes_[ref.executor];
      lane.queue[ref.spec->priority()].push_back(ref.id);
      ++lane.queued;
      if (starts_now) {
        --free_slots[ref.executor];
      } else {
        ++queued;
      }
      touched[ref.executor] = true;
    }
    for (int i = 0; i < 4; ++i) {
      if (touched[i]) Dispatch(static_cast<v1::Executor>(i), after);
    }
  }
  after.Run(journal_);
}

void Scheduler::Dispatch(v1::Executor kind, After& after) {
  Lane& lane = lanes_[kind];
  if (lane.executor == nullptr || stopped_) return;
  const int capacity = lane.executor->capacity();
  // Claimed jobs start even while draining (their claim is recorded).
  if (journal_ != nullptr) StartDurable(kind, after);
  if (draining_) return;
  const int max_chunk = lane.executor->max_chunk();
  const size_t window = journal_ == nullptr ? 0 : Window(lane, capacity);
  auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return journal_ == nullptr
               ? lane.busy < capacity
               : static_cast<size_t>(lane.busy) + lane.gated_jobs <
                     static_cast<size_t>(capacity) + window;
  };
  std::vector<JobRun> chunk;
  while (room() && lane.queued > 0) {
    // The head job, then (chunking executors) the queued jobs right behind
    // it in the same priority that also allow chunking.
    size_t limit = 1;
    while (lane.queued > 0 && chunk.size() < limit) {
      auto bucket = lane.queue.begin();
      if (!chunk.empty() && bucket->first != chunk.front().spec->priority()) {
        break;
      }
      const uint64_t id = bucket->second.front();
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second->state != v1::JOB_STATE_QUEUED) {
        bucket->second.pop_front();
        if (bucket->second.empty()) lane.queue.erase(bucket);
        --lane.stale;  // Cancelled while queued.
        continue;
      }
      const size_t chunksize = std::min<size_t>(
          std::max<uint32_t>(it->second->spec->chunksize(), 1), max_chunk);
      if (chunk.empty()) {
        limit = chunksize;
      } else if (chunksize <= 1) {
        break;  // It wants to travel alone.
      } else {
        limit = std::min(limit, chunksize);
        if (chunk.size() >= limit) break;
      }
      bucket->second.pop_front();
      if (bucket->second.empty()) lane.queue.erase(bucket);
      --lane.queued;
      Job& job = *it->second;
      chunk.push_back(PrepareRun(job));
      if (journal_ == nullptr) {
        MarkStarted(job, chunk.back(), after);
      } else {
        job.gated = true;  // Claimed: its journal row says it may begin.
        JournalState(job);
      }
    }
    if (chunk.empty()) break;
    if (journal_ != nullptr) {
      lane.gated_jobs += chunk.size();
      lane.gated.push_back({std::move(chunk), journal_->ticket()});
    } else {
      ++lane.busy;
      if (chunk.size() == 1) {
        lane.executor->Start(std::move(chunk.front()));
      } else {
        lane.executor->StartChunk(std::move(chunk));
      }
    }
    chunk.clear();
  }
  if (journal_ != nullptr) StartDurable(kind, after);
}

size_t Scheduler::Window(const Lane& lane, int capacity) const {
  // Little's law: to keep `capacity` slots busy with jobs of `run_time`
  // while each claim takes `latency` to become durable, about
  // capacity * latency / run_time claims must be under way; twice that,
  // as commit intervals vary. None for jobs longer than a commit: a slot
  // then waits for a commit rarely, and a job claimed ahead of a free slot
  // could be overtaken by a higher priority one that arrives later.
  const absl::Duration latency = journal_->commit_latency();
  if (lane.run_time == absl::ZeroDuration() || lane.run_time >= latency) {
    return 0;
  }
  const double ahead =
      2.0 * capacity *
      absl::FDivDuration(latency,
                         std::max(lane.run_time, absl::Nanoseconds(100)));
  return static_cast<size_t>(
      std::min<double>(options_.start_window, std::ceil(ahead)));
}

void Scheduler::StartDurable(v1::Executor kind, After& after) {
  Lane& lane = lanes_[kind];
  const int capacity = lane.executor->capacity();
  const uint64_t durable = journal_->durable();
  while (lane.busy < capacity && !lane.gated.empty() &&
         lane.gated.front().ticket <= durable) {
    std::vector<JobRun> chunk = std::move(lane.gated.front().chunk);
    lane.gated.pop_front();
    lane.gated_jobs -= chunk.size();
    // Those cancelled (or put back at shutdown) meanwhile stay out. The
    // others start now: their run time, and their timeout, count from here.
    std::erase_if(chunk, [&](JobRun& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      auto it = jobs_.find(run.job_id);
      if (it == jobs_.end() || !it->second->gated ||
          it->second->run == nullptr ||
          &it->second->run->cancel != run.cancel.get()) {
        return true;
      }
      Job& job = *it->second;
      job.gated = false;
      MarkStarted(job, run, after);
      return false;
    });
    if (chunk.empty()) continue;
    ++lane.busy;
    if (chunk.size() == 1) {
      lane.executor->Start(std::move(chunk.front()));
    } else {
      lane.executor->StartChunk(std::move(chunk));
    }
  }
  // Not durable yet: wake up when it is.
  if (!lane.gated.empty() && lane.gated.front().ticket > durable &&
      lane.gated.front().ticket > lane.gate_armed) {
    lane.gate_armed = lane.gated.front().ticket;
    after.gates.emplace_back(lane.gate_armed,
                             [life = life_, kind](bool is_durable) {
                               if (!is_durable)
                                 return;  // Abandoned: shutting down.
                               Scheduler* self;
                               {
                                 absl::MutexLock lock(&life->mu);
                                 if (life->self == nullptr) return;
                                 self = life->self;
                                 ++life->calls;
                               }
                               // Without life->mu: this may run again, nested,
                               // from its own After::Run.
                               self->OnStartsDurable(kind);
                               absl::MutexLock lock(&life->mu);
                               --life->calls;
                             });
  }
}

void Scheduler::OnStartsDurable(v1::Executor kind) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Dispatch(kind, after);
  }
  after.Run(journal_);
}

JobRun Scheduler::PrepareRun(Job& job) {
  job.run = std::make_shared<RunState>(job.run->args);  // This run's.
  JobRun run;
  run.job_id = job.id;
  run.task = job.task;
  run.spec = job.spec;
  run.args = std::shared_ptr<const TaskArgs>(job.run, &job.run->args);
  run.measure_cpu_wait =
      job.spec->kind() == v1::JOB_KIND_AUTO && router_.SampleCpuWait(*job.task);
  run.cancel = std::shared_ptr<CancelToken>(job.run, &job.run->cancel);
  return run;
}

void Scheduler::MarkStarted(Job& job, JobRun& run, After& after) {
  const absl::Time now = clock_.Now();
  job.state = v1::JOB_STATE_RUNNING;
  job.start_time = now;
  ++running_;
  ++job.attempts;
  ArmTimeout(job, run, now);
  Event e;
  e.type = v1::EVENT_TYPE_STARTED;
  Emit(job, std::move(e), after);
}

void Scheduler::ArmTimeout(Job& job, JobRun& run, absl::Time now) {
  if (!job.spec->has_timeout()) return;
  run.deadline = now + FromProto(job.spec->timeout());
  const uint64_t id = job.id;
  job.timeout_timer =
      timers_.Schedule(run.deadline, [this, id] { OnTimeout(id); });
}

void Scheduler::Emit(Job& job, Event event, After& after) {
  event.sequence = next_sequence_++;
  event.job_id = job.id;
  event.time = clock_.Now();
  event.executor = job.executor;
  job.last_sequence = event.sequence;
  if (event.type == v1::EVENT_TYPE_ACCEPTED) {
    job.accepted_seq = event.sequence;
  } else if (event.type == v1::EVENT_TYPE_STARTED) {
    job.started_seq = event.sequence;
  }
  if (journal_ != nullptr) {
    // The record first, then the ticket: the event must not be delivered
    // before the state it announces is durable, so its ticket is taken
    // after the record joined the open batch (never an older one).
    if (event.type != v1::EVENT_TYPE_PROGRESS) {
      JournalState(job, /*insert=*/event.type == v1::EVENT_TYPE_ACCEPTED);
    }
    event.ticket = journal_->NoteSequence(event.sequence);
    after.ticket = std::max(after.ticket, event.ticket);
    if (!batch_sequences_.empty() &&
        batch_sequences_.back().ticket == event.ticket) {
      batch_sequences_.back().last = event.sequence;
    } else {  // A new batch: forget those durable by now.
      const uint64_t durable = journal_->durable();
      while (!batch_sequences_.empty() &&
             batch_sequences_.front().ticket <= durable) {
        batch_sequences_.pop_front();
      }
      batch_sequences_.push_back({.ticket = event.ticket,
                                  .first = event.sequence,
                                  .last = event.sequence});
    }
  }
  // Never a duplicate ACCEPTED (those go to their caller alone).
  event_log_.push_back({.sequence = event.sequence,
                        .job_id = event.job_id,
                        .time = event.time,
                        .type = event.type,
                        .executor = event.executor});
  while (event_log_.size() > options_.event_log_size) event_log_.pop_front();
  const uint32_t bit = EventBit(event.type);
  for (const Job::Sub& sub : job.subscribers) {
    if ((sub.mask & bit) && sub.sink->Deliver(event, sub.tag)) {
      after.flush.push_back(sub.sink);
    }
  }
  for (const Subscriber& sub : watch_all_) {
    if ((sub.mask & bit) && (sub.owner.empty() || sub.owner == *job.owner) &&
        sub.sink->Deliver(event, sub.tag)) {
      after.flush.push_back(sub.sink);
    }
  }
}

void Scheduler::Finish(Job& job, std::shared_ptr<JobEnd> end, After& after) {
  end->bytes = EndBytes(*end);
  const v1::JobState previous = job.state;
  job.state = end->state;
  job.finish_time = clock_.Now();
  job.end = end;
  if (end->state == v1::JOB_STATE_SUCCEEDED &&
      limits_.max_retained_result_bytes > 0 &&
      end->bytes > limits_.max_retained_result_bytes) {
    // Too big to keep: the terminal event and the waiters below get it;
    // the job (and its journal row) keep only that it was dropped.
    auto kept = std::make_shared<JobEnd>();
    kept->state = end->state;
    kept->mutable_result().set_dropped(true);
    kept->bytes = EndBytes(*kept);
    job.end = std::move(kept);
  }
  job.run.reset();  // The executor holds its own references while it runs.
  if (job.timeout_timer != 0) {
    timers_.Cancel(job.timeout_timer);
    job.timeout_timer = 0;
  }
  if (previous == v1::JOB_STATE_RUNNING) --running_;
  Lane& lane = lanes_[job.executor];
  switch (end->state) {
    case v1::JOB_STATE_SUCCEEDED:
      ++lane.succeeded;
      break;
    case v1::JOB_STATE_CANCELLED:
      ++lane.cancelled;
      break;
    default:
      ++lane.failed;
      break;
  }
  --live_;
  const uint64_t spec_bytes = SpecBytes(*job.spec);
  OwnerUsage& usage = usage_[job.owner];
  --usage.live;
  usage.live_bytes -= spec_bytes;
  live_bytes_ -= spec_bytes;
  // The result the job did not keep, for its waiters.
  std::shared_ptr<const JobEnd> dropped = job.end != end ? end : nullptr;
  Event e;
  e.type = TerminalEventType(end->state);
  e.set_end(std::move(end));
  Emit(job, std::move(e), after);
  job.subscribers.clear();
  if (job.more != nullptr && !job.more->waiters.empty()) {
    auto snapshot = std::make_shared<v1::Job>(Snapshot(job));
    if (dropped != nullptr) SetEnd(*dropped, snapshot.get());
    for (Job::Waiter& w : job.more->waiters) {
      timers_.Cancel(w.timer);
      after.calls.push_back(
          [this, done = std::move(w.done), snapshot](bool durable) {
            done(durable ? absl::StatusOr<v1::Job>(*snapshot) : NotDurable());
          });
    }
    job.more->waiters.clear();
  }
  // Retained: its spec and end count against the byte budgets now.
  const uint64_t held = spec_bytes + job.end->bytes;
  ended_.push_back(job.id);
  usage.ended.push_back(job.id);
  ++retained_;
  retained_bytes_ += held;
  usage.retained_bytes += held;
  // `job` may be forgotten from here on.
  while (retained_ > limits_.max_retained ||
         (limits_.max_retained_bytes > 0 &&
          retained_bytes_ > limits_.max_retained_bytes)) {
    if (!EvictOldest()) break;
  }
  TrimOwner(usage, 0);
}

void Scheduler::OnProgress(v1::Executor kind, uint64_t id, double fraction,
                           std::string_view message) {
  std::string text = ClipUtf8(message, kMaxProgressMessageBytes);
  After after;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second->state != v1::JOB_STATE_RUNNING) {
      return;
    }
    Job& job = *it->second;
    auto progress = std::make_shared<v1::Progress>();
    progress->set_fraction(fraction);
    progress->set_message(std::move(text));
    Job::Extras& extras = job.extras();
    extras.progress = progress;
    const absl::Time now = clock_.Now();
    if (now - extras.last_progress_event < kProgressInterval) return;
    extras.last_progress_event = now;
    Event e;
    e.type = v1::EVENT_TYPE_PROGRESS;
    e.set_progress(std::move(progress));
    Emit(job, std::move(e), after);
  }
  after.Run(journal_);
}

size_t Scheduler::PrepareOutcome(JobOutcome& outcome) const {
  if (!outcome.status.ok()) {
    const absl::string_view m = outcome.status.message();
    const std::string_view message(m.data(), m.size());
    if (message.size() > kMaxErrorMessageBytes || !IsValidUtf8(message)) {
      outcome.status = absl::Status(outcome.status.code(),
                                    ClipUtf8(message, kMaxErrorMessageBytes));
    }
    return 0;
  }
  MakeValidUtf8(&outcome.output.value);
  const size_t bytes =
      ResultBytes(outcome.output.value, outcome.output.payload);
  const size_t limit = options_.max_message_bytes;
  if (limit > 0 && bytes + kMessageEnvelopeBytes > limit) {
    outcome.output = TaskOutput();  // Freed here, outside the lock.
  }
  return bytes;
}

void Scheduler::OnFinished(v1::Executor kind, std::span<FinishedJob> jobs) {
  // What tasks returned is made fit for the wire before the lock: valid
  // UTF-8, error messages cut, sizes known.
  absl::InlinedVector<size_t, 16> result_bytes(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    result_bytes[i] = PrepareOutcome(jobs[i].outcome);
  }
  After after;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < jobs.size(); ++i) {
      EndRun(kind, jobs[i].job_id, jobs[i].outcome, result_bytes[i], after);
    }
    Dispatch(kind, after);
  }
  after.Run(journal_);
}

size_t Scheduler::WireSpecBytes(const Job& job) {
  // The spec as a Job message carries it: with its task name (left out of
  // job.spec) and the field's framing.
  return SpecBytes(*job.spec) + job.task->name.size() + 16;
}

bool Scheduler::ResultFits(size_t result_bytes, const Job& job,
                           size_t* spec_bytes) const {
  const size_t limit = options_.max_message_bytes;
  if (limit == 0) return true;
  *spec_bytes = WireSpecBytes(job);
  return result_bytes + *spec_bytes + kMessageEnvelopeBytes <= limit;
}

void Scheduler::EndRun(v1::Executor kind, uint64_t id, JobOutcome& outcome,
                       size_t result_bytes, After& after) {
  Lane& lane = lanes_[kind];
  if (outcome.frees_slot) --lane.busy;
  if (outcome.wall_time > absl::ZeroDuration()) {
    lane.run_time = lane.run_time == absl::ZeroDuration()
                        ? outcome.wall_time
                        : (lane.run_time * 7 + outcome.wall_time) / 8;
  }
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = *it->second;
  router_.Record(*job.task, outcome.cpu_time, outcome.wall_time,
                 outcome.cpu_wait_time);
  if (job.state != v1::JOB_STATE_RUNNING) {
    spdlog::debug("job {} returned after it had ended ({}); output dropped", id,
                  v1::JobState_Name(job.state));
    return;
  }
  std::shared_ptr<JobEnd> end;
  size_t spec_bytes = 0;
  if (outcome.status.ok() && !ResultFits(result_bytes, job, &spec_bytes)) {
    end = ResultTooLarge(result_bytes, spec_bytes, options_.max_message_bytes);
  } else if (outcome.status.ok()) {
    end = std::make_shared<JobEnd>();
    end->state = v1::JOB_STATE_SUCCEEDED;
    v1::JobResult& result = end->mutable_result();
    *result.mutable_value() = std::move(outcome.output.value);
    if (!outcome.output.payload.empty()) {  // (An empty one costs a string.)
      result.set_payload(std::move(outcome.output.payload));
    }
  } else {
    const v1::ErrorReason reason =
        outcome.reason == v1::ERROR_REASON_UNSPECIFIED
            ? v1::ERROR_REASON_TASK_ERROR
            : outcome.reason;
    end = MakeError(
        reason == v1::ERROR_REASON_CANCELLED ? v1::JOB_STATE_CANCELLED
                                             : v1::JOB_STATE_FAILED,
        outcome.status.code(), reason, std::string(outcome.status.message()));
  }
  Finish(job, std::move(end), after);
}

void Scheduler::OnTimeout(uint64_t id) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second->state != v1::JOB_STATE_RUNNING) {
      return;
    }
    Job& job = *it->second;
    job.timeout_timer = 0;
    Abort(job, CancelReason::kTimeout,
          MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kDeadlineExceeded,
                    v1::ERROR_REASON_TIMEOUT,
                    fmt::format(
                        "job exceeded its timeout of {}",
                        absl::FormatDuration(FromProto(job.spec->timeout())))),
          after);
  }
  after.Run(journal_);
}

absl::StatusOr<std::pair<v1::JobState, bool>> Scheduler::Cancel(
    uint64_t id, std::string_view owner) {
  After after;
  std::pair<v1::JobState, bool> result;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || FindOwned(id, owner) == nullptr) {
      return absl::NotFoundError(fmt::format("job {} not found", id));
    }
    Job& job = *it->second;
    if (IsTerminal(job.state)) return std::make_pair(job.state, true);
    if (kept_for_restart_) {
      return absl::UnavailableError(fmt::format(
          "jobd is shutting down; job {} is kept for its next start", id));
    }
    result = {v1::JOB_STATE_CANCELLED, false};
    // `job` may be evicted by Abort (retention limits): not used after it.
    Abort(job, CancelReason::kCancelled,
          MakeError(v1::JOB_STATE_CANCELLED, absl::StatusCode::kCancelled,
                    v1::ERROR_REASON_CANCELLED, "cancelled by request"),
          after);
  }
  after.Run(journal_);
  return result;
}

void Scheduler::Abort(Job& job, CancelReason reason,
                      std::shared_ptr<JobEnd> end, After& after) {
  if (job.gated) {
    job.gated = false;  // Its claim stays in the lane; dropped at its turn.
  } else if (job.state == v1::JOB_STATE_QUEUED) {
    Lane& lane = lanes_[job.executor];
    --lane.queued;  // Its queue entry is now stale: dropped lazily, or here
    ++lane.stale;   // when the stale ones outnumber the live ones.
    if (lane.stale > 1024 && lane.stale > lane.queued) CompactQueue(lane);
  } else {
    job.run->cancel.Cancel(reason);
    lanes_[job.executor].executor->Cancel(job.id);
  }
  Finish(job, std::move(end), after);
}

void Scheduler::CompactQueue(Lane& lane) {
  for (auto bucket = lane.queue.begin(); bucket != lane.queue.end();) {
    std::deque<uint64_t>& ids = bucket->second;
    ids.erase(
        std::remove_if(ids.begin(), ids.end(),
                       [this](uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                         auto it = jobs_.find(id);
                         return it == jobs_.end() ||
                                it->second->state != v1::JOB_STATE_QUEUED;
                       }),
        ids.end());
    bucket = ids.empty() ? lane.queue.erase(bucket) : std::next(bucket);
  }
  lane.stale = 0;
}

absl::StatusOr<v1::Job> Scheduler::GetJob(uint64_t id,
                                          std::string_view owner) const {
  absl::MutexLock lock(&mu_);
  const Job* job = FindOwned(id, owner);
  if (job == nullptr) {
    return absl::NotFoundError(
        fmt::format("job {} not found (unknown or expired)", id));
  }
  return Snapshot(*job);
}

void Scheduler::ShowJob(uint64_t id, std::string_view owner,
                        JobCallback done) const {
  absl::StatusOr<v1::Job> job;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    const Job* found = FindOwned(id, owner);
    if (found == nullptr) {
      job = absl::NotFoundError(
          fmt::format("job {} not found (unknown or expired)", id));
    } else {
      job = Snapshot(*found);
      ticket = TicketOf(found->last_sequence);
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

uint64_t Scheduler::TicketOf(uint64_t sequence) const {
  auto batch = std::lower_bound(
      batch_sequences_.begin(), batch_sequences_.end(), sequence,
      [](const BatchSequences& b, uint64_t seq) { return b.last < seq; });
  return batch != batch_sequences_.end() && batch->first <= sequence
             ? batch->ticket
             : 0;
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

void Scheduler::WaitJob(uint64_t id, absl::Time deadline,
                        std::function<void(absl::StatusOr<v1::Job>)> done,
                        std::string_view owner) {
  absl::StatusOr<v1::Job> now_result;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || FindOwned(id, owner) == nullptr) {
      now_result = absl::NotFoundError(
          fmt::format("job {} not found (unknown or expired)", id));
    } else if (IsTerminal(it->second->state) || deadline <= clock_.Now()) {
      now_result = Snapshot(*it->second);
      const uint64_t ticket = TicketOf(it->second->last_sequence);
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
      it->second->extras().waiters.push_back(
          {waiter_id, timer, std::move(done)});
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
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (it->second->more == nullptr) return;
    auto& waiters = it->second->more->waiters;
    auto w =
        std::find_if(waiters.begin(), waiters.end(),
                     [&](const Job::Waiter& x) { return x.id == waiter_id; });
    if (w == waiters.end()) return;
    done = std::move(w->done);
    waiters.erase(w);
    snapshot = Snapshot(*it->second);
    ticket = TicketOf(it->second->last_sequence);
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
      if (FindOwned(id, subscriber.owner) == nullptr) {
        return absl::NotFoundError(
            fmt::format("job {} not found (unknown or expired)", id));
      }
    }
    const absl::flat_hash_set<uint64_t> wanted(ids.begin(), ids.end());
    auto deliver = [&](const Event& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if ((subscriber.mask & EventBit(e.type)) &&
          subscriber.sink->Deliver(e, subscriber.tag)) {
        after.flush.push_back(subscriber.sink);
      }
    };
    const uint64_t oldest =
        event_log_.empty() ? next_sequence_ : event_log_.front().sequence;
    result.oldest_retained_sequence = oldest;
    if (after_sequence > 0) {
      result.events_lost = after_sequence + 1 < oldest;
      // Sequences are increasing but not dense: a restored log holds only
      // the journaled events.
      auto first = std::lower_bound(
          event_log_.begin(), event_log_.end(), after_sequence + 1,
          [](const LoggedEvent& e, uint64_t seq) { return e.sequence < seq; });
      for (auto it = first; it != event_log_.end(); ++it) {
        if (!wanted.empty() && !wanted.contains(it->job_id)) continue;
        // Another owner's job, or one since forgotten, stays unseen.
        const Job* job = FindOwned(it->job_id, subscriber.owner);
        if (job != nullptr) deliver(Replay(*it, *job));
      }
    }
    if (ids.empty()) {
      watch_all_.push_back(subscriber);
    }
    for (uint64_t id : wanted) {
      Job& job = *jobs_.at(id);
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
      deliver(EndOf(job, TicketOf(job.last_sequence)));
    }
  }
  after.Run(journal_);
  return result;
}

Event Scheduler::EndOf(const Job& job, uint64_t ticket) const {
  Event e;
  e.sequence = job.last_sequence;
  e.job_id = job.id;
  e.type = TerminalEventType(job.state);
  e.time = job.finish_time;
  e.executor = job.executor;
  e.set_end(job.end);
  e.ticket = ticket;
  return e;
}

Event Scheduler::Replay(const LoggedEvent& logged, const Job& job) const {
  Event e;
  e.sequence = logged.sequence;
  e.job_id = logged.job_id;
  e.time = logged.time;
  e.type = logged.type;
  e.executor = logged.executor;
  if (e.type == v1::EVENT_TYPE_ACCEPTED) {
    e.set_task(job.task);
  } else if (e.type == v1::EVENT_TYPE_PROGRESS) {
    // The latest: older ones are not kept.
    if (job.more != nullptr) e.set_progress(job.more->progress);
  } else if (IsTerminal(e.type)) {
    e.set_end(job.end);
  }
  e.ticket = TicketOf(logged.sequence);
  return e;
}

void Scheduler::Unwatch(const EventSink* sink,
                        const std::vector<uint64_t>& ids) {
  absl::MutexLock lock(&mu_);
  auto same = [sink](const auto& s) { return s.sink.get() == sink; };
  watch_all_.erase(std::remove_if(watch_all_.begin(), watch_all_.end(), same),
                   watch_all_.end());
  for (uint64_t id : ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    auto& subs = it->second->subscribers;
    subs.erase(std::remove_if(subs.begin(), subs.end(), same), subs.end());
  }
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
  if (more != nullptr) *more = false;
  for (auto it = jobs_.upper_bound(query.after_id);
       it != jobs_.end() && out.size() < query.limit; ++it) {
    const Job& job = *it->second;
    if (!query.states.empty() &&
        std::find(query.states.begin(), query.states.end(), job.state) ==
            query.states.end()) {
      continue;
    }
    if (!query.task.empty() && job.task->name != query.task) continue;
    if (!query.owner.empty() && *job.owner != query.owner) continue;
    v1::Job snapshot = Snapshot(job);
    if (query.max_bytes > 0) {
      const size_t size = snapshot.ByteSizeLong() + 8;  // Tag and length.
      if (!out.empty() && bytes + size > query.max_bytes) {
        if (more != nullptr) *more = true;
        break;
      }
      bytes += size;
    }
    if (ticket != nullptr) {
      *ticket = std::max(*ticket, TicketOf(job.last_sequence));
    }
    out.push_back(std::move(snapshot));
  }
  return out;
}

v1::GetStatsResponse Scheduler::GetStats() const {
  v1::GetStatsResponse stats;
  std::vector<const JobExecutor*> executors;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 1; i < 4; ++i) {
      const Lane& lane = lanes_[i];
      v1::ExecutorStats* s = stats.add_executors();
      s->set_executor(static_cast<v1::Executor>(i));
      s->set_enabled(lane.executor != nullptr);
      s->set_workers(lane.executor ? lane.executor->capacity() : 0);
      s->set_busy(lane.busy);
      s->set_queued(lane.queued + lane.gated_jobs);
      s->set_completed(lane.succeeded);
      s->set_failed(lane.failed);
      s->set_cancelled(lane.cancelled);
      stats.set_succeeded(stats.succeeded() + lane.succeeded);
      stats.set_failed(stats.failed() + lane.failed);
      stats.set_cancelled(stats.cancelled() + lane.cancelled);
    }
    stats.set_accepted(accepted_);
    stats.set_rejected(rejected_);
    stats.set_live(live_);
    stats.set_retained(retained_);
    stats.set_live_bytes(live_bytes_);
    stats.set_retained_bytes(retained_bytes_);
    const absl::Time now = clock_.Now();
    *stats.mutable_uptime() = ToProtoDuration(now - start_time_);
    *stats.mutable_start_time() = ToProtoTime(start_time_);
    stats.set_last_sequence(next_sequence_ - 1);
    stats.set_draining(draining_);
    for (const Lane& lane : lanes_) {
      if (lane.executor) executors.push_back(lane.executor.get());
    }
  }
  // Executors may read /proc and take their own locks: not under mu_.
  for (const JobExecutor* e : executors) e->AddStats(stats);
  if (journal_ != nullptr) journal_->AddStats(stats);
  return stats;
}

bool Scheduler::IsQuarantined(const TaskDef& task) const {
  absl::MutexLock lock(&mu_);
  for (const Lane& lane : lanes_) {
    if (lane.executor && lane.executor->IsQuarantined(task)) return true;
  }
  return false;
}

bool Scheduler::ClearQuarantine(std::string_view task) {
  absl::MutexLock lock(&mu_);
  bool was = false;
  for (Lane& lane : lanes_) {
    if (lane.executor) was = lane.executor->ClearQuarantine(task) || was;
  }
  return was;
}

void Scheduler::CountRejected(uint64_t n) {
  absl::MutexLock lock(&mu_);
  rejected_ += n;
}

void Scheduler::SetLimits(const SchedulerOptions& options) {
  absl::MutexLock lock(&mu_);
  limits_.max_queued = options.max_queued;
  limits_.retention_ttl = options.retention_ttl;
  limits_.max_retained = options.max_retained;
  limits_.max_live_bytes = options.max_live_bytes;
  limits_.max_retained_bytes = options.max_retained_bytes;
  limits_.max_retained_result_bytes = options.max_retained_result_bytes;
}

bool Scheduler::ResizeExecutor(v1::Executor kind, int slots) {
  After after;
  bool resized;
  {
    absl::MutexLock lock(&mu_);
    Lane& lane = lanes_.at(kind);
    resized = lane.executor != nullptr && lane.executor->Resize(slots);
    if (resized) Dispatch(kind, after);  // Grown: queued jobs may start.
  }
  after.Run(journal_);
  return resized;
}

void Scheduler::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool Scheduler::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Scheduler::WaitNoneRunning(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

std::pair<std::vector<uint64_t>, size_t> Scheduler::EndForShutdown() {
  After after;
  std::vector<uint64_t> ended;
  size_t kept = 0;
  {
    absl::MutexLock lock(&mu_);
    // Collect first: ending a job may evict others from jobs_.
    std::vector<uint64_t> live;
    for (const auto& [id, job] : jobs_) {
      if (!IsTerminal(job->state)) live.push_back(id);
    }
    for (uint64_t id : live) {
      Job& job = *jobs_.at(id);
      if (journal_ != nullptr &&
          (job.state == v1::JOB_STATE_QUEUED ||
           job.spec->delivery() == v1::DELIVERY_AT_LEAST_ONCE)) {
        ++kept;
        if (job.gated) {
          // Claimed, never handed to its executor: queued again.
          job.gated = false;
          JournalState(job);
        }
        if (job.state == v1::JOB_STATE_RUNNING) {
          // Stopped here, queued for the next start; whatever its run
          // returns now is dropped (it is not RUNNING any more).
          job.run->cancel.Cancel(CancelReason::kShutdown);
          lanes_[job.executor].executor->Cancel(job.id);
          job.state = v1::JOB_STATE_QUEUED;
          --running_;
          JournalState(job);
        }
        continue;
      }
      ended.push_back(id);
      Abort(job, CancelReason::kShutdown,
            MakeError(v1::JOB_STATE_CANCELLED, absl::StatusCode::kUnavailable,
                      v1::ERROR_REASON_SHUTDOWN,
                      "jobd shut down before the job ended"),
            after);
    }
    kept_for_restart_ = journal_ != nullptr;
  }
  after.Run(journal_);
  return {ended, kept};
}

RestoreSummary Scheduler::Restore(Recovered recovered,
                                  const TaskRegistry& registry) {
  RestoreSummary summary;
  After after;
  {
    absl::MutexLock lock(&mu_);
    // 1. The records and the event log as they were.
    std::vector<LoggedEvent> log;
    std::vector<uint64_t> ended;
    // Jobs to fail in step 3, and why: their row could not be read back.
    absl::flat_hash_map<uint64_t, std::string> unreadable;
    for (JournalRow& row : recovered.rows) {
      auto job = std::make_unique<Job>();
      job->id = row.id;
      job->owner = Intern(row.owner);
      job->spec = std::move(row.spec);
      job->spec->ByteSizeLong();  // For SpecBytes.
      job->task = registry.Find(job->spec->task());
      if (job->task == nullptr) {  // Unknown to this daemon now.
        vanished_tasks_.push_back(TaskDef{.name = job->spec->task()});
        job->task = &vanished_tasks_.back();
      }
      job->state = row.state;
      job->executor = row.executor;
      job->create_time = row.create_time;
      job->start_time = row.start_time;
      job->finish_time = row.finish_time;
      job->end = std::move(row.end);
      bool rewrite = false;  // Its row changes.
      if (!row.problem.empty()) {
        // Failed as a live job below, the others untouched.
        job->state = v1::JOB_STATE_QUEUED;
        unreadable.emplace(row.id, std::move(row.problem));
      } else if (job->end != nullptr &&
                 job->end->state == v1::JOB_STATE_SUCCEEDED) {
        // Kept by an older jobd: a result that no reader could receive.
        const v1::JobResult& r = job->end->result();
        const size_t bytes = ResultBytes(r.value(), r.payload());
        size_t spec_bytes = 0;
        if (!ResultFits(bytes, *job, &spec_bytes)) {
          ++summary.unreadable;
          job->end =
              ResultTooLarge(bytes, spec_bytes, options_.max_message_bytes);
          job->state = row.state = v1::JOB_STATE_FAILED;
          rewrite = true;
        }
      }
      job->accepted_seq = row.accepted_seq;
      job->started_seq = row.started_seq;
      job->attempts = row.attempts;
      job->last_sequence =
          std::max({row.accepted_seq, row.started_seq, row.ended_seq});
      if (rewrite) JournalState(*job);
      auto add = [&](uint64_t seq, v1::EventType type, absl::Time time) {
        if (seq == 0) return;
        log.push_back({.sequence = seq,
                       .job_id = row.id,
                       .time = time,
                       .type = type,
                       .executor = row.executor});
      };
      add(row.accepted_seq, v1::EVENT_TYPE_ACCEPTED, row.create_time);
      add(row.started_seq, v1::EVENT_TYPE_STARTED, row.start_time);
      if (job->end != nullptr) {
        add(row.ended_seq, TerminalEventType(row.state), row.finish_time);
        ended.push_back(row.id);
      }
      if (!job->spec->idempotency_key().empty()) {
        idempotency_[IdempotencyKey(*job->owner,
                                    job->spec->idempotency_key())] = job->id;
      }
      next_id_ = std::max(next_id_, job->id + 1);
      jobs_.emplace(job->id, std::move(job));
    }
    std::sort(log.begin(), log.end(),
              [](const LoggedEvent& a, const LoggedEvent& b) {
                return a.sequence < b.sequence;
              });
    const size_t keep = std::min(log.size(), options_.event_log_size);
    event_log_.assign(std::make_move_iterator(log.end() - keep),
                      std::make_move_iterator(log.end()));
    next_sequence_ = std::max(next_sequence_, recovered.last_sequence + 1);
    // 2. Ended jobs: retained in the order they ended.
    std::sort(ended.begin(), ended.end(),
              [this](uint64_t a, uint64_t b)
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    return absl::Time(jobs_.at(a)->finish_time) <
                           absl::Time(jobs_.at(b)->finish_time);
                  });
    for (uint64_t id : ended) {
      const Job& job = *jobs_.at(id);
      // The journal set the end's size as it read it back.
      const uint64_t held = SpecBytes(*job.spec) + job.end->bytes;
      OwnerUsage& usage = usage_[job.owner];
      ended_.push_back(id);
      usage.ended.push_back(id);
      ++retained_;
      retained_bytes_ += held;
      usage.retained_bytes += held;
    }
    summary.retained = ended.size();
    SweepLocked();  // Restored beyond max_retained or the TTL.
    // 3. Live jobs: queued again, or lost. Collected first: ending one may
    // evict others from jobs_.
    std::vector<uint64_t> live;
    for (const auto& [id, owned] : jobs_) {
      if (!IsTerminal(owned->state)) live.push_back(id);
    }
    for (uint64_t id : live) {
      Job& job = *jobs_.at(id);
      ++live_;
      OwnerUsage& usage = usage_[job.owner];
      ++usage.live;
      usage.live_bytes += SpecBytes(*job.spec);
      live_bytes_ += SpecBytes(*job.spec);
      if (auto bad = unreadable.find(id); bad != unreadable.end()) {
        ++summary.unreadable;
        Finish(job,
               MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kDataLoss,
                         v1::ERROR_REASON_LOST_ON_RESTART,
                         fmt::format("jobd could not read this job back from "
                                     "its journal at restart: {}; what it was "
                                     "and did is lost",
                                     bad->second)),
               after);
        JournalState(job, /*insert=*/true);  // Rewrites the row whole.
        continue;
      }
      const bool was_running = job.state == v1::JOB_STATE_RUNNING;
      job.state = v1::JOB_STATE_QUEUED;
      std::string unrunnable;
      absl::StatusOr<TaskArgs> args =
          job.task->has_sync() || job.task->has_async()
              ? TaskRegistry::Bind(*job.task, job.spec)
              : absl::NotFoundError(fmt::format(
                    "task '{}' is not registered in this daemon any more",
                    job.spec->task()));
      absl::StatusOr<v1::Executor> executor = absl::FailedPreconditionError("");
      if (!args.ok()) {
        unrunnable = std::string(args.status().message());
      } else {
        job.run = std::make_shared<RunState>(*std::move(args));
        executor =
            router_.Route(*job.task, job.spec->kind(), job.spec->executor());
        if (!executor.ok())
          unrunnable = std::string(executor.status().message());
      }
      if (!unrunnable.empty()) {
        ++summary.unrunnable;
        Finish(
            job,
            MakeError(
                v1::JOB_STATE_FAILED, absl::StatusCode::kFailedPrecondition,
                v1::ERROR_REASON_INVALID_INPUT,
                "restored from the journal but cannot run here: " + unrunnable),
            after);
        continue;
      }
      if (was_running && job.spec->delivery() != v1::DELIVERY_AT_LEAST_ONCE) {
        ++summary.lost;
        Finish(job,
               MakeError(v1::JOB_STATE_FAILED, absl::StatusCode::kAborted,
                         v1::ERROR_REASON_LOST_ON_RESTART,
                         fmt::format("jobd stopped while the job ran or was "
                                     "about to (attempt {}); it is not run "
                                     "again (DELIVERY_AT_MOST_ONCE)",
                                     job.attempts)),
               after);
        continue;
      }
      ++(was_running ? summary.rerun : summary.queued);
      job.executor = *executor;
      if (was_running) JournalState(job);
      Lane& lane = lanes_[job.executor];
      lane.queue[job.spec->priority()].push_back(job.id);
      ++lane.queued;
    }
    for (int i = 0; i < 4; ++i) Dispatch(static_cast<v1::Executor>(i), after);
  }
  after.Run(journal_);
  return summary;
}

bool Scheduler::StopExecutors(absl::Time deadline) {
  std::vector<JobExecutor*> executors;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return true;
    stopped_ = true;
    draining_ = true;
    for (Lane& lane : lanes_) {
      if (lane.executor) executors.push_back(lane.executor.get());
    }
  }
  bool all = true;
  for (JobExecutor* e : executors) all = e->Shutdown(deadline) && all;
  return all;
}

void Scheduler::ScheduleSweep() {
  timers_.Schedule(clock_.Now() + options_.sweep_interval, [this] {
    SweepRetention();
    ScheduleSweep();
  });
}

void Scheduler::SweepRetention() {
  absl::MutexLock lock(&mu_);
  SweepLocked();
}

void Scheduler::SweepLocked() {
  const absl::Time now = clock_.Now();
  while (!ended_.empty()) {
    auto it = jobs_.find(ended_.front());
    if (it == jobs_.end()) {  // Forgotten already (its owner's quota).
      ended_.pop_front();
      continue;
    }
    if (retained_ <= limits_.max_retained &&
        (limits_.max_retained_bytes == 0 ||
         retained_bytes_ <= limits_.max_retained_bytes) &&
        it->second->finish_time + limits_.retention_ttl > now) {
      break;
    }
    ended_.pop_front();
    Evict(it->first);
  }
  RelieveJournal();
}

bool Scheduler::EvictOldest() {
  while (!ended_.empty()) {
    const uint64_t id = ended_.front();
    ended_.pop_front();
    if (jobs_.contains(id)) {
      Evict(id);
      return true;
    }
  }
  return false;
}

void Scheduler::TrimOwner(OwnerUsage& usage, uint64_t more) {
  if (usage.max_bytes == 0) return;
  while (!usage.ended.empty() &&
         usage.live_bytes + usage.retained_bytes + more > usage.max_bytes) {
    const uint64_t id = usage.ended.front();
    if (!jobs_.contains(id)) {  // Not expected: Evict keeps them in step.
      usage.ended.pop_front();
      continue;
    }
    Evict(id);  // Leaves its id in ended_, skipped later.
  }
}

void Scheduler::RelieveJournal() {
  if (journal_ == nullptr || retained_ == 0) return;
  const Journal::Usage u = journal_->usage();
  uint64_t to_free = 0;
  if (u.full) {
    // Writes fail for want of room: what is held (the live jobs, some not
    // written yet, and the retained ones) down to 3/4 of the cap, or at
    // least an eighth of it (SQLite's pages hold more than our count).
    if (u.write_errors == relieved_at_error_) return;  // Not retried yet.
    relieved_at_error_ = u.write_errors;
    const uint64_t held = live_bytes_ + retained_bytes_;
    const uint64_t target = u.max_bytes / 4 * 3;
    to_free =
        u.max_bytes == 0
            ? retained_bytes_ / 4  // The disk is full: a quarter.
            : std::max(u.max_bytes / 8, held > target ? held - target : 0);
  } else if (u.max_bytes > 0 && u.commits != relieved_at_commit_ &&
             u.used_bytes > u.max_bytes / 8 * 7) {
    to_free = u.used_bytes - u.max_bytes / 4 * 3;  // Down to 3/4.
    relieved_at_commit_ = u.commits;
  }
  if (to_free == 0) return;
  const uint64_t before = retained_bytes_;
  const size_t count = retained_;
  while (before - retained_bytes_ < to_free && EvictOldest()) {
  }
  spdlog::warn(
      "journal {}: {} of {} in use at the last commit{}; forgot the {} "
      "oldest ended job(s) ({}) early so that new jobs are not refused",
      u.full ? "full" : "nearly full", Bytes(u.used_bytes),
      u.max_bytes > 0 ? Bytes(u.max_bytes) : std::string("the disk"),
      u.full ? ", and writes fail" : "", count - retained_,
      Bytes(before - retained_bytes_));
}

void Scheduler::Evict(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  const Job& job = *it->second;
  if (job.end != nullptr) {  // Retained (always, as it stands).
    const uint64_t held = SpecBytes(*job.spec) + job.end->bytes;
    OwnerUsage& usage = usage_[job.owner];
    usage.retained_bytes -= held;
    retained_bytes_ -= held;
    --retained_;
    // Its owner's oldest (both queues are in end order).
    if (!usage.ended.empty() && usage.ended.front() == id) {
      usage.ended.pop_front();
    } else if (auto e = std::find(usage.ended.begin(), usage.ended.end(), id);
               e != usage.ended.end()) {
      usage.ended.erase(e);
    }
  }
  if (journal_ != nullptr) journal_->Delete(id);
  const std::string& spec_key = it->second->spec->idempotency_key();
  if (!spec_key.empty()) {
    auto k = idempotency_.find(IdempotencyKey(*it->second->owner, spec_key));
    if (k != idempotency_.end() && k->second == id) idempotency_.erase(k);
  }
  jobs_.erase(it);
}

JournalRow Scheduler::RowOf(const Job& job) const {
  JournalRow row;
  row.id = job.id;
  row.owner = *job.owner;
  row.spec = job.spec;
  // A claimed job may begin before its next record: at a restart it counts
  // as one that was running (it runs again or is lost, as its delivery says).
  row.state = job.gated ? v1::JOB_STATE_RUNNING : job.state;
  row.executor = job.executor;
  row.create_time = job.create_time;
  row.start_time = job.start_time;
  if (job.end != nullptr) {
    row.finish_time = job.finish_time;
    row.end = job.end;
    row.ended_seq = job.last_sequence;
  }
  row.accepted_seq = job.accepted_seq;
  row.started_seq = job.started_seq;
  row.attempts = job.attempts + (job.gated ? 1 : 0);
  return row;
}

void Scheduler::JournalState(const Job& job, bool insert) {
  if (journal_ == nullptr) return;
  if (insert) {
    journal_->Insert(RowOf(job));
  } else {
    journal_->Update(RowOf(job));
  }
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

v1::Job Scheduler::Snapshot(const Job& job) const {
  v1::Job out;
  out.set_id(std::to_string(job.id));
  out.set_owner(*job.owner);
  *out.mutable_spec() = *job.spec;
  out.set_state(job.state);
  out.set_executor(job.executor);
  *out.mutable_create_time() = ToProtoTime(job.create_time);
  if (job.start_time != absl::InfinitePast()) {
    *out.mutable_start_time() = ToProtoTime(job.start_time);
  }
  if (job.end != nullptr) {
    *out.mutable_finish_time() = ToProtoTime(job.finish_time);
    SetEnd(*job.end, &out);
  }
  if (job.more != nullptr && job.more->progress != nullptr) {
    *out.mutable_progress() = *job.more->progress;
  }
  out.set_last_sequence(job.last_sequence);
  out.set_attempts(job.attempts);
  return out;
}

}  // namespace jobd
