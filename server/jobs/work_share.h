// WorkShareHook: how the scheduler hands jobs it cannot start now to
// cluster mode's work sharing (server/cluster/work_sharing.h), without
// knowing cluster mode: an interface of this leaf room, like CallbackHook.
//
// Thread-safety: the methods are called with the scheduler's lock held;
// they must not block nor call into the scheduler. Ownership: the hook is
// the daemon's and outlives the scheduler's use of it.
#ifndef JOBD_SERVER_JOBS_WORK_SHARE_H_
#define JOBD_SERVER_JOBS_WORK_SHARE_H_

#include <cstdint>
#include <string>

namespace jobd {

// A job to publish: what another node needs to run it and to send its end
// back.
struct SharedJob {
  uint64_t id = 0;
  int64_t create_ns = 0;  // Its create time (unix ns): with the id, unique.
  std::string owner;
  std::string spec;  // The whole v1::JobSpec, serialized.
  // The journal batch holding its outbox row: publish once it is durable.
  uint64_t ticket = 0;
};

class WorkShareHook {
 public:
  virtual ~WorkShareHook() = default;
  // True if a job that would queue here is to be published now (the node
  // is in the cluster and Redis is up).
  virtual bool Sharing() const = 0;
  // Publishes `job` (queue it and return at once).
  virtual void Publish(SharedJob job) = 0;
  // Shared job `id` (created at `create_ns`) ended here without its end
  // coming back (cancelled, expired): withdraw it from the cluster, and
  // stop a run of it on another node (queue it and return at once).
  virtual void Withdraw(uint64_t id, int64_t create_ns) = 0;
  // Job `id`, run here for another node, is handed back (this node drains
  // or stops before it could run it, or may run it again elsewhere): the
  // end it gets next is not its run's; its place in the cluster goes back
  // for another node to take (record it and return at once).
  virtual void HandBack(uint64_t id) = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_WORK_SHARE_H_
