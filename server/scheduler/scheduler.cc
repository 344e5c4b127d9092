// The Scheduler's state machine: admission, starts (through the lanes),
// events, ends, cancellation and timeouts (scheduler.h).
#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "server/jobs/job_log.h"
#include "server/jobs/proto_time.h"
#include "server/scheduler/retry_policy.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/executor/run_sync_task.h"
#include "workers/sdk/utf8.h"

namespace jobd {

namespace {

// The fields of `job`'s log lines (server/jobs/job_log.h).
JobLogFields LogFields(const JobRecord& job) {
  const std::string_view traceparent = job.spec->traceparent();
  return {.job_id = job.id,
          .task = job.spec.task() != nullptr
                      ? std::string_view(job.spec.task()->name)
                      : std::string_view(),
          .executor = job.executor,
          .caller = *job.owner,
          // "00-<trace-id>-...": validated at admission.
          .trace_id = traceparent.size() >= 35 ? traceparent.substr(3, 32)
                                               : std::string_view()};
}

// A debug line per event of a job (not its progress).
void LogEvent(const JobRecord& job, const Event& e) {
  if (e.type == v1::EVENT_TYPE_PROGRESS ||
      !spdlog::should_log(spdlog::level::debug)) {
    return;
  }
  std::string what = absl::AsciiStrToLower(
      absl::StripPrefix(v1::EventType_Name(e.type), "EVENT_TYPE_"));
  if (e.end() != nullptr && e.end()->state != v1::JOB_STATE_SUCCEEDED) {
    const v1::JobError& error = e.end()->error();
    what +=
        fmt::format(" ({}): {}",
                    std::string(absl::StripPrefix(
                        v1::ErrorReason_Name(error.reason()), "ERROR_REASON_")),
                    ClipUtf8(error.message(), 512));
  }
  LogJob(spdlog::level::debug, LogFields(job), what);
}

}  // namespace

class Scheduler::Port : public ExecutorListener {
 public:
  Port(Scheduler& scheduler, v1::Executor kind)
      : scheduler_(scheduler), kind_(kind) {}
  void OnJobProgress(uint64_t job_id, double fraction,
                     std::string_view message) override {
    scheduler_.OnProgress(kind_, job_id, fraction, message);
  }
  void OnJobOutput(uint64_t job_id, v1::OutputStream stream,
                   std::string_view bytes) override {
    if (stream != v1::OUTPUT_STREAM_LOG) {
      scheduler_.AppendOutput(job_id, stream, bytes);
      return;
    }
    // A log line: valid UTF-8, cut, one line.
    std::string line = ClipUtf8(bytes, kMaxLogLineBytes);
    if (line.empty() || line.back() != '\n') line.push_back('\n');
    scheduler_.AppendOutput(job_id, stream, line);
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

Scheduler::Scheduler(SchedulerOptions options, const Clock& clock,
                     Journal* journal)
    : options_(std::move(options)),
      clock_(clock),
      journal_(journal),
      start_time_(clock.Now()),
      life_(std::make_shared<Life>()),
      outputs_({.per_job_bytes = options_.output_bytes_per_job,
                .total_bytes = options_.max_output_bytes}),
      limits_(options_),
      events_(options_.event_log_size, journal),
      retention_(table_, journal,
                 {.ttl = options_.retention_ttl,
                  .max_count = options_.max_retained,
                  .max_bytes = options_.max_retained_bytes}),
      keys_(options_.key_limits),
      timers_(clock) {
  {
    absl::MutexLock lock(&life_->mu);
    life_->self = this;
  }
  {
    absl::MutexLock lock(&mu_);
    retention_.set_on_forget([this](const Job& job) {
      if (job.output) outputs_.Forget(job.id);
    });
    for (Lane& lane : lanes_) {
      lane.SetCallerWeights(CallerWeights(options_.caller_weights));
    }
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
  lanes_.at(kind).set_executor(std::move(executor));
  // Command tasks' CPU-bound runs: queued and counted on the process
  // pool's lane, their programs waited for on the reactor.
  lanes_[v1::EXECUTOR_PROCESS].set_guest(
      lanes_[v1::EXECUTOR_REACTOR].executor());
}

void Scheduler::SetCallbackHook(CallbackHook* hook) {
  absl::MutexLock lock(&mu_);
  callback_hook_ = hook;
}

v1::Job Scheduler::Snapshot(const Job& job) const {
  v1::Job out = job.Snapshot();
  if (job.state == v1::JOB_STATE_WAITING && !deps_.empty()) {
    out.set_unmet_dependencies(deps_.Unmet(job.id));
  }
  if (callback_hook_ != nullptr && !out.spec().callback_url().empty()) {
    callback_hook_->Describe(job.id, &out);
  }
  return out;
}

void Scheduler::Submit(std::vector<NewJob>& jobs, const Subscriber& subscriber,
                       std::vector<Admission>& out, const OwnerQuota& quota) {
  After after;
  after.trivial_here = kTrivialRunsInSubmit;
  bool follow = false;
  {
    const bool journal_accepting = journal_ == nullptr || journal_->accepting();
    absl::MutexLock lock(&mu_);
    const absl::Time now = Now(after);
    std::array<bool, 4> touched = {false, false, false, false};
    // Jobs that will start at once in a free slot do not count as queued.
    std::array<int, 4> free_slots = {0, 0, 0, 0};
    // Held back by their key, or shared with the cluster.
    size_t queued = keys_.parked() + shared_;
    for (int i = 0; i < 4; ++i) {
      const Lane& lane = lanes_[i];
      queued += lane.queued();
      if (lane.executor() != nullptr && !draining_) {
        free_slots[i] = lane.FreeSlots();
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
      // (Another node's job is never journaled here: Redis holds it.)
      if (!journal_accepting && !nj.spec->in_memory() && !nj.foreign) {
        retention_.RelieveJournal();  // For the next try (at once if it can).
        adm.status = absl::UnavailableError(
            "jobd cannot write its journal (disk full or I/O error; see its "
            "log): not accepting new jobs until it can; retry later");
        ++rejected_;
        continue;
      }
      const std::string* owner = table_.Intern(nj.owner);
      const std::string& key = nj.spec->idempotency_key();
      // (A foreign job's key was its origin's to check.)
      if (Job* found = key.empty() || nj.foreign
                           ? nullptr
                           : table_.FindByKey(*owner, key)) {
        Job& job = *found;
        adm.job_id = job.id;
        adm.duplicate = true;
        AnswerAccepted(job, std::move(sub.sink), sub.tag, sub.mask,
                       /*duplicate=*/true, after);
        continue;
      }
      absl::StatusOr<v1::Executor> executor =
          router_.Route(*nj.task, nj.spec->kind(), nj.spec->executor());
      if (!executor.ok()) {
        adm.status = executor.status();
        ++rejected_;
        continue;
      }
      OwnerUsage& usage = table_.usage(owner);
      usage.max_bytes = quota.max_bytes;
      if (quota.max_live > 0 && usage.live >= quota.max_live) {
        adm.status = absl::ResourceExhaustedError(fmt::format(
            "caller '{}' has {} unfinished jobs and its limit is {} "
            "(quota-max-live); retry when some have ended",
            *owner, usage.live, quota.max_live));
        ++rejected_;
        continue;
      }
      // Its dependencies: those not ended yet to wait for, or how it
      // ends at once if one that ended is not met.
      std::vector<uint64_t> unmet;
      std::shared_ptr<JobEnd> dependency_end;
      if (nj.spec->depends_on_size() > 0) {
        absl::Status resolved =
            ResolveDependencies(*nj.spec, *owner, unmet, dependency_end);
        if (!resolved.ok()) {
          adm.status = std::move(resolved);
          ++rejected_;
          continue;
        }
      }
      const bool held = !unmet.empty() || dependency_end != nullptr;
      // A delayed job waits apart: it is not queued (nor starts) now.
      const bool delayed = held || FirstDue(*nj.spec, now) > now;
      const bool starts_now = !delayed && free_slots[*executor] > 0;
      // Would queue here: another node of the cluster may run it.
      // Its key is claimed in the cluster before it goes on.
      const bool claim = !delayed && Claimable(nj);
      const bool share = !claim && !starts_now && !delayed && Shareable(nj);
      if (!starts_now && !delayed && queued >= limits_.max_queued) {
        adm.status = absl::ResourceExhaustedError(
            fmt::format("queue full: {} jobs are queued and the limit is {} "
                        "(max_queued); retry later",
                        queued, limits_.max_queued));
        ++rejected_;
        continue;
      }
      const uint64_t bytes = SpecBytes(*nj.spec);
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
          table_.live_bytes() + bytes > limits_.max_live_bytes) {
        adm.status = absl::ResourceExhaustedError(fmt::format(
            "unfinished jobs hold {}, this one takes {}, and the limit is {} "
            "(max-live-bytes); retry later",
            Bytes(table_.live_bytes()), Bytes(bytes),
            Bytes(limits_.max_live_bytes)));
        ++rejected_;
        continue;
      }
      // Room for it within the owner's quota: its oldest results go first.
      retention_.TrimOwner(usage, bytes);
      auto job = std::make_unique<Job>();
      job->id = NewJobId();
      job->owner = owner;
      job->run = std::make_shared<Job::RunState>(std::move(nj.args));
      job->executor = *executor;
      job->create_time = now;
      job->spec = std::move(nj.spec);
      job->spec.set_task(nj.task);
      if (!claim) {
        job->subscribers.push_back({std::move(sub.sink), sub.tag, sub.mask});
      }
      if (nj.foreign) {
        job->cluster = Job::kForeign;
      } else if (share) {
        job->cluster = Job::kOutbox;  // Journaled so with its insert.
      }
      Job& ref = table_.Add(std::move(job));
      table_.CountLive(ref);
      adm.job_id = ref.id;
      adm.bytes = bytes;
      ++accepted_;
      if (options_.task_metrics) {
        task_counters_.CountAccepted(ref.spec.task(), ref.executor);
      }
      if (delayed) {  // Journaled WAITING with its due time (its insert).
        ref.state = v1::JOB_STATE_WAITING;
        ref.finish_time = FirstDue(*ref.spec, now);
      }
      Event e;
      e.type = v1::EVENT_TYPE_ACCEPTED;
      e.set_task(ref.spec.task(), ref.spec.body());
      Emit(ref, std::move(e), after);
      if (dependency_end != nullptr) {
        Finish(ref, std::move(dependency_end), after);
        continue;
      }
      if (!unmet.empty()) {  // WAITING for them, apart (scheduler_deps.cc).
        deps_.Add(ref.id, unmet);
        continue;
      }
      // Its dependencies ended already: their results, if it asks.
      if (!PassDependencyResults(ref, after)) continue;
      if (delayed) {
        Wait(ref, ref.finish_time);
        continue;
      }
      if (claim) {  // QUEUED here, out of the lanes, until it is claimed.
        HoldForClaim(ref, {std::move(sub.sink), sub.tag, sub.mask}, after);
        ++queued;
        continue;
      }
      if (share) {
        ShareJob(ref, after);  // QUEUED here, out of the lanes.
        ++queued;
        continue;
      }
      Enqueue(ref, now, /*journal=*/false, after);
      if (starts_now) {
        // A trivial job takes no slot (Hand).
        if (!RunsTrivially(lanes_[ref.executor], *ref.spec.task(), *ref.spec)) {
          --free_slots[ref.executor];
        }
      } else {
        ++queued;
      }
      touched[ref.executor] = true;
    }
    for (int i = 0; i < 4; ++i) {
      if (touched[i]) Dispatch(static_cast<v1::Executor>(i), after);
    }
    follow = !to_follow_.empty();
  }
  after.Run(journal_);
  if (follow) FollowNew();  // Other nodes' jobs it depends on.
}

void Scheduler::Dispatch(v1::Executor kind, After& after) {
  // Starts take the clock of their dispatch: a long call before it (a
  // restore of many jobs) must not age their start times and timeouts.
  after.now.reset();
  Lane& lane = lanes_[kind];
  if (lane.executor() == nullptr || stopped_) return;
  const bool gate = journal_ != nullptr;
  // Claimed jobs start even while draining (their claim is recorded).
  if (gate) StartDurable(kind, after);
  if (draining_) return;
  const int capacity = lane.capacity();
  const size_t window = gate ? lane.Window(capacity, journal_->commit_latency(),
                                           options_.start_window)
                             : 0;
  auto queued_job = [this](uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Job* job = table_.Find(id);
    return job != nullptr && job->state == v1::JOB_STATE_QUEUED ? job : nullptr;
  };
  while (lane.HasRoom(capacity, gate, window) && lane.queued() > 0) {
    const std::vector<Job*> jobs = lane.TakeChunk(queued_job);
    if (jobs.empty()) break;
    // A keyed job travels alone; held back by its key, it is parked there
    // and the jobs behind it go on.
    if (!jobs.front()->spec->concurrency_key().empty() &&
        !AcquireKey(*jobs.front())) {
      continue;
    }
    // Journaled jobs are claimed (handed over once the claim is durable);
    // in-memory ones, and all without a journal, are handed over now; so
    // are at-least-once ones while a slot is free (a crash runs them again
    // whether or not their start was durable).
    const bool slot_free = lane.SlotFree(capacity);
    // Taken into the claim window with no slot free, a chunk that cannot
    // be claimed (in memory) waits at the head of its queue for one,
    // unless it needs none (trivial).
    if (!slot_free &&
        !std::all_of(jobs.begin(), jobs.end(),
                     [&](Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                       return Journaled(*job);
                     }) &&
        !std::all_of(jobs.begin(), jobs.end(), [&](Job* job) {
          return RunsTrivially(lane, *job->spec.task(), *job->spec);
        })) {
      for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
        lane.PushFront((*it)->spec->priority(), (*it)->owner, (*it)->id);
      }
      break;
    }
    std::vector<JobRun> claimed, now;
    for (Job* job : jobs) {
      if (gate && Journaled(*job) && (NeedsClaim(*job) || !slot_free)) {
        claimed.push_back(PrepareRun(*job));
        job->gated = true;  // Claimed: its journal row says it may begin.
        JournalState(*job);
      } else {
        now.push_back(PrepareRun(*job));
        MarkStarted(*job, now.back(), after);
      }
    }
    if (!claimed.empty()) lane.Claim(std::move(claimed), journal_->ticket());
    if (!now.empty()) Hand(lane, std::move(now), after);
  }
  if (gate) StartDurable(kind, after);
  DispatchKeyed(after);
}

void Scheduler::StartDurable(v1::Executor kind, After& after) {
  Lane& lane = lanes_[kind];
  const int capacity = lane.capacity();
  const uint64_t durable = journal_->durable();
  while (std::optional<std::vector<JobRun>> chunk =
             lane.TakeDurable(capacity, durable)) {
    // Those cancelled (or put back at shutdown) meanwhile stay out. The
    // others start now: their run time, and their timeout, count from here.
    std::erase_if(*chunk, [&](JobRun& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      Job* job = table_.Find(run.job_id);
      if (job == nullptr || !job->gated || job->run == nullptr ||
          &job->run->cancel != run.cancel.get()) {
        return true;
      }
      job->gated = false;
      MarkStarted(*job, run, after);
      return false;
    });
    if (!chunk->empty()) Hand(lane, std::move(*chunk), after);
  }
  // Not durable yet: wake up when it is.
  if (const uint64_t ticket = lane.ArmGate(durable); ticket != 0) {
    after.gates.emplace_back(ticket, [life = life_, kind](bool is_durable) {
      if (!is_durable) return;  // Abandoned: shutting down.
      // (This may run again, nested, from its own AfterUnlock::Run.)
      IfAlive(life, [kind](Scheduler& self) { self.OnStartsDurable(kind); });
    });
  }
}

void Scheduler::OnStartsDurable(v1::Executor kind) {
  After after;
  after.trivial_here = kTrivialRunsOnJournal;
  {
    absl::MutexLock lock(&mu_);
    Dispatch(kind, after);
  }
  after.Run(journal_);
}

bool Scheduler::RunsTrivially(const Lane& lane, const TaskDef& task,
                              const v1::JobSpec& spec) {
  return task.trivial && SpecBytes(spec) <= kTrivialSpecBytes &&
         lane.executor() != nullptr && lane.executor()->runs_trivial();
}

void Scheduler::Hand(Lane& lane, std::vector<JobRun> chunk, After& after) {
  if (!std::all_of(chunk.begin(), chunk.end(), [&lane](const JobRun& run) {
        return RunsTrivially(lane, *run.task, *run.spec);
      })) {
    lane.Hand(std::move(chunk));
    return;
  }
  JobExecutor& executor = *lane.executor();
  if (after.trivial.empty()) {
    after.run_trivial = [this, &executor](std::vector<JobRun> runs, bool here) {
      if (here) {
        RunTrivial(std::move(runs));
      } else {
        executor.StartTrivial(std::move(runs));
      }
    };
  }
  for (JobRun& run : chunk) after.trivial.push_back(std::move(run));
}

void Scheduler::RunTrivial(std::vector<JobRun> runs) {
  // The runs reported below start more (AfterUnlock::Run calls back in
  // here): this thread's outermost call for this scheduler queues and runs
  // them all, so that a long chain of trivial jobs does not nest one call
  // per job. (Another scheduler's loop on this thread keeps its own.)
  struct Loop {
    const Scheduler* owner = nullptr;
    std::vector<JobRun>* queue = nullptr;
  };
  thread_local Loop loop;
  if (loop.owner == this) {
    for (JobRun& run : runs) loop.queue->push_back(std::move(run));
    return;
  }
  std::vector<JobRun> pending = std::move(runs);
  struct Restore {
    Loop outer;
    ~Restore() { loop = outer; }  // Also if a report throws.
  } restore{loop};
  loop = {this, &pending};
  while (!pending.empty()) {
    std::vector<JobRun> batch;
    batch.swap(pending);
    std::vector<FinishedJob> finished =
        RunTrivialTasks(batch, *ports_[v1::EXECUTOR_THREAD]);
    batch.clear();  // The runs' shares of their jobs go before the ends.
    OnFinished(v1::EXECUTOR_THREAD, std::span<FinishedJob>(finished));
  }
}

JobRun Scheduler::PrepareRun(Job& job) {
  job.run = std::make_shared<Job::RunState>(job.run->args);  // This run's.
  JobRun run;
  run.job_id = job.id;
  run.task = job.spec.task();
  run.spec = job.spec.body();
  run.args = std::shared_ptr<const TaskArgs>(job.run, &job.run->args);
  run.measure_cpu_wait = job.spec->kind() == v1::JOB_KIND_AUTO &&
                         router_.SampleCpuWait(*job.spec.task());
  run.cancel = std::shared_ptr<CancelToken>(job.run, &job.run->cancel);
  return run;
}

void Scheduler::AppendOutput(uint64_t id, v1::OutputStream stream,
                             std::string_view bytes) {
  if (bytes.empty() || outputs_.Append(id, stream, bytes)) return;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    // Output of a job not running (not started, or ended) is dropped.
    if (job == nullptr || !RunMayWrite(*job)) return;
    // (Opened again if another first write raced this one here.)
    MarkOutput(*job);
  }
  outputs_.Append(id, stream, bytes);
}

bool Scheduler::RunMayWrite(const Job& job) {
  // A run stopped at its timeout, to be retried, writes until it returns.
  return job.state == v1::JOB_STATE_RUNNING || job.run_returning;
}

void Scheduler::MarkOutput(Job& job) {
  job.output = true;
  if (RunMayWrite(job)) outputs_.Open(job.id);  // Else at its start.
}

absl::Time Scheduler::Now(After& after) const {
  if (!after.now.has_value()) after.now = clock_.Now();
  return *after.now;
}

void Scheduler::MarkStarted(Job& job, JobRun& run, After& after) {
  const absl::Time now = Now(after);
  job.state = v1::JOB_STATE_RUNNING;
  job.start_time = now;
  ++running_;
  ++job.attempts;
  if (options_.task_metrics) {
    // Queued since its acceptance or, if it waited (a delay, a retry's
    // backoff), since it fell due: finish_time holds its due time then.
    const absl::Time queued_since =
        std::max(absl::Time(job.create_time), absl::Time(job.finish_time));
    task_counters_.CountStarted(job.spec.task(), job.executor,
                                now - queued_since);
  }
  if (job.timeout_timer != 0) {  // Its start or total deadline, queued.
    timers_.Cancel(job.timeout_timer);
    job.timeout_timer = 0;
  }
  if (job.output) outputs_.Open(job.id);  // Else at its first write.
  ArmTimeout(job, run, now);
  Event e;
  e.type = v1::EVENT_TYPE_STARTED;
  Emit(job, std::move(e), after);
}

void Scheduler::ArmTimeout(Job& job, JobRun& run, absl::Time now) {
  // The run's timeout, or the job's total deadline if that comes first.
  absl::Time deadline =
      TotalExpiry(*job.spec, FirstDue(*job.spec, job.create_time));
  if (job.spec->has_timeout()) {
    deadline = std::min(deadline, now + FromProto(job.spec->timeout()));
  }
  if (deadline == absl::InfiniteFuture()) return;
  run.deadline = deadline;
  const uint64_t id = job.id;
  job.timeout_timer =
      timers_.Schedule(run.deadline, [this, id] { OnTimeout(id); });
}

void Scheduler::Emit(Job& job, Event event, After& after) {
  event.sequence = events_.NextSequence();
  event.job_id = job.id;
  event.time = Now(after);
  event.executor = job.executor;
  job.last_sequence = event.sequence;
  if (event.type == v1::EVENT_TYPE_ACCEPTED) {
    job.accepted_seq = event.sequence;
  } else if (event.type == v1::EVENT_TYPE_STARTED) {
    job.started_seq = event.sequence;
  }
  // A push callback (server/callbacks) gets the terminal event; its record
  // is journaled with the job's end, in the same transaction.
  std::optional<CallbackRecord> callback;
  if (callback_hook_ != nullptr && IsTerminal(event.type) &&
      job.spec != nullptr && !job.spec->callback_url().empty()) {
    callback = callback_hook_->OnEnded(job.id, job.spec->callback_url(), event);
  }
  if (!Journaled(job)) {
    // In memory: nothing to wait for but the reservations of its id
    // (NewJobId) and its sequence, durable long before as a rule.
    if (journal_ != nullptr) {
      event.ticket = std::max(ids_reserved_.TicketOf(job.id),
                              events_.ReservationTicket(event.sequence));
    }
  } else {
    // The record first, then the ticket: the event must not be delivered
    // before the state it announces is durable, so it waits for the batch
    // its record joined (a progress event has none: its sequence's
    // reservation alone).
    uint64_t ticket = 0;
    if (callback.has_value()) {
      ticket = journal_->Update(job.Row(), *callback);
    } else if (event.type != v1::EVENT_TYPE_PROGRESS) {
      ticket = JournalState(job,
                            /*insert=*/event.type == v1::EVENT_TYPE_ACCEPTED);
    }
    event.ticket = events_.JoinBatch(event.sequence, ticket);
    after.ticket = std::max(after.ticket, event.ticket);
  }
  if (callback.has_value()) {
    callback_hook_->Deliver(*std::move(callback), event.ticket);
  }
  // Never a duplicate ACCEPTED (those go to their caller alone).
  events_.Append(event);
  LogEvent(job, event);
  events_.FanOut(event, job, after.flush);
}

void Scheduler::Finish(Job& job, std::shared_ptr<JobEnd> end, After& after) {
  end->bytes = EndBytes(*end);
  const v1::JobState previous = job.state;
  job.state = end->state;
  job.finish_time = Now(after);
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
  if (!remote_results_.empty()) remote_results_.erase(job.id);
  if (job.cluster == Job::kOutbox || job.cluster == Job::kPublished) {
    --shared_;
  }
  if (job.output) {
    for (auto& wake : outputs_.End(job.id)) {
      after.wakes.push_back(std::move(wake));
    }
  }
  if (job.timeout_timer != 0) {
    timers_.Cancel(job.timeout_timer);
    job.timeout_timer = 0;
  }
  if (previous == v1::JOB_STATE_RUNNING) {
    --running_;  // Its key is held until its run returns (EndRun).
  } else {
    ReleaseKey(job.id);  // Claimed, or granted its key, and never started.
  }
  lanes_[job.executor].CountEnd(end->state);
  table_.CountEnded(job);
  if (options_.task_metrics) {
    const absl::Time started = job.start_time;
    task_counters_.CountEnd(
        job.spec.task(), job.executor, end->state, end->error().reason(),
        // Not run now (queued, or kept from before a
        // restart with its old start): no run time.
        previous != v1::JOB_STATE_RUNNING || started == absl::InfinitePast()
            ? absl::Seconds(-1)
            : absl::Time(job.finish_time) - started);
  }
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
  if (!deps_.empty()) deps_.Remove(job.id);  // Ended while waiting.
  const uint64_t id = job.id;
  const v1::JobState state = job.state;
  const v1::ErrorReason reason = job.end->error().reason();
  // Retained: its spec and end count against the byte budgets now.
  retention_.Retain(job);  // `job` may be forgotten from here on.
  DependencyEnded(id, state, reason, after);
}

void Scheduler::OnProgress(v1::Executor kind, uint64_t id, double fraction,
                           std::string_view message) {
  std::string text = ClipUtf8(message, kMaxProgressMessageBytes);
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    if (job == nullptr || job->state != v1::JOB_STATE_RUNNING) return;
    auto progress = std::make_shared<v1::Progress>();
    progress->set_fraction(fraction);
    progress->set_message(std::move(text));
    Progressed(*job, std::move(progress), after);
  }
  after.Run(journal_);
}

void Scheduler::Progressed(Job& job,
                           std::shared_ptr<const v1::Progress> progress,
                           After& after) {
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
  const size_t bytes = ResultBytes(
      outcome.output.value, outcome.output.payload,
      BatchBytes(outcome.output.results, outcome.output.call_errors));
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
  // A pool thread (or one running trivial jobs) runs the next ones.
  after.trivial_here =
      kind == v1::EXECUTOR_THREAD ? std::numeric_limits<size_t>::max() : 0;
  {
    absl::MutexLock lock(&mu_);
    bool guests = false;
    for (size_t i = 0; i < jobs.size(); ++i) {
      guests |=
          EndRun(kind, jobs[i].job_id, jobs[i].outcome, result_bytes[i], after);
    }
    Dispatch(kind, after);
    // A guest's slot is free again on the process pool's lane.
    if (guests) Dispatch(v1::EXECUTOR_PROCESS, after);
  }
  after.Run(journal_);
}

bool Scheduler::EndRun(v1::Executor kind, uint64_t id, JobOutcome& outcome,
                       size_t result_bytes, After& after) {
  Lane& pool_lane = lanes_[v1::EXECUTOR_PROCESS];
  const bool guest = kind == v1::EXECUTOR_REACTOR && pool_lane.RunsAsGuest(id);
  if (guest) {
    pool_lane.GuestReturned(id);
    pool_lane.Returned(outcome);
  } else {
    lanes_[kind].Returned(outcome);
  }
  ReleaseKey(id);  // Its run returned: its key is free.
  Job* found = table_.Find(id);
  if (found == nullptr) return guest;
  Job& job = *found;
  router_.Record(*job.spec.task(), outcome.cpu_time, outcome.wall_time,
                 outcome.cpu_wait_time);
  if (job.state != v1::JOB_STATE_RUNNING) {
    if (spdlog::should_log(spdlog::level::debug)) {
      LogJob(spdlog::level::debug, LogFields(job),
             fmt::format("returned after it had ended ({}); its result was "
                         "dropped",
                         v1::JobState_Name(job.state)));
    }
    RunReturned(job);
    return guest;
  }
  std::shared_ptr<JobEnd> end;
  size_t spec_bytes = 0;
  if (outcome.status.ok() &&
      !ResultFits(result_bytes, job, options_.max_message_bytes, &spec_bytes)) {
    end = ResultTooLarge(result_bytes, spec_bytes, options_.max_message_bytes);
  } else if (outcome.status.ok()) {
    end = std::make_shared<JobEnd>();
    end->state = v1::JOB_STATE_SUCCEEDED;
    v1::JobResult& result = end->mutable_result();
    *result.mutable_value() = std::move(outcome.output.value);
    if (!outcome.output.payload.empty()) {  // (An empty one costs a string.)
      result.set_payload(std::move(outcome.output.payload));
    }
    if (!outcome.output.results.empty()) {  // A batch's.
      v1::BatchResult& batch = *result.mutable_batch();
      batch.set_results(std::move(outcome.output.results));
      for (v1::CallError& e : outcome.output.call_errors) {
        *batch.add_call_errors() = std::move(e);
      }
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
    if (RetryRun(job, *end, /*stop_run=*/false, after)) return guest;
  }
  Finish(job, std::move(end), after);
  return guest;
}

void Scheduler::OnTimeout(uint64_t id) {
  After after;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.Find(id);
    if (job == nullptr || job->state != v1::JOB_STATE_RUNNING) return;
    job->timeout_timer = 0;
    // Past the total deadline: no retry. Else a timeout, which may retry.
    std::shared_ptr<JobEnd> end = DeadlineEnd(*job, clock_.Now());
    if (end == nullptr) {
      end = MakeError(
          v1::JOB_STATE_FAILED, absl::StatusCode::kDeadlineExceeded,
          v1::ERROR_REASON_TIMEOUT,
          fmt::format("job exceeded its timeout of {}",
                      absl::FormatDuration(FromProto(job->spec->timeout()))));
      if (RetryRun(*job, *end, /*stop_run=*/true, after)) end = nullptr;
    }
    if (end != nullptr) {
      Abort(*job, CancelReason::kTimeout, std::move(end), after);
    }
    DispatchKeyed(after);
  }
  after.Run(journal_);
}

absl::StatusOr<std::pair<v1::JobState, bool>> Scheduler::Cancel(
    uint64_t id, std::string_view owner) {
  After after;
  std::pair<v1::JobState, bool> result;
  {
    absl::MutexLock lock(&mu_);
    Job* job = table_.FindOwned(id, owner);
    if (job == nullptr) {
      return absl::NotFoundError(fmt::format("job {} not found", id));
    }
    if (IsTerminal(job->state)) return std::make_pair(job->state, true);
    if (kept_for_restart_) {
      return absl::UnavailableError(fmt::format(
          "jobd is shutting down; job {} is kept for its next start", id));
    }
    result = {v1::JOB_STATE_CANCELLED, false};
    // `job` may be evicted by Abort (retention limits): not used after it.
    Abort(*job, CancelReason::kCancelled,
          MakeError(v1::JOB_STATE_CANCELLED, absl::StatusCode::kCancelled,
                    v1::ERROR_REASON_CANCELLED, "cancelled by request"),
          after);
    DispatchKeyed(after);  // A key it held may start another job.
  }
  after.Run(journal_);
  return result;
}

void Scheduler::Abort(Job& job, CancelReason reason,
                      std::shared_ptr<JobEnd> end, After& after) {
  if (job.gated) {
    job.gated = false;  // Its claim stays in the lane; dropped at its turn.
  } else if (job.state == v1::JOB_STATE_WAITING) {
    waiting_.Remove(job.id, job.finish_time);  // Its timer may fire idle.
  } else if (job.parked) {
    job.parked = false;  // Not in its lane: in its key.
    keys_.Unpark(job.spec->concurrency_key(), job.id, job.spec->priority());
  } else if (ReleaseClaim(job, after)) {
    // Held for its key's claim: in no lane; its submitter follows its end.
  } else if (job.cluster == Job::kOutbox || job.cluster == Job::kPublished) {
    // Shared: in no lane. Cancelled or expired here, it is withdrawn from
    // the cluster (a run elsewhere is stopped; its end is dropped). At
    // shutdown it is not: it stays shared for the next start.
    if (work_share_ != nullptr && reason != CancelReason::kShutdown) {
      work_share_->Withdraw(job.id, absl::ToUnixNanos(job.create_time));
    }
  } else if (job.state == v1::JOB_STATE_QUEUED) {
    lanes_[job.executor].Unqueue(
        job.id, [this](uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          const Job* queued = table_.Find(id);
          return queued != nullptr && queued->state == v1::JOB_STATE_QUEUED;
        });
  } else {
    job.run->cancel.Cancel(reason);
    lanes_[job.executor].CancelRun(job.id);
  }
  Finish(job, std::move(end), after);
}

uint64_t Scheduler::NewJobId() {
  const uint64_t id = table_.NextId();
  if (journal_ != nullptr) {
    ids_reserved_.Before(
        id, [this](uint64_t up_to) { return journal_->ReserveJobIds(up_to); });
  }
  return id;
}

uint64_t Scheduler::JournalState(const Job& job, bool insert) {
  if (!Journaled(job)) return 0;
  // Only a claim (its run waits for it) and an end start a commit; the
  // other records wait for company, the end's commit as a rule: a short
  // at-least-once job's accept, start and end take one commit; an
  // at-most-once one's accept and claim one, its start and end the next.
  const Journal::Linger linger = !IsTerminal(job.state) && !job.gated
                                     ? Journal::Linger::kYes
                                     : Journal::Linger::kNo;
  return insert ? journal_->Insert(job.Row(), linger)
                : journal_->Update(job.Row(), linger);
}

}  // namespace jobd
