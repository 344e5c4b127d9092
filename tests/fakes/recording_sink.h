// RecordingSink: an EventSink for tests that records every event it is
// given (with its subscriber tag) and lets a test wait for one on a
// condition (no polling). Events from a scheduler without a journal
// arrive during the call that caused them; with a journal, starts come
// from the journal's thread.
//
// Thread-safety: thread-safe (Deliver is called with the scheduler's lock
// held, from any thread).
// Ownership: owns copies of the events; shared with the scheduler that
// delivers to it.
#ifndef JOBD_TESTS_FAKES_RECORDING_SINK_H_
#define JOBD_TESTS_FAKES_RECORDING_SINK_H_

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/jobs/job_types.h"

namespace jobd {

class RecordingSink : public EventSink {
 public:
  static constexpr absl::Duration kWait = absl::Seconds(10);

  bool Deliver(const Event& event, uint64_t tag) override {
    absl::MutexLock lock(&mu_);
    events_.push_back({event, tag});
    return false;
  }
  void Flush() override {}

  // Waits until a terminal event for `job_id` arrived; returns it.
  Event WaitEnd(uint64_t job_id) {
    return WaitFor(job_id, [](v1::EventType type) { return IsTerminal(type); });
  }
  // Waits until an event of `type` for `job_id` arrived; returns it.
  Event WaitFor(uint64_t job_id, v1::EventType type) {
    return WaitFor(job_id, [type](v1::EventType t) { return t == type; });
  }
  Event WaitFor(uint64_t job_id, std::function<bool(v1::EventType)> match) {
    absl::MutexLock lock(&mu_);
    const Event* found = nullptr;
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& [e, tag] : events_) {
        if (e.job_id == job_id && match(e.type)) {
          found = &e;
          return true;
        }
      }
      return false;
    };
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&arrived), kWait))
        << "job " << job_id << ": the event did not arrive";
    return found ? *found : Event{};
  }
  std::vector<v1::EventType> TypesOf(uint64_t job_id) {
    absl::MutexLock lock(&mu_);
    std::vector<v1::EventType> out;
    for (const auto& [e, tag] : events_) {
      if (e.job_id == job_id) out.push_back(e.type);
    }
    return out;
  }
  std::vector<Event> EventsOf(uint64_t job_id) {
    absl::MutexLock lock(&mu_);
    std::vector<Event> out;
    for (const auto& [e, tag] : events_) {
      if (e.job_id == job_id) out.push_back(e);
    }
    return out;
  }
  std::vector<uint64_t> Sequences() {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> out;
    for (const auto& [e, tag] : events_) out.push_back(e.sequence);
    return out;
  }
  std::vector<uint64_t> Tags() {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> out;
    for (const auto& [e, tag] : events_) out.push_back(tag);
    return out;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return events_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<Event, uint64_t>> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace jobd

#endif  // JOBD_TESTS_FAKES_RECORDING_SINK_H_
