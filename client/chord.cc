// SubmitChord (chord.h).
#include "client/chord.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/internal/future_state.h"

namespace jobd::client {

Chord SubmitChord(Client& client, std::vector<v1::JobSpec> group,
                  v1::JobSpec then, v1::DependencyPolicy policy,
                  absl::Duration timeout) {
  Chord chord;
  chord.group.reserve(group.size());
  for (v1::JobSpec& spec : group) {
    chord.group.push_back(client.Submit(std::move(spec)));
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t i = 0; i < chord.group.size(); ++i) {
    absl::StatusOr<std::string> id =
        chord.group[i].job_id(deadline - absl::Now());
    if (!id.ok()) {
      chord.then = internal::FutureState::Failed(
          nullptr, 0,
          absl::Status(id.status().code(),
                       absl::StrCat("chord: group job ", i,
                                    " has no job: ", id.status().message())));
      return chord;
    }
    then.add_depends_on(*id);
  }
  if (then.dependency_policy() == v1::DEPENDENCY_POLICY_UNSPECIFIED) {
    then.set_dependency_policy(policy);
  }
  if (then.depends_on_size() == 0) {
    then.clear_dependency_policy();  // An empty group: it runs at once.
  }
  chord.then = client.Submit(std::move(then));
  return chord;
}

}  // namespace jobd::client
