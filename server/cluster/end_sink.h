// EndSink: receives the terminal events of jobs the cluster code follows
// (foreign jobs run for other nodes, jobs whose idempotency key it
// claimed) from the scheduler, with its lock held: queued, then handed
// over on the io thread (`on_ends`, which Takes them).
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
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "server/jobs/job_types.h"

namespace jobd::cluster {

class EndSink : public EventSink {
 public:
  using Ends = std::vector<std::pair<uint64_t, std::shared_ptr<JobEnd>>>;

  explicit EndSink(asio::io_context& io) : io_(io) {}
  // What runs on the io thread when ends wait (it must not outlive the
  // owner it refers to: hold that weakly).
  void SetOnEnds(std::function<void()> on_ends) {
    absl::MutexLock lock(&mu_);
    on_ends_ = std::move(on_ends);
  }

  bool Deliver(const Event& event, uint64_t tag) override {
    if (!IsTerminal(event.type) || event.end() == nullptr) return false;
    absl::MutexLock lock(&mu_);
    ends_.push_back({tag, std::make_shared<JobEnd>(*event.end())});
    return ends_.size() == 1;
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
  Ends Take() {
    absl::MutexLock lock(&mu_);
    Ends out(std::make_move_iterator(ends_.begin()),
             std::make_move_iterator(ends_.end()));
    ends_.clear();
    return out;
  }

 private:
  asio::io_context& io_;
  absl::Mutex mu_;  // A leaf.
  std::function<void()> on_ends_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<uint64_t, std::shared_ptr<JobEnd>>> ends_
      ABSL_GUARDED_BY(mu_);
  bool detached_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace jobd::cluster

#endif  // JOBD_SERVER_CLUSTER_END_SINK_H_
