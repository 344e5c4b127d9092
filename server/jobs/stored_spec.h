// StoredSpec: a job's spec as jobd holds it from admission on: immutable,
// shared (its bound arguments alias it), and without its task name, which
// the job's TaskDef already has. That saves a heap string per job (~30 of
// the ~1,000 bytes a waiting job costs, bench/README.md).
//
// The saving is hidden here, so that no consumer can forget it: `->` and
// `*` read every field but the name (task() reads empty there); the whole
// spec, as the client sent it, only comes out of Whole() and
// AppendWholeTo(), which put the name back. A spec read back from the
// journal is kept whole (it has its name), and the same accessors work.
//
// Its serialized size is computed once, when it is made: protobuf caches it
// in the (immutable) spec, so SpecBytes (server/scheduler/job_record.h)
// reads it and AppendWholeTo serializes with it, neither walking the
// arguments again (the journal's writer serializes every spec it inserts).
//
// Thread-safety: immutable once made; copies may be read from any thread.
// Ownership: shares the spec; the TaskDef is the registry's (which
// outlives every job) or the scheduler's (a restored job's vanished task).
#ifndef JOBD_SERVER_JOBS_STORED_SPEC_H_
#define JOBD_SERVER_JOBS_STORED_SPEC_H_

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "jobd/v1/jobd.pb.h"
#include "workers/sdk/task.h"

namespace jobd {

class StoredSpec {
 public:
  StoredSpec() = default;
  // Keeps `whole` (a spec of a job of `task`) without its name.
  StoredSpec(v1::JobSpec&& whole, const TaskDef& task);
  // Keeps `whole` as it is, its name included (a spec read back: its
  // TaskDef, once known, is set with set_task). Nobody may change it from
  // here on (its cached size would be wrong).
  template <typename Spec, typename = std::enable_if_t<std::is_convertible_v<
                               Spec, std::shared_ptr<const v1::JobSpec>>>>
  StoredSpec(Spec whole)  // NOLINT: implicit, as a shared_ptr converts.
      : body_(std::move(whole)) {
    CacheSize();
  }

  // The job's task (null until set for a spec read back).
  const TaskDef* task() const { return task_; }
  void set_task(const TaskDef* task) { task_ = task; }

  // Every field but the task name (which reads empty here: see Whole()).
  const v1::JobSpec* operator->() const { return body_.get(); }
  const v1::JobSpec& operator*() const { return *body_; }
  // The same, shared: what a job's bound arguments alias.
  const std::shared_ptr<const v1::JobSpec>& body() const { return body_; }
  bool operator==(std::nullptr_t) const { return body_ == nullptr; }

  // The task's name.
  const std::string& task_name() const {
    return body_->task().empty() && task_ != nullptr ? task_->name
                                                     : body_->task();
  }
  // The spec as the client sent it.
  v1::JobSpec Whole() const;
  // Appends the whole spec, serialized (the body, then its name: a parse
  // merges the two).
  void AppendWholeTo(std::string* out) const;

 private:
  // Has protobuf compute and cache the body's size (and its parts').
  void CacheSize() const {
    if (body_ != nullptr) body_->ByteSizeLong();
  }

  // Its name is put back wherever it lacks one.
  std::shared_ptr<const v1::JobSpec> body_;
  const TaskDef* task_ = nullptr;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_STORED_SPEC_H_
