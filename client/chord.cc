// SubmitChord (chord.h).
#include "client/chord.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/internal/future_state.h"

namespace jobd::client {

Chord SubmitChord(Client& client, std::vector<v1::JobSpec> group,
                  v1::JobSpec then, const ChordOptions& options) {
  Chord chord;
  chord.group.reserve(group.size());
  for (v1::JobSpec& spec : group) {
    chord.group.push_back(client.Submit(std::move(spec)));
  }
  const absl::Time deadline = absl::Now() + options.timeout;
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
    then.set_dependency_policy(options.policy);
  }
  if (then.depends_on_size() == 0) {
    // An empty group: it runs at once, with an empty list of results.
    then.clear_dependency_policy();
    if (options.pass_results) {
      then.mutable_args()->Add()->mutable_list_value();
      for (int i = then.args_size() - 1; i > 0; --i) {
        then.mutable_args()->SwapElements(i, i - 1);
      }
    }
  } else {
    then.set_dependency_results(options.pass_results);
  }
  chord.then = client.Submit(std::move(then));
  return chord;
}

}  // namespace jobd::client
