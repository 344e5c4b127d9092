// jobd::client chords: run a group of jobs in parallel, then one more job
// once they have ended (its JobSpec.depends_on names them), the whole
// graph held by jobd, so it goes on while the client is away.
//
//   Chord c = SubmitChord(client, {MakeSpec("fetch", 1), MakeSpec("fetch", 2)},
//                         MakeSpec("merge"));
//   absl::StatusOr<JobOutcome> merged = c.then.Get();
//   for (const Future& part : c.group) { /* each part's own result */ }
//
// jobd does not hand the group's results to the last job: it runs after
// them, and reads them itself if it needs them (GetJob of the ids in its
// spec.depends_on), or the caller reads them from the group's futures.
//
// Thread-safety: as Client::Submit. Ownership: the futures share their
// state with the client's stream (future.h).
#ifndef JOBD_CLIENT_CHORD_H_
#define JOBD_CLIENT_CHORD_H_

#include <vector>

#include "absl/time/time.h"
#include "client/client.h"
#include "client/future.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::client {

struct Chord {
  std::vector<Future> group;  // One per spec of the group, in order.
  // The last job: its Get() returns its outcome (FAILED
  // DEPENDENCY_FAILED if one of the group did not succeed, under the
  // default policy), or why it could not be submitted (a group job
  // rejected, or not accepted within the timeout: the group runs on).
  Future then;
};

// Submits `group` on the client's shared stream, waits (up to `timeout`)
// until jobd has accepted each (one round trip for all), then submits
// `then` depending on them with `policy` (then.dependency_policy, if it
// sets one, wins). Blocks only for the acceptances.
Chord SubmitChord(
    Client& client, std::vector<v1::JobSpec> group, v1::JobSpec then,
    v1::DependencyPolicy policy = v1::DEPENDENCY_POLICY_UNSPECIFIED,
    absl::Duration timeout = absl::Seconds(30));

}  // namespace jobd::client

#endif  // JOBD_CLIENT_CHORD_H_
