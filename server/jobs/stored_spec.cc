#include "server/jobs/stored_spec.h"

#include <utility>

namespace jobd {

StoredSpec::StoredSpec(v1::JobSpec whole, const TaskDef& task) : task_(&task) {
  delete whole.release_task();
  body_ = std::make_shared<const v1::JobSpec>(std::move(whole));
}

v1::JobSpec StoredSpec::Whole() const {
  v1::JobSpec whole = *body_;
  if (whole.task().empty()) whole.set_task(task_name());
  return whole;
}

void StoredSpec::AppendWholeTo(std::string* out) const {
  body_->AppendToString(out);
  if (body_->task().empty() && task_ != nullptr) {
    v1::JobSpec named;
    named.set_task(task_->name);
    named.AppendToString(out);
  }
}

}  // namespace jobd
