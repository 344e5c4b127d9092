#include "server/journal/journal.h"

#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/jobs/proto_time.h"
#include "server/journal/journal_store.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"
#include "workers/sdk/utf8.h"

namespace jobd {
namespace {

// A committed batch's record vector is kept for the next batch up to this
// capacity (a burst's larger one is freed).
constexpr size_t kKeptRecords = 16384;
// A committed batch of at most this many records (a lone job's accept and
// end, as a rule) has its waiters run on the writer thread itself when the
// notifier has nothing before them: its answer leaves a thread hop sooner,
// and what a few records' waiters do (post, send) delays the next commit
// by little. Larger batches' waiters run on the notifier.
constexpr size_t kInlineWaitersRecords = 4;

uint64_t FileBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace

const char* DurabilityName(Durability d) {
  switch (d) {
    case Durability::kNone:
      return "none";
    case Durability::kBatched:
      return "batched";
    case Durability::kEveryCommit:
      return "every-commit";
  }
  return "?";
}

// Records queued since the last swap, in order.
struct Journal::Batch {
  std::vector<JournalRecord> records;
  size_t live = 0;            // Of `records`, those left to write once folded.
  ScheduleRecords schedules;  // The last put or delete of each id.
  std::vector<KeyLimitRow> key_limits;  // In order: the last one wins.
  uint64_t reserved_sequence = 0;       // 0: none reserved.
  uint64_t reserved_job_id = 0;         // 0: none reserved.
  bool waited_on = false;  // An empty batch a waiter needs committed.
  absl::Time opened;       // When it became dirty.
  // Whether a record that must not wait is in it (Linger::kNo); else, the
  // earliest time a lingering record allows it to be committed at
  // (InfiniteFuture: none lingers, nothing holds it back).
  bool urgent = false;
  absl::Time linger_until = absl::InfiniteFuture();
  bool dirty() const {
    return !records.empty() || !schedules.empty() || !key_limits.empty() ||
           reserved_sequence != 0 || reserved_job_id != 0 || waited_on;
  }
  // Before adding to it (under Journal::mu_): a record that must not wait
  // (Touch), one that may wait up to `bound` for company (Linger::kYes),
  // or what goes with the records (a reservation of sequences or ids, a
  // waiter's mark: TouchCompanion), which neither hurries nor holds it.
  Batch& Touch() {
    TouchCompanion().urgent = true;
    return *this;
  }
  Batch& Touch(Linger linger, absl::Duration bound) {
    if (linger == Linger::kNo || bound <= absl::ZeroDuration()) return Touch();
    if (linger_until == absl::InfiniteFuture()) {
      linger_until = absl::Now() + bound;  // The first lingering record's.
    }
    return TouchCompanion();
  }
  Batch& TouchCompanion() {
    if (!dirty()) opened = absl::Now();
    return *this;
  }
  // Whether the writer may take it now.
  bool Due(absl::Time now) const {
    return dirty() && (urgent || linger_until == absl::InfiniteFuture() ||
                       linger_until <= now);
  }
};

Journal::Journal(JournalOptions options)
    : options_(std::move(options)), open_(std::make_unique<Batch>()) {}

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(JournalOptions options,
                                                       Recovered* recovered) {
  std::unique_ptr<Journal> journal(new Journal(std::move(options)));
  absl::StatusOr<std::unique_ptr<JournalStore>> store =
      JournalStore::Open(journal->options_, recovered);
  if (!store.ok()) return store.status();
  journal->store_ = *std::move(store);
  {
    absl::MutexLock lock(&journal->mu_);
    journal->rows_ = recovered->rows.size();
    journal->used_bytes_ = journal->store_->used_bytes();
  }
  journal->notifier_ = std::thread([j = journal.get()] { j->NotifierLoop(); });
  journal->writer_ = std::thread([j = journal.get()] { j->WriterLoop(); });
  return journal;
}

Journal::~Journal() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;  // The writer commits what is queued, then ends.
  }
  if (writer_.joinable()) writer_.join();
  {
    absl::MutexLock lock(&mu_);
    notifier_stop_ = true;  // It runs what the writer left it, then ends.
  }
  if (notifier_.joinable()) notifier_.join();
  Abandon();       // Waiters of batches the writer gave up on.
  store_.reset();  // Checkpoints and closes the database.
}

// ---- queueing ------------------------------------------------------------

uint64_t Journal::Insert(JournalRow row, Linger linger) {
  absl::MutexLock lock(&mu_);
  open_->Touch(linger, options_.linger)
      .records.push_back({JournalRecord::kInsert, std::move(row)});
  return open_ticket_;
}

uint64_t Journal::Update(JournalRow row, Linger linger) {
  row.spec = StoredSpec();
  absl::MutexLock lock(&mu_);
  open_->Touch(linger, options_.linger)
      .records.push_back({JournalRecord::kUpdate, std::move(row)});
  return open_ticket_;
}

uint64_t Journal::Update(JournalRow row, CallbackRecord callback) {
  row.spec = StoredSpec();
  const uint64_t id = row.id;
  auto cb = std::make_shared<const CallbackRecord>(std::move(callback));
  absl::MutexLock lock(&mu_);
  Batch& batch = open_->Touch();
  batch.records.push_back({JournalRecord::kUpdate, std::move(row)});
  batch.records.push_back(
      {JournalRecord::kCallback, JournalRow{.id = id}, std::move(cb)});
  return open_ticket_;
}

uint64_t Journal::PutCallback(CallbackRecord callback) {
  const uint64_t id = callback.job_id;
  auto cb = std::make_shared<const CallbackRecord>(std::move(callback));
  absl::MutexLock lock(&mu_);
  open_->Touch().records.push_back(
      {JournalRecord::kCallback, JournalRow{.id = id}, std::move(cb)});
  return open_ticket_;
}

uint64_t Journal::Delete(uint64_t id) {
  absl::MutexLock lock(&mu_);
  open_->Touch(Linger::kYes, options_.linger)
      .records.push_back({JournalRecord::kDelete, JournalRow{.id = id}});
  return open_ticket_;
}

uint64_t Journal::SetKeyLimit(KeyLimitRow row) {
  absl::MutexLock lock(&mu_);
  open_->Touch().key_limits.push_back(std::move(row));
  return open_ticket_;
}

uint64_t Journal::ReserveSequences(uint64_t up_to) {
  absl::MutexLock lock(&mu_);
  open_->TouchCompanion().reserved_sequence =
      std::max(open_->reserved_sequence, up_to);
  return open_ticket_;
}

uint64_t Journal::ReserveJobIds(uint64_t up_to) {
  absl::MutexLock lock(&mu_);
  open_->TouchCompanion().reserved_job_id =
      std::max(open_->reserved_job_id, up_to);
  return open_ticket_;
}

uint64_t Journal::PutSchedule(std::string id, std::string body) {
  absl::MutexLock lock(&mu_);
  open_->Touch().schedules[std::move(id)] = std::move(body);
  return open_ticket_;
}

uint64_t Journal::DeleteSchedule(std::string id) {
  absl::MutexLock lock(&mu_);
  open_->Touch().schedules[std::move(id)] = std::nullopt;
  return open_ticket_;
}

uint64_t Journal::ticket() const {
  absl::MutexLock lock(&mu_);
  return open_ticket_;
}

uint64_t Journal::durable() const {
  absl::MutexLock lock(&mu_);
  return durable_;
}

bool Journal::accepting() const {
  absl::MutexLock lock(&mu_);
  return !failing_;
}

std::string Journal::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

absl::Duration Journal::commit_latency() const {
  absl::MutexLock lock(&mu_);
  return commit_latency_;
}

Journal::Usage Journal::usage() const {
  absl::MutexLock lock(&mu_);
  return {.used_bytes = used_bytes_,
          .max_bytes = options_.max_bytes,
          .commits = commits_,
          .write_errors = write_errors_,
          .full = full_};
}

void Journal::WhenDurable(uint64_t ticket, DurableFn fn, Wait wait) {
  bool durable;
  {
    absl::MutexLock lock(&mu_);
    durable = ticket <= durable_;
    const bool give_up =
        abandoned_ || (wait == Wait::kFailFast && failing_ &&
                       absl::Now() - failing_since_ >= options_.outage_grace);
    if (!durable && !give_up) {
      (wait == Wait::kFailFast ? fail_fast_ : waiters_)
          .emplace(ticket, std::move(fn));
      // An empty batch commits too (its waiters need a durable point).
      if (ticket == open_ticket_ && !open_->waited_on) {
        open_->TouchCompanion().waited_on = true;
      }
      return;
    }
  }
  fn(durable);
}

void Journal::Abandon() {
  std::multimap<uint64_t, DurableFn> waiters, fail_fast;
  {
    absl::MutexLock lock(&mu_);
    abandoned_ = true;
    stop_ = true;  // The writer gives up its retries.
    waiters.swap(waiters_);
    fail_fast.swap(fail_fast_);
  }
  for (auto& [ticket, fn] : waiters) fn(false);
  for (auto& [ticket, fn] : fail_fast) fn(false);
}

bool Journal::Flush(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (open_->dirty()) open_->urgent = true;  // Nothing lingers for a flush.
  const uint64_t target = open_->dirty() ? open_ticket_ : open_ticket_ - 1;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return durable_ >= target || stop_;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&done), deadline) &&
         durable_ >= target;
}

// ---- the writer ----------------------------------------------------------

void Journal::WriterLoop() {
  pthread_setname_np(pthread_self(), "jobd-journal");
  for (;;) {
    std::unique_ptr<Batch> batch;
    uint64_t ticket = 0;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return open_->dirty() || stop_;
      };
      auto hurry = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return open_->urgent || stop_;
      };
      // A batch of lingering records alone waits for a record that must
      // not wait (a job's end, as a rule), or for its bound. A fold under
      // way goes on meanwhile, a step at a time.
      while (!stop_ && !open_->Due(absl::Now()) && !FoldDue()) {
        if (!open_->dirty()) {
          mu_.Await(absl::Condition(&work));
        } else {
          mu_.AwaitWithDeadline(absl::Condition(&hurry), open_->linger_until);
        }
      }
      if (stop_ || open_->Due(absl::Now())) {
        if (!open_->dirty() && stop_) return;
        batch = std::exchange(open_, std::make_unique<Batch>());
        open_->records.swap(spare_records_);
        ticket = open_ticket_++;
      }
    }
    if (batch == nullptr) {  // Nothing due: the fold's next step.
      FoldLog(/*whole=*/false);
      continue;
    }
    if (!Commit(*batch, ticket)) return;  // Given up on at shutdown.
    const JournalStore::Due due = absl::Now() >= compaction_retry_at_
                                      ? store_->compaction_due()
                                      : JournalStore::Due::kNo;
    // For room, part of the commit that made it due: what a Flush waits
    // for, once durable, holds the room the log's deletes freed (a log
    // short of a quarter of the cap: quick).
    if (due == JournalStore::Due::kRoom) FoldLog(/*whole=*/true);
    const bool small = batch->live <= kInlineWaitersRecords;
    batch->records.clear();  // Outside the lock: rows and specs freed.
    std::vector<DurableFn> run_here;
    {
      std::vector<DurableFn> ready;
      absl::MutexLock lock(&mu_);
      durable_ = ticket;
      for (auto* waiters : {&waiters_, &fail_fast_}) {
        auto end = waiters->upper_bound(ticket);
        for (auto it = waiters->begin(); it != end; ++it) {
          ready.push_back(std::move(it->second));
        }
        waiters->erase(waiters->begin(), end);
      }
      if (small && notify_.empty() && !notifying_) {
        run_here.swap(ready);
      } else if (!ready.empty()) {
        notify_.push_back(std::move(ready));
      }
      // Kept for the next batch, unless a burst made it large.
      if (batch->records.capacity() <= kKeptRecords) {
        spare_records_.swap(batch->records);
      }
    }
    for (auto& fn : run_here) fn(true);
    // A grown log, once its batch's waiters are on their way: a step of
    // its fold between two commits (the next batch waits for one step).
    if (FoldDue()) FoldLog(/*whole=*/false);
  }
}

bool Journal::FoldDue() const {
  return store_->compacting() ||
         (absl::Now() >= compaction_retry_at_ &&
          store_->compaction_due() == JournalStore::Due::kSize);
}

void Journal::FoldLog(bool whole) {
  absl::Status status;
  absl::Duration took;
  std::optional<JournalStore::Compacted> finished;
  if (whole) {
    absl::StatusOr<JournalStore::Compacted> done = store_->Compact();
    status = done.status();
    if (done.ok()) {
      took = done->took;
      finished = *done;
    }
  } else {
    absl::StatusOr<JournalStore::FoldStep> step = store_->CompactStep();
    status = step.status();
    if (step.ok()) {
      took = step->took;
      finished = step->finished;
    }
  }
  // A failed fold is tried again after a growing pause (not at every
  // commit: each attempt reads the log again); the log goes on meanwhile.
  compaction_backoff_ = status.ok()
                            ? absl::ZeroDuration()
                            : std::clamp(compaction_backoff_ * 2,
                                         absl::Seconds(1), absl::Minutes(1));
  compaction_retry_at_ = absl::Now() + compaction_backoff_;
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    ++compaction_errors_;
    if (compaction_errors_ == 1 || compaction_errors_ % 100 == 0) {
      spdlog::warn("journal: cannot fold the log of {} into its jobs: {}",
                   options_.path, status.ToString());
    }
    return;
  }
  compaction_seconds_.Observe(absl::ToDoubleSeconds(took));
  if (!finished.has_value()) return;
  used_bytes_ = store_->used_bytes();
  spdlog::debug(
      "journal: log folded: {} change(s) into {} row(s) written and {} "
      "deleted (of {} looked for), {} job(s) forgotten since skipped, in {} "
      "step(s) of {} in all",
      finished->entries, finished->rows_written, finished->rows_deleted,
      finished->looked_for, finished->skipped, finished->steps,
      absl::FormatDuration(finished->took));
}

void Journal::NotifierLoop() {
  pthread_setname_np(pthread_self(), "jobd-durable");
  for (;;) {
    std::deque<std::vector<DurableFn>> ready;
    {
      absl::MutexLock lock(&mu_);
      notifying_ = false;
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !notify_.empty() || notifier_stop_;
      };
      mu_.Await(absl::Condition(&work));
      if (notify_.empty()) return;  // Stopping, and all were run.
      ready.swap(notify_);
      notifying_ = true;
    }
    for (auto& batch : ready) {
      for (auto& fn : batch) fn(true);
    }
  }
}

// Folds each job's records into one row write, in place: an insert
// absorbs the updates after it; a delete replaces what came before it; a
// record folded into an earlier one becomes kFolded (Write skips it), so
// that the batch's records are not moved into a new vector (they are a
// few hundred bytes each, thousands to a batch: moving them was the
// writer's largest cost of its own). A job's callback records fold into
// one too (a status update keeps the first record's URL and event),
// placed right after the job's row write if the batch has one (Write
// keeps the two in one transaction): that rare case does build a new
// vector. Returns the records left to write.
size_t Journal::Fold(Batch& batch) {
  std::vector<JournalRecord>& records = batch.records;
  absl::flat_hash_map<uint64_t, size_t> first;  // id -> index in `records`.
  first.reserve(records.size());
  bool callbacks = false;
  size_t live = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    JournalRecord& r = records[i];
    if (r.kind == JournalRecord::kFolded) continue;  // By an earlier fold.
    ++live;
    if (r.kind == JournalRecord::kCallback) {
      callbacks = true;
      continue;
    }
    auto [it, added] = first.try_emplace(r.row.id, i);
    if (added) continue;
    JournalRecord& prev = records[it->second];
    if (r.kind == JournalRecord::kUpdate &&
        prev.kind != JournalRecord::kDelete) {
      StoredSpec spec = std::move(prev.row.spec);
      prev.row = std::move(r.row);
      prev.row.spec = std::move(spec);  // An insert keeps its spec.
    } else {
      prev.kind = r.kind;
      prev.row = std::move(r.row);
    }
    r.kind = JournalRecord::kFolded;
    --live;
  }
  if (!callbacks) return live;
  absl::flat_hash_map<uint64_t, JournalRecord> by_job;
  std::vector<uint64_t> callback_order;
  for (JournalRecord& r : records) {
    if (r.kind != JournalRecord::kCallback) continue;
    auto [it, added] = by_job.try_emplace(r.row.id);
    if (added) {
      callback_order.push_back(r.row.id);
      it->second = std::move(r);
    } else if (r.callback->first() || !it->second.callback->first()) {
      it->second = std::move(r);
    } else {  // A status update of a first record in this batch.
      auto merged = std::make_shared<CallbackRecord>(*r.callback);
      merged->url = it->second.callback->url;
      merged->event = it->second.callback->event;
      it->second.callback = std::move(merged);
    }
  }
  std::vector<JournalRecord> ordered;
  ordered.reserve(live);
  for (JournalRecord& r : records) {
    if (r.kind == JournalRecord::kFolded ||
        r.kind == JournalRecord::kCallback) {
      continue;
    }
    const uint64_t id = r.row.id;
    ordered.push_back(std::move(r));
    if (auto it = by_job.find(id); it != by_job.end()) {
      ordered.push_back(std::move(it->second));
      by_job.erase(it);
    }
  }
  for (uint64_t id : callback_order) {
    if (auto it = by_job.find(id); it != by_job.end()) {
      ordered.push_back(std::move(it->second));
    }
  }
  records.swap(ordered);
  return records.size();
}

bool Journal::Commit(Batch& batch, uint64_t& ticket) {
  batch.live = Fold(batch);
  using Part = JournalStore::Part;
  auto apply = [this, &batch](Part part) -> absl::Status {
    absl::StatusOr<JournalStore::Written> written =
        store_->Write(batch.records, batch.reserved_sequence, part,
                      batch.schedules, batch.key_limits, batch.reserved_job_id);
    if (!written.ok()) return written.status();
    absl::MutexLock lock(&mu_);
    rows_ = written->rows;
    bytes_written_ += written->bytes;
    used_bytes_ = written->used_bytes;
    return absl::OkStatus();
  };
  const absl::Time start = absl::Now();
  absl::Duration backoff = absl::Milliseconds(50);
  for (int attempt = 0;; ++attempt) {
    // After a failure, deletes go first, on their own: they free room that a
    // full database needs for the rest. (Every write is idempotent.)
    absl::Status s = attempt == 0 ? apply(Part::kAll) : apply(Part::kDeletes);
    if (s.ok() && attempt > 0) s = apply(Part::kAllButDeletes);
    if (s.ok()) break;
    bool stopping;
    // Once the outage has lasted its grace, kFailFast waiters are answered
    // (not durable), and the retries wake up to do that in time.
    std::multimap<uint64_t, DurableFn> fail_fast;
    absl::Duration until_grace;
    {
      absl::MutexLock lock(&mu_);
      ++write_errors_;
      const absl::Time now = absl::Now();
      if (!failing_) failing_since_ = now;
      failing_ = true;
      full_ = absl::IsResourceExhausted(s);
      last_error_ = std::string(s.message());
      stopping = stop_;
      until_grace = failing_since_ + options_.outage_grace - now;
      if (until_grace <= absl::ZeroDuration()) fail_fast.swap(fail_fast_);
    }
    if (attempt == 0 || attempt % 100 == 0) {
      spdlog::error(
          "journal: cannot write {} record(s) to {}: {}; new jobs are refused "
          "until it can (retrying)",
          batch.live, options_.path, std::string(s.message()));
    }
    for (auto& [waiting_for, fn] : fail_fast) fn(false);
    if (stopping && attempt > 3) {
      spdlog::error("journal: giving up on {} record(s) at shutdown",
                    batch.live);
      return false;
    }
    absl::SleepFor(until_grace > absl::ZeroDuration()
                       ? std::min(backoff, until_grace)
                       : backoff);
    // Folding the log frees its pages (and the rows of forgotten jobs):
    // the room a full database needs.
    if (absl::IsResourceExhausted(s)) FoldLog(/*whole=*/true);
    backoff = std::min(backoff * 2, absl::Seconds(2));
    // What was queued meanwhile joins the retry: a delete there may be what
    // frees the room this batch needs. The records folded away go first:
    // an outage's retries would otherwise keep every one of them.
    std::erase_if(batch.records, [](const JournalRecord& r) {
      return r.kind == JournalRecord::kFolded;
    });
    {
      absl::MutexLock lock(&mu_);
      if (open_->dirty()) {
        for (JournalRecord& r : open_->records) {
          batch.records.push_back(std::move(r));
        }
        for (auto& [id, body] : open_->schedules) {
          batch.schedules[id] = std::move(body);
        }
        for (KeyLimitRow& k : open_->key_limits) {
          batch.key_limits.push_back(std::move(k));
        }
        batch.reserved_sequence =
            std::max(batch.reserved_sequence, open_->reserved_sequence);
        batch.reserved_job_id =
            std::max(batch.reserved_job_id, open_->reserved_job_id);
        open_ = std::make_unique<Batch>();
        ticket = open_ticket_++;
      }
    }
    batch.live = Fold(batch);
  }
  absl::MutexLock lock(&mu_);
  if (failing_) {
    spdlog::info("journal: writing again");
    failing_ = false;
    full_ = false;
  }
  ++commits_;
  records_written_ += batch.live;
  const absl::Time now = absl::Now();
  last_commit_ = now - start;
  commit_seconds_.Observe(absl::ToDoubleSeconds(last_commit_));
  commit_records_.Observe(static_cast<double>(batch.live));
  // From the batch's first record (the one that waited longest) to now.
  const absl::Duration waited = now - batch.opened;
  commit_latency_ = commits_ == 1 ? waited : (commit_latency_ * 7 + waited) / 8;
  return true;
}

void Journal::AddStats(v1::GetStatsResponse& stats) const {
  v1::JournalStats& j = *stats.mutable_journal();
  j.set_path(MakeValidUtf8(options_.path));  // A path is bytes.
  j.set_durability(DurabilityName(options_.durability));
  j.set_file_bytes(FileBytes(options_.path));
  j.set_wal_bytes(FileBytes(options_.path + "-wal"));
  j.set_max_bytes(options_.max_bytes);
  absl::MutexLock lock(&mu_);
  j.set_rows(rows_);
  j.set_commits(commits_);
  j.set_records(records_written_);
  j.set_write_errors(write_errors_);
  j.set_healthy(!failing_);
  j.set_last_error(MakeValidUtf8(last_error_));
  *j.mutable_last_commit() = ToProtoDuration(last_commit_);
  j.set_bytes_written(bytes_written_);
}

Journal::Commits Journal::commits() const {
  absl::MutexLock lock(&mu_);
  return {.seconds = commit_seconds_.snapshot(),
          .records = commit_records_.snapshot(),
          .bytes = bytes_written_,
          .compaction_seconds = compaction_seconds_.snapshot(),
          .compaction_errors = compaction_errors_};
}

}  // namespace jobd