// EndSink: receives events of jobs the cluster code follows (foreign jobs
// run for other nodes, jobs whose idempotency key it claimed) from the
// scheduler, with its lock held: their ends and, for a subscriber whose
// mask asks for them, their STARTED and PROGRESS events, queued in order,
// then handed over on the io thread (`on_ends`, which Takes them).
//
// Thread-safety: Deliver and Flush from the scheduler's threads; Take and
// SetOnEnds from the io thread (SetOnEnds before any event); Detach from
// any. Ownership: shared with the scheduler's job records; holds the
// io_context by reference, and posts to it only until Detach.
#ifndef JOBD_SERVER_CLUSTER_END_SINK_H_
#define JOBD_SERVER_CLUSTER_END_SINK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "jobd/v1/jobd.pb.h"
#include "server/jobs/job_types.h"

namespace jobd::cluster {

class EndSink : public EventSink {
 public:
  // One event: an end (`end` set) or a note of a run (STARTED; PROGRESS
  // with `progress`).
  struct Item {
    uint64_t tag = 0;  // The subscriber's.
    v1::EventType type = v1::EVENT_TYPE_UNSPECIFIED;
    absl::Time time;
    std::shared_ptr<JobEnd> end;
    std::shared_ptr<const v1::Progress> progress;
  };

  explicit EndSink(asio::io_context& io) : io_(io) {}
  // What runs on the io thread when events wait (it must not outlive the
  // owner it refers to: hold that weakly).
  void SetOnEnds(std::function<void()> on_ends) {
    absl::MutexLock lock(&mu_);
    on_ends_ = std::move(on_ends);
  }

  bool Deliver(const Event& event, uint64_t tag) override {
    Item item{.tag = tag, .type = event.type, .time = absl::Time(event.time)};
    if (IsTerminal(event.type)) {
      if (event.end() == nullptr) return false;
      item.end = std::make_shared<JobEnd>(*event.end());
    } else if (event.type == v1::EVENT_TYPE_PROGRESS) {
      if (event.progress() == nullptr) return false;
      // A copy: the event holds the job's report, not as a shared_ptr.
      item.progress = std::make_shared<const v1::Progress>(*event.progress());
    } else if (event.type != v1::EVENT_TYPE_STARTED) {
      return false;
    }
    absl::MutexLock lock(&mu_);
    items_.push_back(std::move(item));
    return items_.size() == 1;
  }
  void Flush() override {
    // Under mu_, so that Detach (at Stop, before the io_context goes)
    // orders after any post.
    absl::MutexLock lock(&mu_);
    if (detached_) return;
    asio::post(io_, on_ends_);
  }
  // From now on nothing is posted (the scheduler may still hold this
  // sink, and end jobs, after the io_context is gone).
  void Detach() {
    absl::MutexLock lock(&mu_);
    detached_ = true;
  }
  // The events queued, in the order they came.
  std::vector<Item> Take() {
    absl::MutexLock lock(&mu_);
    std::vector<Item> out(std::make_move_iterator(items_.begin()),
                          std::make_move_iterator(items_.end()));
    items_.clear();
    return out;
  }

 private:
  asio::io_context& io_;
  absl::Mutex mu_;  // A leaf.
  std::function<void()> on_ends_ ABSL_GUARDED_BY(mu_);
  std::deque<Item> items_ ABSL_GUARDED_BY(mu_);
  bool detached_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_END_SINK_H_
