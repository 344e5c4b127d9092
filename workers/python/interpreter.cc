#define PY_SSIZE_T_CLEAN
#include <Python.h>
// Python.h first, as its documentation asks.

#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "workers/python/batch_source.h"
#include "workers/python/interpreter.h"
#include "workers/sdk/utf8.h"

namespace jobd::python {
namespace {

constexpr int kMaxDepth = 100;
constexpr size_t kMaxErrorBytes = 16 * 1024;
constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53.

// The job whose function runs on this thread (for _jobd_worker).
thread_local TaskContext* current_context = nullptr;
// This thread's Python thread state, made once and kept.
thread_local PyThreadState* thread_state = nullptr;
PyInterpreterState* interpreter = nullptr;

// Task name -> its function (a strong reference, kept for the process).
absl::flat_hash_map<std::string, PyObject*>& Functions() {
  static auto* functions = new absl::flat_hash_map<std::string, PyObject*>();
  return *functions;
}

// Holds the GIL on this thread for its scope.
class Gil {
 public:
  Gil() {
    if (thread_state == nullptr) thread_state = PyThreadState_New(interpreter);
    PyEval_RestoreThread(thread_state);
  }
  ~Gil() { PyEval_SaveThread(); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;
};

// An owned reference.
class Ref {
 public:
  explicit Ref(PyObject* o = nullptr) : o_(o) {}
  ~Ref() { Py_XDECREF(o_); }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  PyObject* get() const { return o_; }
  PyObject* release() {
    PyObject* o = o_;
    o_ = nullptr;
    return o;
  }
  void reset(PyObject* o) {
    Py_XDECREF(o_);
    o_ = o;
  }
  explicit operator bool() const { return o_ != nullptr; }

 private:
  PyObject* o_;
};

std::string Utf8Of(PyObject* s) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(s, &size);
  if (data != nullptr) return std::string(data, static_cast<size_t>(size));
  PyErr_Clear();  // Lone surrogates: replaced.
  Ref bytes(PyUnicode_AsEncodedString(s, "utf-8", "replace"));
  if (!bytes) {
    PyErr_Clear();
    return "?";
  }
  return std::string(PyBytes_AS_STRING(bytes.get()),
                     static_cast<size_t>(PyBytes_GET_SIZE(bytes.get())));
}

// The pending exception as "Type: message\n\n<traceback>", cleared.
std::string TakeException() {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  Ref t(type), v(value), b(tb);
  if (!t) return "unknown Python error";
  std::string summary = "exception";
  if (PyObject* name = PyObject_GetAttrString(t.get(), "__qualname__")) {
    summary = Utf8Of(name);
    Py_DECREF(name);
  } else {
    PyErr_Clear();
  }
  if (v) {
    Ref text(PyObject_Str(v.get()));
    if (text) {
      std::string message = Utf8Of(text.get());
      if (!message.empty()) absl::StrAppend(&summary, ": ", message);
    } else {
      PyErr_Clear();
    }
  }
  std::string traceback;
  Ref module(PyImport_ImportModule("traceback"));
  if (module) {
    Ref lines(PyObject_CallMethod(module.get(), "format_exception", "OOO",
                                  t.get(), v ? v.get() : Py_None,
                                  b ? b.get() : Py_None));
    if (lines) {
      Ref empty(PyUnicode_FromString(""));
      Ref joined(PyUnicode_Join(empty.get(), lines.get()));
      if (joined) traceback = Utf8Of(joined.get());
    }
  }
  PyErr_Clear();
  std::string out = summary;
  if (!traceback.empty()) absl::StrAppend(&out, "\n\n", traceback);
  return ClipUtf8(out, kMaxErrorBytes);
}

PyObject* ToPython(const google::protobuf::Value& v, ParamType hint,
                   int depth) {
  using google::protobuf::Value;
  if (depth > kMaxDepth) {
    PyErr_SetString(PyExc_ValueError, "argument nested too deep");
    return nullptr;
  }
  switch (v.kind_case()) {
    case Value::kBoolValue:
      return PyBool_FromLong(v.bool_value() ? 1 : 0);
    case Value::kNumberValue: {
      const double d = v.number_value();
      if (hint != ParamType::kNumber && std::isfinite(d) &&
          std::trunc(d) == d && std::fabs(d) < kMaxExactInt) {
        return PyLong_FromLongLong(static_cast<long long>(d));
      }
      return PyFloat_FromDouble(d);
    }
    case Value::kStringValue:
      return PyUnicode_DecodeUTF8(
          v.string_value().data(),
          static_cast<Py_ssize_t>(v.string_value().size()), "replace");
    case Value::kListValue: {
      Ref list(PyList_New(v.list_value().values_size()));
      if (!list) return nullptr;
      Py_ssize_t i = 0;
      for (const Value& e : v.list_value().values()) {
        PyObject* item = ToPython(e, ParamType::kAny, depth + 1);
        if (item == nullptr) return nullptr;
        PyList_SET_ITEM(list.get(), i++, item);
      }
      return list.release();
    }
    case Value::kStructValue: {
      Ref dict(PyDict_New());
      if (!dict) return nullptr;
      for (const auto& [key, e] : v.struct_value().fields()) {
        Ref item(ToPython(e, ParamType::kAny, depth + 1));
        if (!item) return nullptr;
        if (PyDict_SetItemString(dict.get(), key.c_str(), item.get()) != 0) {
          return nullptr;
        }
      }
      return dict.release();
    }
    default:
      Py_RETURN_NONE;
  }
}

// Converts a Python result into `out`; an error names `where`.
absl::Status FromPython(PyObject* o, google::protobuf::Value& out,
                        const std::string& where, int depth) {
  if (depth > kMaxDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": nested more than ", kMaxDepth, " deep"));
  }
  if (o == Py_None) {
    out.set_null_value(google::protobuf::NULL_VALUE);
  } else if (PyBool_Check(o)) {
    out.set_bool_value(o == Py_True);
  } else if (PyLong_Check(o)) {
    const double d = PyLong_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": an int too large for a JSON number"));
    }
    out.set_number_value(d);
  } else if (PyFloat_Check(o)) {
    const double d = PyFloat_AS_DOUBLE(o);
    if (!std::isfinite(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", d, " is not a JSON number"));
    }
    out.set_number_value(d);
  } else if (PyUnicode_Check(o)) {
    out.set_string_value(Utf8Of(o));
  } else if (PyList_Check(o) || PyTuple_Check(o)) {
    google::protobuf::ListValue& list = *out.mutable_list_value();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    PyObject** items = PySequence_Fast_ITEMS(o);
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (absl::Status s =
              FromPython(items[i], *list.add_values(),
                         absl::StrCat(where, "[", i, "]"), depth + 1);
          !s.ok()) {
        return s;
      }
    }
  } else if (PyDict_Check(o)) {
    google::protobuf::Struct& fields = *out.mutable_struct_value();
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &key, &value)) {
      if (!PyUnicode_Check(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": a dict key of type ", Py_TYPE(key)->tp_name,
                         " (JSON objects have string keys)"));
      }
      std::string k = Utf8Of(key);
      if (absl::Status s =
              FromPython(value, (*fields.mutable_fields())[k],
                         absl::StrCat(where, ".", ClipUtf8(k, 64)), depth + 1);
          !s.ok()) {
        return s;
      }
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": a ", Py_TYPE(o)->tp_name,
        " is not a JSON value (None, bool, int, float, str, list, tuple, "
        "dict; bytes only as the whole result: the payload)"));
  }
  return absl::OkStatus();
}

// ---- _jobd_worker: what jobd.progress and jobd.cancelled call ------------

PyObject* WorkerProgress(PyObject*, PyObject* args) {
  double fraction = -1;
  const char* message = "";
  Py_ssize_t size = 0;
  if (!PyArg_ParseTuple(args, "d|s#", &fraction, &message, &size)) {
    return nullptr;
  }
  if (TaskContext* ctx = current_context) {
    ctx->ReportProgress(fraction,
                        std::string_view(message, static_cast<size_t>(size)));
  }
  Py_RETURN_NONE;
}

PyObject* WorkerCancelled(PyObject*, PyObject*) {
  TaskContext* ctx = current_context;
  return PyBool_FromLong(ctx != nullptr && ctx->cancelled() ? 1 : 0);
}

// call_each(fn, calls, results, flat, payload): runs the calls of a batch
// from calls[len(results)] on, in order, appending each one's result to
// `results` (lists both): fn(*call), or fn(call) when `flat`, with
// payload=payload unless it is None. Returns True as soon as the running
// job is cancelled (after the call that saw it), False once every call ran.
// A call's exception propagates as is: `results` then holds the calls
// before it, so its index is len(results). In C, so that a batch of tiny
// calls costs little more than the calls (no frame, no tuple per call).
PyObject* WorkerCallEach(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5 || !PyList_Check(args[1]) || !PyList_Check(args[2])) {
    PyErr_SetString(PyExc_TypeError,
                    "call_each(fn, calls: list, results: list, flat, payload)");
    return nullptr;
  }
  PyObject* fn = args[0];
  PyObject* calls = args[1];
  PyObject* results = args[2];
  const int flat = PyObject_IsTrue(args[3]);
  if (flat < 0) return nullptr;
  PyObject* payload = args[4];
  static PyObject* payload_name = nullptr;  // ("payload",), kept.
  PyObject* kwnames = nullptr;
  if (payload != Py_None) {
    if (payload_name == nullptr) payload_name = Py_BuildValue("(s)", "payload");
    if (payload_name == nullptr) return nullptr;
    kwnames = payload_name;
  }
  const TaskContext* ctx = current_context;
  std::vector<PyObject*> argv;
  for (Py_ssize_t i = PyList_GET_SIZE(results); i < PyList_GET_SIZE(calls);
       ++i) {
    Ref call(Py_NewRef(PyList_GET_ITEM(calls, i)));
    Ref out;
    if (flat) {
      PyObject* one[2] = {call.get(), payload};
      out.reset(PyObject_Vectorcall(fn, one, 1, kwnames));
    } else {
      if (!PyList_Check(call.get())) {
        PyErr_SetString(PyExc_TypeError, "a call is not a list of arguments");
        return nullptr;
      }
      const Py_ssize_t n = PyList_GET_SIZE(call.get());
      PyObject** items = reinterpret_cast<PyListObject*>(call.get())->ob_item;
      argv.clear();
      if (n > 0) argv.assign(items, items + n);
      argv.push_back(payload);
      out.reset(PyObject_Vectorcall(fn, argv.data(), static_cast<size_t>(n),
                                    kwnames));
    }
    if (!out || PyList_Append(results, out.get()) != 0) return nullptr;
    if (ctx != nullptr && ctx->cancelled()) Py_RETURN_TRUE;
  }
  Py_RETURN_FALSE;
}

PyMethodDef worker_methods[] = {
    {"progress", WorkerProgress, METH_VARARGS,
     "progress(fraction, message=''): reports the running job's progress."},
    {"cancelled", WorkerCancelled, METH_NOARGS,
     "cancelled(): True once the running job was cancelled or timed out."},
    {"call_each",
     reinterpret_cast<PyCFunction>(
         reinterpret_cast<void (*)()>(WorkerCallEach)),
     METH_FASTCALL, "call_each(fn, calls, results, flat, payload): a batch."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef worker_module = {
    PyModuleDef_HEAD_INIT,
    "_jobd_worker",
    "jobd's worker: the running job's progress and cancellation.",
    -1,
    worker_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr};

PyObject* InitWorkerModule() { return PyModule_Create(&worker_module); }

// Describes the @jobd.task functions of modules (see Describe).
constexpr char kDescribeSource[] = R"PY(
import collections.abc, importlib, inspect, json, typing

_SIMPLE = {bool: "bool", int: "int", float: "number", str: "string",
           list: "list", tuple: "list", dict: "object",
           collections.abc.Sequence: "list", collections.abc.Mapping: "object"}

def _type(annotation):
    t = _SIMPLE.get(annotation) if _hashable(annotation) else None
    if t is None:
        origin = typing.get_origin(annotation)
        t = _SIMPLE.get(origin) if _hashable(origin) else None
    return t or "any"

def _hashable(x):
    try:
        hash(x)
        return True
    except TypeError:
        return False

def _is_json(value):
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False

def describe(modules):
    tasks = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for attr, fn in list(vars(module).items()):
            meta = getattr(fn, "__jobd_task__", None)
            if not isinstance(meta, dict) or not callable(fn):
                continue
            if getattr(fn, "__module__", None) != module.__name__:
                continue  # Imported from another module: declared there.
            try:
                hints = typing.get_type_hints(fn)
            except Exception:
                hints = {}
            params, variadic, payload = [], False, False
            for p in inspect.signature(fn).parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    variadic = True
                    continue
                if p.name == "payload":
                    payload = True
                    continue
                param = {"name": p.name,
                         "type": _type(hints.get(p.name, p.annotation)),
                         "required": p.default is p.empty}
                if p.default is not p.empty and _is_json(p.default):
                    param["default"] = p.default
                params.append(param)
            doc = inspect.getdoc(fn) or ""
            tasks.append({
                "name": str(meta.get("name") or
                            "%s.%s" % (module_name, fn.__name__)),
                "module": module_name, "function": attr,
                "kind": str(meta.get("kind", "cpu")),
                "description": doc.split("\n\n")[0].strip(),
                "params": params, "variadic": variadic, "payload": payload,
                "async": inspect.iscoroutinefunction(fn)})
    return tasks
)PY";

// The batch helper (kBatchSource: workers/python/batch_source.h), compiled
// on first use; the GIL is held.
PyObject* BatchRunner() {
  static PyObject* run = nullptr;
  if (run != nullptr) return run;
  Ref code(Py_CompileString(kBatchSource, "<jobd batch>", Py_file_input));
  if (!code) return nullptr;
  Ref module(PyImport_ExecCodeModule("_jobd_batch", code.get()));
  if (!module) return nullptr;
  run = PyObject_GetAttrString(module.get(), "run");
  return run;
}

// A list of the indexes of `params` of `type`.
PyObject* IndexesOf(const std::vector<TaskParam>& params, ParamType type) {
  Ref list(PyList_New(0));
  for (size_t i = 0; list && i < params.size(); ++i) {
    Ref n(params[i].type == type ? PyLong_FromSize_t(i) : nullptr);
    if (n && PyList_Append(list.get(), n.get()) != 0) return nullptr;
  }
  return list.release();
}

}  // namespace

absl::Status Start(const std::vector<std::string>& paths) {
  if (interpreter != nullptr) return absl::OkStatus();
  if (PyImport_AppendInittab("_jobd_worker", &InitWorkerModule) != 0) {
    return absl::InternalError("python: cannot add the _jobd_worker module");
  }
  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.install_signal_handlers = 0;
  PyStatus status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    return absl::InternalError(absl::StrCat(
        "python: cannot start the interpreter: ",
        status.err_msg != nullptr ? status.err_msg : "unknown error"));
  }
  PyObject* sys_path = PySys_GetObject("path");  // Borrowed.
  for (size_t i = paths.size(); i-- > 0;) {
    Ref p(PyUnicode_DecodeFSDefault(paths[i].c_str()));
    if (!p || sys_path == nullptr || PyList_Insert(sys_path, 0, p.get()) != 0) {
      std::string error = TakeException();
      PyEval_SaveThread();
      return absl::InternalError("python: sys.path: " + error);
    }
  }
#ifdef JOBD_PYTHON_DIR
  // An installed jobd's own copy of the jobd package, looked up last.
  if (Ref dir(PyUnicode_DecodeFSDefault(JOBD_PYTHON_DIR));
      !dir || sys_path == nullptr || PyList_Append(sys_path, dir.get()) != 0) {
    PyErr_Clear();
  }
#endif
  interpreter = PyInterpreterState_Get();
  thread_state = PyEval_SaveThread();  // This thread's, kept.
  return absl::OkStatus();
}

absl::StatusOr<google::protobuf::ListValue> Describe(
    const std::vector<std::string>& modules) {
  if (interpreter == nullptr) return absl::InternalError("python: not started");
  Gil gil;
  Ref code(Py_CompileString(kDescribeSource, "<jobd describe>", Py_file_input));
  if (!code) return absl::InternalError("python: " + TakeException());
  Ref helper(PyImport_ExecCodeModule("_jobd_describe", code.get()));
  if (!helper) return absl::InternalError("python: " + TakeException());
  Ref names(PyList_New(0));
  for (const std::string& m : modules) {
    Ref s(PyUnicode_FromString(m.c_str()));
    if (!s || PyList_Append(names.get(), s.get()) != 0) {
      return absl::InternalError("python: " + TakeException());
    }
  }
  Ref tasks(PyObject_CallMethod(helper.get(), "describe", "O", names.get()));
  if (!tasks) {
    return absl::FailedPreconditionError(absl::StrCat(
        "importing the Python task modules failed: ", TakeException()));
  }
  google::protobuf::Value out;
  if (absl::Status s = FromPython(tasks.get(), out, "tasks", 0); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("describing the Python tasks: ", s.message(),
                     " (a parameter's default that is not JSON is left out)"));
  }
  return out.list_value();
}

absl::Status Bind(const std::string& name, const std::string& module,
                  const std::string& function) {
  if (interpreter == nullptr) return absl::InternalError("python: not started");
  Gil gil;
  Ref m(PyImport_ImportModule(module.c_str()));
  if (!m) {
    return absl::FailedPreconditionError(absl::StrCat(
        "importing Python module '", module, "' failed: ", TakeException()));
  }
  PyObject* fn = PyObject_GetAttrString(m.get(), function.c_str());
  if (fn == nullptr || !PyCallable_Check(fn)) {
    Py_XDECREF(fn);
    PyErr_Clear();
    return absl::FailedPreconditionError(
        absl::StrCat("Python task '", name, "': ", module, ".", function,
                     " is not a function any more"));
  }
  PyObject*& slot = Functions()[name];
  Py_XDECREF(slot);
  slot = fn;
  return absl::OkStatus();
}

// The task function `name` registered in this worker's interpreter.
absl::StatusOr<PyObject*> LoadedFunction(const std::string& name) {
  auto found = Functions().find(name);
  if (interpreter == nullptr || found == Functions().end()) {
    return absl::InternalError(
        absl::StrCat("Python task '", name, "' is not loaded in this worker"));
  }
  return found->second;
}

absl::StatusOr<TaskOutput> Call(const std::string& name,
                                const std::vector<TaskParam>& params,
                                bool takes_payload, TaskContext& ctx) {
  absl::StatusOr<PyObject*> fn = LoadedFunction(name);
  if (!fn.ok()) return fn.status();
  const TaskArgs& args = ctx.args();
  Gil gil;
  const int n = args.args().size();
  Ref positional(PyTuple_New(n));
  if (!positional) return absl::InternalError("python: " + TakeException());
  for (int i = 0; i < n; ++i) {
    const ParamType hint = static_cast<size_t>(i) < params.size()
                               ? params[static_cast<size_t>(i)].type
                               : ParamType::kAny;
    PyObject* item = ToPython(args.args()[i], hint, 0);
    if (item == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.args[", i, "]: ", TakeException()));
    }
    PyTuple_SET_ITEM(positional.get(), i, item);
  }
  Ref keywords(PyDict_New());
  if (!keywords) return absl::InternalError("python: " + TakeException());
  for (const auto& [key, value] : args.kwargs().fields()) {
    ParamType hint = ParamType::kAny;
    for (const TaskParam& p : params) {
      if (p.name == key) hint = p.type;
    }
    Ref item(ToPython(value, hint, 0));
    if (!item ||
        PyDict_SetItemString(keywords.get(), key.c_str(), item.get()) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.kwargs.", key, ": ", TakeException()));
    }
  }
  if (takes_payload) {
    Ref payload(PyBytes_FromStringAndSize(
        args.payload().data(), static_cast<Py_ssize_t>(args.payload().size())));
    if (!payload ||
        PyDict_SetItemString(keywords.get(), "payload", payload.get()) != 0) {
      return absl::InternalError("python: " + TakeException());
    }
  }
  current_context = &ctx;
  Ref result(PyObject_Call(*fn, positional.get(), keywords.get()));
  current_context = nullptr;
  if (!result) return absl::UnknownError(TakeException());

  TaskOutput out;
  PyObject* value = result.get();
  Ref value_ref, payload_ref;
  // jobd.Result is a namedtuple: only a tuple subclass is looked at (a
  // failed attribute lookup on every result would cost an exception).
  if (PyTuple_Check(value) && !PyTuple_CheckExact(value) &&
      PyObject_HasAttrString(value, "__jobd_result__")) {
    value_ref.reset(PyObject_GetAttrString(value, "value"));
    payload_ref.reset(PyObject_GetAttrString(value, "payload"));
    if (!value_ref || !payload_ref) {
      return absl::InvalidArgumentError("result: " + TakeException());
    }
    value = value_ref.get();
    PyObject* p = payload_ref.get();
    if (PyBytes_Check(p)) {
      out.payload.assign(PyBytes_AS_STRING(p),
                         static_cast<size_t>(PyBytes_GET_SIZE(p)));
    } else if (PyByteArray_Check(p)) {
      out.payload.assign(PyByteArray_AS_STRING(p),
                         static_cast<size_t>(PyByteArray_GET_SIZE(p)));
    } else if (p != Py_None) {
      return absl::InvalidArgumentError(absl::StrCat(
          "result.payload: a ", Py_TYPE(p)->tp_name, ", not bytes"));
    }
  } else if (PyBytes_Check(value)) {
    out.payload.assign(PyBytes_AS_STRING(value),
                       static_cast<size_t>(PyBytes_GET_SIZE(value)));
    value = Py_None;
  } else if (PyByteArray_Check(value)) {
    out.payload.assign(PyByteArray_AS_STRING(value),
                       static_cast<size_t>(PyByteArray_GET_SIZE(value)));
    value = Py_None;
  }
  if (absl::Status s = FromPython(value, out.value, "result", 0); !s.ok()) {
    return s;
  }
  return out;
}

absl::StatusOr<TaskOutput> CallBatch(const std::string& name,
                                     const std::vector<TaskParam>& params,
                                     bool takes_payload, TaskContext& ctx) {
  absl::StatusOr<PyObject*> fn = LoadedFunction(name);
  if (!fn.ok()) return fn.status();
  const v1::JobSpec& spec = ctx.args().spec();
  Gil gil;
  PyObject* run = BatchRunner();
  if (run == nullptr) return absl::InternalError("python: " + TakeException());
  Ref calls(PyUnicode_DecodeUTF8(spec.calls().data(),
                                 static_cast<Py_ssize_t>(spec.calls().size()),
                                 "replace"));
  Ref ints(IndexesOf(params, ParamType::kInt));
  Ref floats(IndexesOf(params, ParamType::kNumber));
  Ref payload(takes_payload
                  ? PyBytes_FromStringAndSize(
                        spec.payload().data(),
                        static_cast<Py_ssize_t>(spec.payload().size()))
                  : Py_NewRef(Py_None));
  if (!calls || !ints || !floats || !payload) {
    return absl::InternalError("python: " + TakeException());
  }
  current_context = &ctx;
  Ref answer(PyObject_CallFunctionObjArgs(
      run, *fn, calls.get(), ints.get(), floats.get(), payload.get(),
      spec.flat_calls() ? Py_True : Py_False, nullptr));
  current_context = nullptr;
  if (!answer) return absl::UnknownError(TakeException());
  PyObject* results = nullptr;
  PyObject* errors = nullptr;
  if (!PyArg_ParseTuple(answer.get(), "UO!", &results, &PyList_Type, &errors)) {
    return absl::InternalError("python: batch: " + TakeException());
  }
  TaskOutput out;
  out.results = Utf8Of(results);
  const Py_ssize_t n = PyList_GET_SIZE(errors);
  out.call_errors.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    unsigned long index = 0;
    PyObject* type = nullptr;
    PyObject* message = nullptr;
    PyObject* traceback = nullptr;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(errors, i), "kUUU", &index, &type,
                          &message, &traceback)) {
      return absl::InternalError("python: batch: " + TakeException());
    }
    v1::CallError& e = out.call_errors.emplace_back();
    e.set_index(static_cast<uint32_t>(index));
    e.set_type(Utf8Of(type));
    e.set_message(Utf8Of(message));
    e.set_traceback(Utf8Of(traceback));
  }
  return out;
}

}  // namespace jobd::python
