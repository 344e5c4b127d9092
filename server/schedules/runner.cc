#include "server/schedules/runner.h"

#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/jobs/job_id.h"
#include "spdlog/spdlog.h"

namespace jobd::schedules {
namespace {

// A slot more than this late when its timer fires counts as missed (the
// catch-up policy decides), as do all but the latest of several due at once.
constexpr absl::Duration kOnTime = absl::Seconds(10);
// How soon a slot is tried again while jobd drains or its journal fails.
constexpr absl::Duration kRetry = absl::Seconds(1);

// Runs' events are for watchers and GetJob; the runner keeps none.
class NullSink : public EventSink {
 public:
  bool Deliver(const Event&, uint64_t) override { return false; }
  void Flush() override {}
};

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}
void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t s = absl::ToUnixSeconds(t);
  out->set_seconds(s);
  out->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s))));
}

// The run of `slot`: the template with its labels and idempotency key.
v1::JobSpec RunSpec(const std::string& id, const v1::JobSpec& job,
                    absl::Time slot) {
  v1::JobSpec spec = job;
  (*spec.mutable_labels())["jobd.schedule"] = id;
  (*spec.mutable_labels())["jobd.slot"] =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", slot, absl::UTCTimeZone());
  spec.set_idempotency_key(
      absl::StrCat("schedule:", id, ":", absl::ToUnixSeconds(slot)));
  return spec;
}

// The template's error, named under `prefix`.job (ValidateSpec names its
// fields spec.*).
absl::Status TemplateError(const absl::Status& s, const std::string& prefix) {
  std::string message(s.message());
  if (absl::StartsWith(message, "spec.")) message = message.substr(5);
  return absl::Status(s.code(), absl::StrCat(prefix, ".job.", message));
}

}  // namespace

ScheduleRunner::ScheduleRunner(Scheduler& scheduler, Journal* journal,
                               const Clock& clock, MakeJob make_job,
                               RunnerOptions options)
    : scheduler_(scheduler),
      journal_(journal),
      clock_(clock),
      make_job_(std::move(make_job)),
      options_(options),
      sink_(std::make_shared<NullSink>()),
      timers_(clock) {}

ScheduleRunner::~ScheduleRunner() { Stop(); }

void ScheduleRunner::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }
  timers_.Stop();  // Joins the timer thread: never under mu_.
}

absl::Time ScheduleRunner::Baseline(const v1::Schedule& s) {
  return s.has_last_slot_time() ? FromProto(s.last_slot_time())
                                : FromProto(s.create_time());
}

v1::Schedule ScheduleRunner::Render(const Entry& e) const {
  v1::Schedule s = e.state;
  if (!s.paused() && e.timing) {
    const absl::Time next = e.timing->Next(Baseline(s));
    if (next != absl::InfiniteFuture()) {
      ToProto(next, s.mutable_next_fire_time());
    }
  }
  return s;
}

void ScheduleRunner::Arm(const std::string& id, Entry& e, absl::Time when) {
  Disarm(e);
  if (!started_ || stopped_ || e.state.paused() ||
      when == absl::InfiniteFuture()) {
    return;
  }
  e.timer = timers_.Schedule(when, [this, id] { Fire(id); });
}

void ScheduleRunner::Disarm(Entry& e) {
  if (e.timer != 0) timers_.Cancel(e.timer);
  e.timer = 0;
}

uint64_t ScheduleRunner::Persist(const Entry& e) {
  if (journal_ == nullptr) return 0;
  return journal_->PutSchedule(e.state.id(), e.state.SerializeAsString());
}

void ScheduleRunner::Restore(
    const std::vector<std::pair<std::string, std::string>>& rows) {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, body] : rows) {
    Entry e;
    if (!e.state.ParseFromString(body) || e.state.id() != id) {
      spdlog::error(
          "schedules: the journal's row of '{}' does not parse; "
          "left alone",
          id);
      continue;
    }
    absl::StatusOr<Timing> timing = Timing::Parse(e.state.spec(), "spec");
    if (!timing.ok()) {
      spdlog::error("schedules: '{}' from the journal: {}; left alone", id,
                    timing.status().ToString());
      continue;
    }
    e.timing = *std::move(timing);
    entries_[id] = std::move(e);
  }
}

void ScheduleRunner::Start() {
  absl::MutexLock lock(&mu_);
  started_ = true;
  const absl::Time now = clock_.Now();
  // Each at once: what was missed is settled first.
  for (auto& [id, e] : entries_) Arm(id, e, now);
}

absl::StatusOr<Timing> ScheduleRunner::Check(const std::string& id,
                                             const v1::ScheduleSpec& spec,
                                             const std::string& prefix) const {
  if (absl::Status s = ValidateScheduleId(id, "id"); !s.ok()) return s;
  absl::StatusOr<Timing> timing = Timing::Parse(spec, prefix);
  if (!timing.ok()) return timing.status();
  if (!spec.has_job()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ".job: missing: the job each slot runs"));
  }
  if (!spec.job().idempotency_key().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix,
        ".job.idempotency_key: must be empty (jobd gives each slot's run "
        "its own)"));
  }
  // The template, as a run of it would be checked.
  if (absl::StatusOr<NewJob> job =
          make_job_(RunSpec(id, spec.job(), clock_.Now()));
      !job.ok()) {
    return TemplateError(job.status(), prefix);
  }
  return timing;
}

ScheduleRunner::Entry& ScheduleRunner::Insert(const std::string& id,
                                              const v1::ScheduleSpec& spec,
                                              Timing timing, bool paused,
                                              const std::string& owner,
                                              bool from_config) {
  Entry& e = entries_[id];
  e.state.set_id(id);
  *e.state.mutable_spec() = spec;
  e.state.set_paused(paused);
  e.state.set_owner(owner);
  e.state.set_from_config(from_config);
  ToProto(clock_.Now(), e.state.mutable_create_time());
  e.timing = std::move(timing);
  return e;
}

absl::StatusOr<Changed<std::pair<v1::Schedule, bool>>> ScheduleRunner::Create(
    const std::string& id, const v1::ScheduleSpec& spec, bool paused,
    const std::string& owner) {
  absl::StatusOr<Timing> timing = Check(id, spec, "spec");
  if (!timing.ok()) return timing.status();
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(id); it != entries_.end()) {
    const v1::Schedule& old = it->second.state;
    if (old.owner() == owner && !old.from_config() &&
        google::protobuf::util::MessageDifferencer::Equivalent(old.spec(),
                                                               spec)) {
      return Changed<std::pair<v1::Schedule, bool>>{
          {Render(it->second), true},
          journal_ == nullptr ? 0 : journal_->ticket()};
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "id: schedule '", id, "' exists",
        old.from_config()      ? " (defined in the config file)"
        : old.owner() == owner ? " with another spec (delete it first)"
                               : " (another caller's)"));
  }
  if (entries_.size() >= options_.max_schedules) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "jobd holds ", entries_.size(), " schedules and its limit is ",
        options_.max_schedules, "; delete some first"));
  }
  Entry& e = Insert(id, spec, *std::move(timing), paused, owner, false);
  const uint64_t ticket = Persist(e);
  Arm(id, e, e.timing->Next(Baseline(e.state)));
  return Changed<std::pair<v1::Schedule, bool>>{{Render(e), false}, ticket};
}

absl::StatusOr<v1::Schedule> ScheduleRunner::Get(const std::string& id,
                                                 std::string_view owner) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() ||
      (!owner.empty() && it->second.state.owner() != owner)) {
    return absl::NotFoundError(absl::StrCat("no schedule '", id, "'"));
  }
  return Render(it->second);
}

std::vector<v1::Schedule> ScheduleRunner::List(std::string_view owner) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Schedule> out;
  for (const auto& [id, e] : entries_) {
    if (owner.empty() || e.state.owner() == owner) out.push_back(Render(e));
  }
  return out;
}

absl::StatusOr<Changed<v1::Schedule>> ScheduleRunner::SetPaused(
    const std::string& id, std::string_view owner, bool paused) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() ||
      (!owner.empty() && it->second.state.owner() != owner)) {
    return absl::NotFoundError(absl::StrCat("no schedule '", id, "'"));
  }
  Entry& e = it->second;
  if (e.state.paused() == paused) {
    return Changed<v1::Schedule>{Render(e),
                                 journal_ == nullptr ? 0 : journal_->ticket()};
  }
  e.state.set_paused(paused);
  if (paused) {
    Disarm(e);
  } else {
    // The slots that passed while it was paused are passed over.
    const absl::Time now = clock_.Now();
    const Timing::Due due = e.timing->DueIn(Baseline(e.state), now, 1);
    if (due.count > 0) {
      ToProto(e.timing->DueIn(Baseline(e.state), now).latest,
              e.state.mutable_last_slot_time());
    }
    Arm(id, e, e.timing->Next(Baseline(e.state)));
  }
  const uint64_t ticket = Persist(e);
  return Changed<v1::Schedule>{Render(e), ticket};
}

absl::StatusOr<Changed<bool>> ScheduleRunner::Delete(const std::string& id,
                                                     std::string_view owner,
                                                     bool config) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() ||
      (!owner.empty() && it->second.state.owner() != owner)) {
    return Changed<bool>{false, journal_ == nullptr ? 0 : journal_->ticket()};
  }
  if (it->second.state.from_config() && !config) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schedule '", id,
        "' is defined in the config file: remove it there (and reload or "
        "restart jobd)"));
  }
  Disarm(it->second);
  entries_.erase(it);
  return Changed<bool>{true,
                       journal_ == nullptr ? 0 : journal_->DeleteSchedule(id)};
}

std::vector<absl::Status> ScheduleRunner::ApplyConfig(
    const std::vector<ConfigSchedule>& schedules) {
  std::vector<absl::Status> errors;
  std::set<std::string> listed;
  for (size_t i = 0; i < schedules.size(); ++i) {
    const ConfigSchedule& c = schedules[i];
    listed.insert(c.id);
    absl::StatusOr<Timing> timing =
        Check(c.id, c.spec, absl::StrCat("schedule[", i, "]"));
    absl::Status s = timing.status();
    if (timing.ok()) {
      absl::MutexLock lock(&mu_);
      auto it = entries_.find(c.id);
      if (it != entries_.end() && !it->second.state.from_config()) {
        s = absl::AlreadyExistsError(absl::StrCat(
            "id: '", c.id, "' is taken by a schedule created over the API"));
      } else if (it == entries_.end() ||
                 !google::protobuf::util::MessageDifferencer::Equivalent(
                     it->second.state.spec(), c.spec)) {
        // New, or replaced keeping its latest slot and counters.
        std::optional<v1::Schedule> old;
        if (it != entries_.end()) {
          Disarm(it->second);
          old = std::move(it->second.state);
          entries_.erase(it);
        } else if (entries_.size() >= options_.max_schedules) {
          s = absl::ResourceExhaustedError(absl::StrCat(
              "jobd holds ", entries_.size(), " schedules and its limit is ",
              options_.max_schedules));
        }
        if (s.ok()) {
          Entry& e = Insert(c.id, c.spec, *std::move(timing), c.paused,
                            "config", true);
          if (old) {
            v1::Schedule kept = *std::move(old);
            *kept.mutable_spec() = c.spec;
            kept.set_paused(c.paused);
            e.state = std::move(kept);
          }
          Persist(e);
          Arm(c.id, e, e.timing->Next(Baseline(e.state)));
        }
      }
    }
    if (!s.ok()) {
      errors.push_back(absl::Status(
          s.code(), absl::StrCat("schedule '", c.id, "': ", s.message())));
    }
  }
  std::vector<std::string> gone;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : entries_) {
      if (e.state.from_config() && !listed.contains(id)) gone.push_back(id);
    }
  }
  for (const std::string& id : gone) Delete(id, {}, true).IgnoreError();
  return errors;
}

void ScheduleRunner::AddStats(v1::GetStatsResponse& stats) const {
  absl::MutexLock lock(&mu_);
  stats.set_schedules(entries_.size());
  stats.set_schedule_runs(runs_);
  stats.set_schedule_skipped(skipped_);
  stats.set_schedule_missed(missed_);
}

void ScheduleRunner::Fire(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.state.paused()) return;
  Entry& e = it->second;
  e.timer = 0;
  const absl::Time now = clock_.Now();
  const absl::Time base = Baseline(e.state);
  const Timing::Due due = e.timing->DueIn(base, now);
  if (due.count == 0) {
    Arm(id, e, e.timing->Next(base));
    return;
  }
  // At most one run per firing: the latest slot, if on time or by the
  // catch-up policy; every other due slot is missed.
  const bool on_time = now - due.latest <= kOnTime;
  const bool run =
      on_time || e.state.spec().catch_up() == v1::CATCH_UP_POLICY_RUN_ONCE;
  if (run && !Submit(e, due.latest)) {
    Arm(id, e, now + kRetry);  // Draining or no journal: not done yet.
    return;
  }
  const uint64_t missed = due.count - (run ? 1 : 0);
  if (missed > 0) {
    e.state.set_missed(e.state.missed() + missed);
    missed_ += missed;
    spdlog::info("schedules: '{}' missed {} slot(s) up to {} ({})", id, missed,
                 absl::FormatTime(due.latest),
                 run ? "ran the latest once" : "skipped");
  }
  ToProto(due.latest, e.state.mutable_last_slot_time());
  Persist(e);
  Arm(id, e, e.timing->Next(due.latest));
}

bool ScheduleRunner::Submit(Entry& e, absl::Time slot) {
  v1::Schedule& s = e.state;
  if (const uint64_t previous = OwnJobNumber(s.last_job_id()); previous != 0) {
    absl::StatusOr<v1::Job> job = scheduler_.GetJob(previous);
    const bool live = job.ok() && !IsTerminal(job->state());
    if (live && s.spec().overlap() == v1::OVERLAP_POLICY_CANCEL_PREVIOUS) {
      scheduler_.Cancel(previous).IgnoreError();
    } else if (live && s.spec().overlap() != v1::OVERLAP_POLICY_QUEUE) {
      s.set_skipped(s.skipped() + 1);
      ++skipped_;
      return true;
    }
  }
  absl::StatusOr<NewJob> job = make_job_(RunSpec(s.id(), s.spec().job(), slot));
  if (!job.ok()) {
    s.set_last_error(
        std::string(TemplateError(job.status(), "spec").message()));
    spdlog::warn("schedules: '{}': no run for {}: {}", s.id(),
                 absl::FormatTime(slot), s.last_error());
    return true;
  }
  job->owner = s.owner();
  std::vector<NewJob> jobs;
  jobs.push_back(*std::move(job));
  std::vector<Admission> out;
  scheduler_.Submit(jobs, Subscriber{.sink = sink_, .tag = 0, .mask = 0}, out);
  const Admission& adm = out.at(0);
  if (!adm.status.ok()) {
    if (absl::IsUnavailable(adm.status)) return false;
    s.set_last_error(std::string(adm.status.message()));
    spdlog::warn("schedules: '{}': the run for {} was not admitted: {}", s.id(),
                 absl::FormatTime(slot), s.last_error());
    return true;
  }
  s.set_last_job_id(FormatJobId(adm.job_id));
  s.clear_last_error();
  if (!adm.duplicate) {
    s.set_runs(s.runs() + 1);
    ++runs_;
  }
  return true;
}

}  // namespace jobd::schedules
