// Batches (JobSpec.calls): the check, at admission, of a batch's calls
// against its task's parameters, so that a bad argument in any call refuses
// the whole job before anything runs, naming the call and the parameter
// (`spec.calls[3][0] (width): expected int, got string`).
//
// A batch is a JSON array of calls, each a JSON array of positional
// arguments, or (a flat batch, JobSpec.flat_calls) a JSON array of each
// call's only argument. The scanner here reads it once without building
// values (the worker decodes it again, in its own language): strict JSON
// (RFC 8259: no NaN or Infinity, no trailing commas), each argument's kind
// and, for numbers, its value, the nesting of each argument against a
// depth limit.
//
// Stateless and thread-safe.
#ifndef JOBD_SERVER_FRONTEND_CALL_BATCH_H_
#define JOBD_SERVER_FRONTEND_CALL_BATCH_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "workers/sdk/task.h"

namespace jobd {

// Most calls in one batch.
inline constexpr size_t kMaxBatchCalls = 65536;

// Checks `calls` (JobSpec.calls) for `task`: well-formed, 1..kMaxBatchCalls
// calls, each an array whose arguments bind to task.params as positional
// arguments would (count, required parameters, types; any count for a
// variadic task), no argument nested deeper than `max_depth`. `flat`
// (JobSpec.flat_calls): each call is its only argument instead, checked as
// argument 0 (the task must take one and require no other).
// InvalidArgument naming spec.calls, spec.calls[i], spec.calls[i][j] or
// spec.flat_calls otherwise. `*count` gets the number of calls.
absl::Status CheckBatchCalls(std::string_view calls, bool flat,
                             const TaskDef& task, int max_depth, size_t* count);

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_CALL_BATCH_H_
