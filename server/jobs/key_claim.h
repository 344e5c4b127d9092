// KeyClaimHook: how the scheduler makes an idempotency key unique across a
// cluster (server/cluster/key_claims.h) without knowing cluster mode: an
// interface of this leaf room, like WorkShareHook.
//
// A job admitted with an idempotency key while the hook is Claiming() is
// held: journaled and QUEUED, out of every lane, its submitter not told
// yet. The hook claims the key in Redis once the job's journal row is
// durable, then tells the scheduler which job holds the key
// (Scheduler::ClaimWon, ClaimLost): this one (it goes on as any job) or
// another node's (this one becomes a mirror of it, answered as a
// duplicate). The hook also receives the terminal events of the jobs
// whose claim it won (its sink), to record their ends with the claim.
//
// Thread-safety: Claiming and Claim are called with the scheduler's lock
// held: they must not block nor call into the scheduler. Ownership: the
// hook is the daemon's and outlives the scheduler's use of it.
#ifndef JOBD_SERVER_JOBS_KEY_CLAIM_H_
#define JOBD_SERVER_JOBS_KEY_CLAIM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "server/jobs/job_types.h"

namespace jobd {

// A key to claim for a job.
struct KeyClaim {
  uint64_t id = 0;
  int64_t create_ns = 0;  // With the id, the job (unique on this node).
  std::string owner;
  std::string key;
  // The journal batch holding the job's row: claim once it is durable.
  uint64_t ticket = 0;
};

class KeyClaimHook {
 public:
  virtual ~KeyClaimHook() = default;
  // True if keyed jobs are to be claimed now (Redis is up). False: keys
  // are this node's alone, as without a cluster.
  virtual bool Claiming() const = 0;
  // Claims `claim`'s key (queue it and return at once).
  virtual void Claim(KeyClaim claim) = 0;
  // Receives the terminal events of the jobs whose claim was won (the
  // subscriber tag is the job's id).
  virtual std::shared_ptr<EventSink> ClaimedEnds() = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_KEY_CLAIM_H_
