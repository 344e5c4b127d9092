// jobd::client chords: run a group of jobs in parallel, then one more job
// with their results, once they have ended (its JobSpec.depends_on names
// them), the whole graph held by jobd, so it goes on while the client is
// away.
//
//   Chord c = SubmitChord(client, {MakeSpec("fetch", 1), MakeSpec("fetch", 2)},
//                         MakeSpec("merge"));
//   absl::StatusOr<JobOutcome> merged = c.then.Get();
//   for (const Future& part : c.group) { /* each part's own result */ }
//
// The last job gets the group's results as its first argument: a list, in
// the group's order (JobSpec.dependency_results; so "merge" above runs as
// merge([r1, r2])). With ChordOptions::pass_results off it only runs after
// them.
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

struct ChordOptions {
  // When the last job runs (then.dependency_policy, if it sets one, wins):
  // by default once all of the group succeeded; ALL_ENDED passes null for
  // a part that did not succeed.
  v1::DependencyPolicy policy = v1::DEPENDENCY_POLICY_UNSPECIFIED;
  // The group's results as the last job's first argument. An empty group
  // passes an empty list.
  bool pass_results = true;
  // How long to wait for jobd to accept the group.
  absl::Duration timeout = absl::Seconds(30);
};

// Submits `group` on the client's shared stream, waits (up to
// options.timeout) until jobd has accepted each (one round trip for all),
// then submits `then` depending on them. Blocks only for the acceptances.
Chord SubmitChord(Client& client, std::vector<v1::JobSpec> group,
                  v1::JobSpec then, const ChordOptions& options = {});

}  // namespace jobd::client

#endif  // JOBD_CLIENT_CHORD_H_
