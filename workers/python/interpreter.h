// The embedded CPython of a Python-task process (a process-pool worker or
// the describing child; see python_tasks.h): starting it, importing the
// task modules, describing their @jobd.task functions, and calling one for
// a job.
//
// Conversions, job to Python: each argument from its JSON value (null ->
// None, bool, number -> int when it is integral (|x| < 2^53) unless its
// parameter says number (float), string -> str, list -> list, struct ->
// dict); the payload as `payload=bytes` when the function has that
// parameter. Python to job: None, bool, int, float (finite), str, list,
// tuple, dict with str keys, nested up to 100 deep -> the result's value;
// bytes/bytearray -> the result's payload; a jobd.Result(value, payload)
// -> both. Anything else fails the job naming where it was. A raised
// exception fails the job with "Type: message" then the traceback.
//
// Inside a call, the module `_jobd_worker` (which jobd.progress and
// jobd.cancelled use) reaches the job's TaskContext.
//
// Thread-safety: Start once, on the thread that later runs nothing else
// concurrently with it; after Start the GIL is released, and Call (from any
// thread: each thread keeps one thread state) takes it for each call.
#ifndef JOBD_WORKERS_PYTHON_INTERPRETER_H_
#define JOBD_WORKERS_PYTHON_INTERPRETER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/struct.pb.h"
#include "workers/sdk/task.h"

namespace jobd::python {

// Starts the interpreter (isolated: no environment variables, no user site
// directory, no signal handlers) with `paths` first on sys.path and, last,
// where `cmake --install` puts the jobd package (JOBD_PYTHON_DIR).
absl::Status Start(const std::vector<std::string>& paths);

// Imports `modules` and describes their tasks: a list of structs with the
// keys of PythonTaskSpec (params: name, type, required, default). An
// import error is FailedPrecondition with its traceback.
absl::StatusOr<google::protobuf::ListValue> Describe(
    const std::vector<std::string>& modules);

// Finds `module`.`function` (imported by Describe or here) and keeps it as
// the implementation of task `name`.
absl::Status Bind(const std::string& name, const std::string& module,
                  const std::string& function);

// Calls task `name`'s function for the job of `ctx`. `params` give the
// conversion hints; `takes_payload` passes the payload.
absl::StatusOr<TaskOutput> Call(const std::string& name,
                                const std::vector<TaskParam>& params,
                                bool takes_payload, TaskContext& ctx);

// Runs a batch (the spec's `calls`, checked by the daemon) of task `name`
// with one GIL acquisition: decodes the calls' JSON (argument arrays, or
// with the spec's flat_calls each call's only argument), calls the function
// once per call in order (int/number hints applied as for Call), stops
// early once the job is cancelled, and encodes the results once into
// TaskOutput::results (a JSON array, null for a failed call). A call's
// exception or a result that is not a JSON value becomes its CallError
// ("Type: message"; the traceback for the first 16 failed calls); the
// batch still succeeds. An error of the batch itself fails the job.
absl::StatusOr<TaskOutput> CallBatch(const std::string& name,
                                     const std::vector<TaskParam>& params,
                                     bool takes_payload, TaskContext& ctx);

}  // namespace jobd::python

#endif  // JOBD_WORKERS_PYTHON_INTERPRETER_H_
