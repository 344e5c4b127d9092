// The Python source of the batch runner (python::CallBatch, interpreter.cc):
// `run(fn, calls, ints, floats, payload, flat)` decodes a batch's JSON
// (JobSpec.calls; with flat_calls each call's only argument), applies the
// int/number hints, has _jobd_worker.call_each make the calls, records a
// call's exception and goes on, and encodes the results once. Compiled on
// first use, in a worker process only.
//
// Data only; no state.
#ifndef JOBD_WORKERS_PYTHON_BATCH_SOURCE_H_
#define JOBD_WORKERS_PYTHON_BATCH_SOURCE_H_

namespace jobd::python {

// Runs a batch (JobSpec.calls) in one go: see CallBatch. The calls run in
// _jobd_worker.call_each (C); a call that raises is recorded here and the
// next ones go on. Errors keep a traceback for the first kTracebacks failed
// calls only, and every text is cut, so that a batch of failures stays
// small.
inline constexpr char kBatchSource[] = R"PY(
import json, traceback
from _jobd_worker import call_each, cancelled

_loads = json.loads
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                          check_circular=False, separators=(",", ":")).encode
_TRACEBACKS = 16
_MAX_TEXT = 4096
_MAX_TRACEBACK = 16384

def _error(i, e, errors):
    t, text, tb = type(e), "", ""
    try:
        text = str(e)
        if len(errors) < _TRACEBACKS:
            tb = "".join(traceback.format_exception(t, e, e.__traceback__))
    except BaseException:
        pass
    message = t.__qualname__ + (": " + text if text else "")
    errors.append((i, t.__qualname__, message[:_MAX_TEXT],
                   tb[-_MAX_TRACEBACK:]))

def _fix(args, ints, floats):
    args = list(args)
    n = len(args)
    for j in floats:
        if j < n and type(args[j]) is int:
            args[j] = float(args[j])
    for j in ints:
        if j < n and type(args[j]) is float and args[j].is_integer():
            args[j] = int(args[j])
    return args

def run(fn, calls, ints, floats, payload, flat):
    calls = _loads(calls)
    if flat:  # each call's only argument
        if 0 in floats:
            calls = [float(x) if type(x) is int else x for x in calls]
        elif 0 in ints:
            calls = [int(x) if type(x) is float and x.is_integer() else x
                     for x in calls]
    elif ints or floats:
        calls = [_fix(args, ints, floats) for args in calls]
    results = []
    errors = []
    while True:
        try:
            call_each(fn, calls, results, flat, payload)
            break  # all ran, or the job was cancelled
        except BaseException as e:
            i = len(results)  # the call that raised
            results.append(None)
            # Without this frame: the traceback starts in the task.
            e.__traceback__ = e.__traceback__.tb_next or e.__traceback__
            _error(i, e, errors)
            if cancelled():
                break  # The job has ended already: what is left is not run.
    try:
        out = _dumps(results)
    except BaseException:
        out = []
        for i, r in enumerate(results):
            try:
                out.append(_dumps(r))
            except BaseException as e:
                out.append("null")
                n = "TypeError" if isinstance(e, TypeError) else \
                    type(e).__qualname__
                errors.append((i, n, ("%s: result: %s" % (n, e))[:_MAX_TEXT],
                               ""))
        errors.sort(key=lambda x: x[0])
        out = "[" + ",".join(out) + "]"
    return out, errors
)PY";

}  // namespace jobd::python

#endif  // JOBD_WORKERS_PYTHON_BATCH_SOURCE_H_
