#include "server/scheduler/event_log.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace jobd {

// The log holds up to event_log_size entries, about three per job.
static_assert(sizeof(LoggedEvent) == 32);

EventLog::EventLog(size_t capacity, Journal* journal)
    : capacity_(capacity), journal_(journal) {}

uint64_t EventLog::NextSequence() {
  const uint64_t sequence = next_sequence_++;
  if (journal_ != nullptr) {
    reserved_.Before(sequence, [this](uint64_t up_to) {
      return journal_->ReserveSequences(up_to);
    });
  }
  return sequence;
}

uint64_t EventLog::JoinBatch(uint64_t sequence, uint64_t ticket) {
  ticket = std::max(ticket, reserved_.TicketOf(sequence));
  if (ticket == 0) return 0;
  if (!batches_.empty() && batches_.back().ticket == ticket) {
    batches_.back().last = sequence;
    return ticket;
  }
  // A new batch: forget those durable by now.
  const uint64_t durable = journal_->durable();
  while (!batches_.empty() && batches_.front().ticket <= durable) {
    batches_.pop_front();
  }
  batches_.push_back({.ticket = ticket, .first = sequence, .last = sequence});
  return ticket;
}

uint64_t EventLog::TicketOf(uint64_t sequence) const {
  auto batch = std::lower_bound(
      batches_.begin(), batches_.end(), sequence,
      [](const BatchSequences& b, uint64_t seq) { return b.last < seq; });
  return batch != batches_.end() && batch->first <= sequence ? batch->ticket
                                                             : 0;
}

void EventLog::Append(const Event& event) {
  log_.push_back({.sequence = event.sequence,
                  .job_id = event.job_id,
                  .time = event.time,
                  .type = event.type,
                  .executor = event.executor});
  while (log_.size() > capacity_) log_.pop_front();
}

uint64_t EventLog::oldest() const {
  return log_.empty() ? next_sequence_ : log_.front().sequence;
}

void EventLog::ForEachAfter(
    uint64_t after_sequence,
    absl::FunctionRef<void(const LoggedEvent&)> fn) const {
  auto first = std::lower_bound(
      log_.begin(), log_.end(), after_sequence + 1,
      [](const LoggedEvent& e, uint64_t seq) { return e.sequence < seq; });
  for (auto it = first; it != log_.end(); ++it) fn(*it);
}

Event EventLog::Replay(const LoggedEvent& logged, const JobRecord& job) const {
  Event e;
  e.sequence = logged.sequence;
  e.job_id = logged.job_id;
  e.time = logged.time;
  e.type = logged.type;
  e.executor = logged.executor;
  if (e.type == v1::EVENT_TYPE_ACCEPTED) {
    e.set_task(job.spec.task(), job.spec.body());
  } else if (e.type == v1::EVENT_TYPE_PROGRESS) {
    // The latest: older ones are not kept.
    if (job.more != nullptr) e.set_progress(job.more->progress);
  } else if (IsTerminal(e.type)) {
    e.set_end(job.end);
  }
  e.ticket = TicketOf(logged.sequence);
  return e;
}

Event EventLog::EndOf(const JobRecord& job) const {
  Event e;
  e.sequence = job.last_sequence;
  e.job_id = job.id;
  e.type = TerminalEventType(job.state);
  e.time = job.finish_time;
  e.executor = job.executor;
  e.set_end(job.end);
  e.ticket = TicketOf(job.last_sequence);
  return e;
}

void EventLog::Restore(std::vector<LoggedEvent> log, uint64_t last_sequence) {
  std::sort(log.begin(), log.end(),
            [](const LoggedEvent& a, const LoggedEvent& b) {
              return a.sequence < b.sequence;
            });
  const size_t keep = std::min(log.size(), capacity_);
  log_.assign(std::make_move_iterator(log.end() - keep),
              std::make_move_iterator(log.end()));
  next_sequence_ = std::max(next_sequence_, last_sequence + 1);
  reserved_.Restored(last_sequence);
}

void EventLog::FanOut(const Event& event, const JobRecord& job,
                      SinksToFlush& flush) const {
  const uint32_t bit = EventBit(event.type);
  for (const JobRecord::Sub& sub : job.subscribers) {
    if ((sub.mask & bit) && sub.sink->Deliver(event, sub.tag)) {
      flush.push_back(sub.sink);
    }
  }
  for (const Subscriber& sub : watch_all_) {
    if ((sub.mask & bit) && (sub.owner.empty() || sub.owner == *job.owner) &&
        sub.sink->Deliver(event, sub.tag)) {
      flush.push_back(sub.sink);
    }
  }
}

void EventLog::AddWatcher(const Subscriber& subscriber) {
  watch_all_.push_back(subscriber);
}

void EventLog::RemoveWatcher(const EventSink* sink) {
  watch_all_.erase(std::remove_if(watch_all_.begin(), watch_all_.end(),
                                  [sink](const Subscriber& s) {
                                    return s.sink.get() == sink;
                                  }),
                   watch_all_.end());
}

}  // namespace jobd
