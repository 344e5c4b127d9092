"""Shared pieces of the sync and asyncio clients: the default address, the
channel, errors, job options, Python value <-> google.protobuf.Value, and the
client-side check of a spec against the daemon's task list (so a bad spec
raises at submit, naming the field, as the daemon would name it).

Thread-safety: everything here is immutable or guarded by its own lock.
"""

import datetime
import math
import os
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import grpc
from google.protobuf import struct_pb2

from jobd.v1 import jobd_pb2 as pb

# ---------------------------------------------------------------- address


def default_socket_path() -> str:
    """The daemon's default Unix socket (proto/jobd/v1/default_address.h)."""
    s = os.environ.get("JOBD_SOCKET")
    if s:
        return s
    d = os.environ.get("RUNTIME_DIRECTORY")
    if d:
        return d.split(":", 1)[0] + "/jobd.sock"
    x = os.environ.get("XDG_RUNTIME_DIR")
    if x:
        return x + "/jobd/jobd.sock"
    if os.geteuid() == 0:
        return "/run/jobd/jobd.sock"
    return "/tmp/jobd-%d/jobd.sock" % os.geteuid()


def default_address() -> str:
    """$JOBD_ADDRESS, else unix:<default socket>: the address jobctl uses."""
    return os.environ.get("JOBD_ADDRESS") or "unix:" + default_socket_path()


@dataclass(frozen=True)
class TLS:
    """TLS to a TCP address: `ca` verifies jobd's certificate; `cert` and
    `key` are this client's (mTLS); `server_name` overrides the name
    expected in jobd's certificate. Paths to PEM files."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    server_name: Optional[str] = None


# 64 MiB: above the daemon's largest --max-message-bytes default (16 MiB);
# the daemon's own limit is the one that applies.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # Back within 2 s of a restarted daemon (gRPC's default backoff grows
    # to 2 minutes): futures re-attach to their jobs then (_reattach).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_args(address, token, tls, keepalive=None):
    """(address, metadata, credentials-or-None, options) for a channel.
    keepalive: seconds between pings while calls are open (a dead
    connection, even one that sends no reset, is noticed within it plus
    10 s at most); None or 0: no pings."""
    address = address or default_address()
    if token is None:
        token = os.environ.get("JOBD_TOKEN") or None
    metadata = (("authorization", "Bearer " + token),) if token else ()
    options = list(_CHANNEL_OPTIONS)
    if keepalive:
        if keepalive < 1:
            raise ValueError("keepalive: at least 1 s (jobd accepts a ping "
                             "a second at most)")
        keepalive = min(keepalive, 24 * 3600)  # (a C int of ms)
        options += [("grpc.keepalive_time_ms", int(keepalive * 1000)),
                    ("grpc.keepalive_timeout_ms",
                     int(min(keepalive, 10) * 1000)),
                    ("grpc.http2.max_pings_without_data", 0)]
    creds = None
    if tls:
        if tls is True:
            tls = TLS()
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca) if tls.ca else None,
            private_key=_read(tls.key) if tls.key else None,
            certificate_chain=_read(tls.cert) if tls.cert else None,
        )
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
    return address, metadata, creds, options


# ---------------------------------------------------------------- errors


class JobdError(Exception):
    """Base class of the errors this package raises."""


class JobFailed(JobdError):
    """A job ran and failed (or timed out, or its worker crashed, ...).

    reason: the ErrorReason name without its prefix ("TASK_ERROR",
    "TIMEOUT", "WORKER_CRASHED", ...); code: a grpc.StatusCode; message:
    jobd's text. For a Python task's exception (README: Python tasks),
    message is "Type: text", remote_type the exception's type name and
    remote_traceback its traceback as the worker formatted it; both are
    None otherwise."""

    def __init__(self, message, *, reason="TASK_ERROR", code=None,
                 job_id=None, task=None, remote_type=None,
                 remote_traceback=None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.job_id = job_id
        self.task = task
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self):
        who = "job %s" % self.job_id if self.job_id else "job"
        if self.task:
            who += " (%s)" % self.task
        return "%s failed: %s: %s" % (who, self.reason, self.message)


class JobRejected(JobdError, ValueError):
    """A spec was refused (no job exists). `field` names the offending field
    ("spec.args[0] (ms)", "spec.kind", ...); reason as JobFailed's."""

    def __init__(self, message, *, reason="INVALID_INPUT", code=None,
                 task=None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.task = task
        self.field = message.split(":", 1)[0] if ":" in message else None


class ConnectionLost(JobdError, ConnectionError):
    """The stream to jobd broke (or jobd could not be reached) before the
    job's end was seen. The job itself may still run on: see job_id and
    GetJob."""

    def __init__(self, message, *, code=None, job_id=None):
        super().__init__(message)
        self.code = code
        self.job_id = job_id


def status_code(value: int):
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c
    return grpc.StatusCode.UNKNOWN


def reason_name(reason: int) -> str:
    return pb.ErrorReason.Name(reason)[len("ERROR_REASON_"):]


def error_from_event(ev, task=None):
    e = ev.error
    reason = reason_name(e.reason)
    if ev.type == pb.EVENT_TYPE_REJECTED:
        return JobRejected(e.message, reason=reason,
                           code=status_code(e.code), task=task)
    message, remote_type, remote_tb = e.message, None, None
    # A Python task's exception: "Type: message\n\nTraceback ..." (README:
    # Python tasks).
    head, sep, tb = message.partition("\n\n" + _TRACEBACK)
    if sep and reason == "TASK_ERROR":
        message, remote_tb = head, _TRACEBACK + tb
        remote_type = head.split(":", 1)[0]
    return JobFailed(message, reason=reason, code=status_code(e.code),
                     job_id=ev.job_id or None, task=task or ev.task or None,
                     remote_type=remote_type, remote_traceback=remote_tb)


_TRACEBACK = "Traceback (most recent call last):\n"


def connection_error(err, address):
    if isinstance(err, grpc.RpcError):
        code = err.code()
        details = err.details()
        return ConnectionLost("jobd at %s: %s: %s" % (address, code.name,
                                                       details), code=code)
    return ConnectionLost("jobd at %s: %s" % (address, err))


# ---------------------------------------------------------------- values


def set_value(v, x, where="argument"):
    """Sets google.protobuf.Value v from the JSON-like Python value x."""
    if x is None:
        v.null_value = 0
    elif x is True or x is False:
        v.bool_value = x
    elif isinstance(x, (int, float)):
        v.number_value = x
    elif isinstance(x, str):
        v.string_value = x
    elif isinstance(x, Mapping):
        s = v.struct_value
        s.SetInParent()
        for k, item in x.items():
            if not isinstance(k, str):
                raise TypeError("%s: object key %r is not a string"
                                % (where, k))
            set_value(s.fields[k], item, where)
    elif isinstance(x, (list, tuple)):
        lv = v.list_value
        lv.SetInParent()
        for item in x:
            set_value(lv.values.add(), item, where)
    else:
        raise TypeError("%s: %s is not JSON-like (None, bool, int, float, "
                        "str, list, dict)" % (where, type(x).__name__))


def from_value(v):
    """A google.protobuf.Value as a Python value; whole numbers as int."""
    k = v.WhichOneof("kind")
    if k == "number_value":
        n = v.number_value
        if n.is_integer() and abs(n) <= 2 ** 53:
            return int(n)
        return n
    if k == "string_value":
        return v.string_value
    if k == "bool_value":
        return v.bool_value
    if k == "struct_value":
        return {key: from_value(item)
                for key, item in v.struct_value.fields.items()}
    if k == "list_value":
        return [from_value(item) for item in v.list_value.values]
    return None


# ---------------------------------------------------------------- options

_KINDS = {"auto": pb.JOB_KIND_AUTO, "cpu": pb.JOB_KIND_CPU_BOUND,
          "io": pb.JOB_KIND_IO_BOUND}
_EXECUTORS = {None: pb.EXECUTOR_UNSPECIFIED, "process": pb.EXECUTOR_PROCESS,
              "thread": pb.EXECUTOR_THREAD, "reactor": pb.EXECUTOR_REACTOR}
_DELIVERIES = {"at_most_once": pb.DELIVERY_AT_MOST_ONCE,
               "at_least_once": pb.DELIVERY_AT_LEAST_ONCE}


_DEPENDENCY_POLICIES = {"all_succeeded": pb.DEPENDENCY_POLICY_ALL_SUCCEEDED,
                        "all_ended": pb.DEPENDENCY_POLICY_ALL_ENDED}

# Options in seconds and the JobSpec Duration field each fills.
_SECONDS_OPTIONS = {"delay": "delay", "retry_backoff": "retry.initial_backoff",
                    "start_deadline": "start_deadline",
                    "total_deadline": "total_deadline"}


@dataclass(frozen=True)
class JobOptions:
    """How jobs run; see Executor.options. Checked when built."""

    kind: str = "auto"
    executor: Optional[str] = None
    priority: int = 0
    timeout: Optional[float] = None
    labels: Dict[str, str] = field(default_factory=dict)
    idempotency_key: Optional[str] = None
    delivery: str = "at_most_once"
    # Kept out of the daemon's journal: faster, lost at a crash (README:
    # Durability).
    in_memory: bool = False
    payload: bytes = b""
    # Jobs over time (README: Retries, delays and deadlines).
    delay: Optional[float] = None  # seconds from acceptance
    not_before: Union[None, float, datetime.datetime] = None  # epoch or aware
    retries: Optional[int] = None  # retries after the first run
    retry_on: Tuple[str, ...] = ()  # e.g. ("TASK_ERROR", "TIMEOUT")
    retry_backoff: Optional[float] = None  # seconds before the 2nd run
    start_deadline: Optional[float] = None  # seconds
    total_deadline: Optional[float] = None  # seconds
    # Coordination (README: Limits by key, Callbacks) and tracing.
    concurrency_key: Optional[str] = None
    callback_url: Optional[str] = None
    traceparent: Optional[str] = None
    # Dependencies (README: Dependencies): job ids or JobFutures.
    depends_on: Tuple = ()
    dependency_policy: str = "all_succeeded"  # or "all_ended"
    dependency_results: bool = False  # their results as the first argument

    def updated(self, **changes):
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError("options: unknown option(s) %s; known: %s" % (
                ", ".join(sorted(unknown)),
                ", ".join(self.__dataclass_fields__)))
        if isinstance(changes.get("retry_on"), str):
            changes["retry_on"] = (changes["retry_on"],)
        elif "retry_on" in changes:
            changes["retry_on"] = tuple(changes["retry_on"])
        if "depends_on" in changes:
            d = changes["depends_on"]
            changes["depends_on"] = (d,) if isinstance(d, str) or hasattr(
                d, "job_id") else tuple(d)
        new = replace(self, **changes)
        new.check()
        return new

    def check(self):
        if self.kind not in _KINDS:
            raise JobRejected("spec.kind: %r; use one of %s"
                              % (self.kind, ", ".join(_KINDS)))
        if self.executor not in _EXECUTORS:
            raise JobRejected("spec.executor: %r; use None or one of "
                              "process, thread, reactor" % (self.executor,))
        if self.delivery not in _DELIVERIES:
            raise JobRejected("spec.delivery: %r; use at_most_once or "
                              "at_least_once" % (self.delivery,))
        if not isinstance(self.in_memory, bool):
            raise JobRejected("spec.in_memory: %r is not a bool"
                              % (self.in_memory,))
        if not isinstance(self.priority, int) or isinstance(self.priority,
                                                            bool) or \
                not -2 ** 31 <= self.priority < 2 ** 31:
            raise JobRejected("spec.priority: %r is not a 32-bit int"
                              % (self.priority,))
        if self.timeout is not None and (
                not isinstance(self.timeout, (int, float)) or
                not math.isfinite(self.timeout) or self.timeout <= 0):
            raise JobRejected("spec.timeout: %r; must be positive seconds "
                              "(None for no timeout)" % (self.timeout,))
        for k, v in self.labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise JobRejected("spec.labels[%r]: keys and values must be "
                                  "str" % (k,))
        if self.idempotency_key is not None and not isinstance(
                self.idempotency_key, str):
            raise JobRejected("spec.idempotency_key: must be a str")
        if not isinstance(self.payload, (bytes, bytearray)):
            raise JobRejected("spec.payload: must be bytes")
        for name, field_name in _SECONDS_OPTIONS.items():
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or
                                  not isinstance(v, (int, float)) or
                                  not math.isfinite(v) or v <= 0):
                raise JobRejected("spec.%s: %r; must be positive seconds"
                                  % (field_name, v))
        if self.delay is not None and self.not_before is not None:
            raise JobRejected("spec.delay: set with not_before; use one")
        nb = self.not_before
        if nb is not None:
            if isinstance(nb, datetime.datetime):
                if nb.tzinfo is None:
                    raise JobRejected("spec.not_before: a naive datetime; "
                                      "give it a time zone")
            elif isinstance(nb, bool) or not isinstance(nb, (int, float)) \
                    or not math.isfinite(nb):
                raise JobRejected("spec.not_before: %r; use an aware "
                                  "datetime or epoch seconds" % (nb,))
        if self.retries is not None and (
                isinstance(self.retries, bool) or
                not isinstance(self.retries, int) or self.retries < 0):
            raise JobRejected("spec.retry.max_attempts: retries=%r; must be "
                              "an int of at least 0 (retries after the "
                              "first run)" % (self.retries,))
        for i, r in enumerate(self.retry_on):
            if not isinstance(r, str) or "ERROR_REASON_" + r not in \
                    pb.ErrorReason.keys():
                raise JobRejected("spec.retry.retry_on[%d]: %r is not an "
                                  "error reason (e.g. TASK_ERROR, TIMEOUT)"
                                  % (i, r))
        for name in ("concurrency_key", "callback_url", "traceparent"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise JobRejected("spec.%s: must be a str" % name)
        for i, d in enumerate(self.depends_on):
            if not isinstance(d, str) and not hasattr(d, "job_id"):
                raise JobRejected("spec.depends_on[%d]: %r is neither a job "
                                  "id nor a JobFuture" % (i, d))
        if self.dependency_policy not in _DEPENDENCY_POLICIES:
            raise JobRejected("spec.dependency_policy: %r; use all_succeeded "
                              "or all_ended" % (self.dependency_policy,))
        if not isinstance(self.dependency_results, bool):
            raise JobRejected("spec.dependency_results: must be a bool")
        if self.dependency_results and not self.depends_on:
            raise JobRejected("spec.dependency_results: set without "
                              "depends_on")

    def args_to_check(self, args):
        """The positional arguments a task will get: with
        dependency_results, the results' list comes first (jobd puts it
        there), so the arguments are checked as if it were."""
        return ([],) + tuple(args) if self.dependency_results else args

    def fill(self, spec):
        """Sets spec's option fields."""
        spec.kind = _KINDS[self.kind]
        if self.executor:
            spec.executor = _EXECUTORS[self.executor]
        if self.priority:
            spec.priority = self.priority
        if self.timeout is not None:
            spec.timeout.FromNanoseconds(int(self.timeout * 1e9))
        if self.labels:
            spec.labels.update(self.labels)
        if self.idempotency_key:
            spec.idempotency_key = self.idempotency_key
        if self.delivery != "at_most_once":
            spec.delivery = _DELIVERIES[self.delivery]
        if self.in_memory:
            spec.in_memory = True
        if self.payload:
            spec.payload = bytes(self.payload)
        for name, field_name in _SECONDS_OPTIONS.items():
            v = getattr(self, name)
            if v is not None:
                target = spec
                for part in field_name.split("."):
                    target = getattr(target, part)
                target.FromNanoseconds(int(v * 1e9))
        if self.not_before is not None:
            nb = self.not_before
            if isinstance(nb, datetime.datetime):
                spec.not_before.FromDatetime(nb.astimezone(
                    datetime.timezone.utc).replace(tzinfo=None))
            else:
                spec.not_before.FromNanoseconds(int(nb * 1e9))
        if self.retries is not None:
            spec.retry.max_attempts = self.retries + 1
        for r in self.retry_on:
            spec.retry.retry_on.append(pb.ErrorReason.Value(
                "ERROR_REASON_" + r))
        if self.concurrency_key:
            spec.concurrency_key = self.concurrency_key
        if self.callback_url:
            spec.callback_url = self.callback_url
        if self.traceparent:
            spec.traceparent = self.traceparent
        for d in self.depends_on:
            # A JobFuture's id: known once jobd accepted it (_submit waits).
            spec.depends_on.append(d if isinstance(d, str) else d.job_id)
        if self.depends_on:
            spec.dependency_policy = _DEPENDENCY_POLICIES[
                self.dependency_policy]
            spec.dependency_results = self.dependency_results


# ------------------------------------------------------- task catalogue

_TYPE_OK = {
    "any": lambda x: True,
    "bool": lambda x: x is True or x is False,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(
        x, bool) and math.isfinite(x),
    "int": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (
        isinstance(x, float) and x.is_integer()),
    "string": lambda x: isinstance(x, str),
    "list": lambda x: isinstance(x, (list, tuple)),
    "object": lambda x: isinstance(x, Mapping),
}


def _kind_name(x):
    if x is None:
        return "null"
    if x is True or x is False:
        return "bool"
    if isinstance(x, (int, float)):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, Mapping):
        return "object"
    if isinstance(x, (list, tuple)):
        return "list"
    return type(x).__name__


class TaskCatalog:
    """The daemon's tasks (ListTasks), to check a spec's task name and
    arguments before it is sent, with the daemon's field names. Refreshed
    once when a name is unknown (a task registered since). The daemon still
    checks everything; this only moves the common mistakes to submit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tasks: Dict[str, Any] = {}

    def load(self, response):
        with self._lock:
            self._tasks = {t.name: t for t in response.tasks}

    def get(self, name):
        with self._lock:
            return self._tasks.get(name)

    def check(self, task, args, kwargs, info):
        if not isinstance(task, str) or not task:
            raise JobRejected("spec.task: missing task name")
        if info is None:
            raise JobRejected("spec.task: unknown task '%s' (see ListTasks / "
                              "jobctl tasks)" % task, task=task)
        if info.variadic:
            return
        params = info.params
        if len(args) > len(params):
            raise JobRejected(
                "spec.args: task '%s' takes at most %d positional "
                "argument(s), got %d" % (task, len(params), len(args)),
                task=task)
        bound = set()
        for i, x in enumerate(args):
            p = params[i]
            self._check_type(x, p.type, "spec.args[%d] (%s)" % (i, p.name),
                             task)
            bound.add(p.name)
        by_name = {p.name: p for p in params}
        for k, x in kwargs.items():
            p = by_name.get(k)
            if p is None:
                raise JobRejected("spec.kwargs.%s: task '%s' has no "
                                  "parameter '%s'" % (k, task, k), task=task)
            if k in bound:
                raise JobRejected("spec.kwargs.%s: parameter '%s' is also "
                                  "given positionally" % (k, k), task=task)
            self._check_type(x, p.type, "spec.kwargs." + k, task)
            bound.add(k)
        for i, p in enumerate(params):
            if p.required and p.name not in bound:
                raise JobRejected(
                    "spec.args[%d] / spec.kwargs.%s: task '%s' requires "
                    "argument '%s' (%s)" % (i, p.name, task, p.name, p.type),
                    task=task)

    @staticmethod
    def _check_type(x, type_name, where, task):
        ok = _TYPE_OK.get(type_name)
        if ok is not None and not ok(x):
            raise JobRejected("%s: expected %s, got %s"
                              % (where, type_name, _kind_name(x)), task=task)


def build_spec(spec, task, args, kwargs, options):
    """Fills the JobSpec `spec`; TypeError for a value that is not
    JSON-like."""
    spec.task = task
    for i, x in enumerate(args):
        set_value(spec.args.add(), x, "spec.args[%d]" % i)
    if kwargs:
        fields = spec.kwargs.fields
        for k, x in kwargs.items():
            set_value(fields[k], x, "spec.kwargs." + k)
    options.fill(spec)


def result_of(ev):
    """The value of a SUCCEEDED event, or its payload when it has no value
    but a payload."""
    r = ev.result
    if r.HasField("value"):
        return from_value(r.value)
    if r.payload:
        return r.payload
    return None


__all__ = ["JobdError", "JobFailed", "JobRejected", "ConnectionLost", "TLS",
           "JobOptions", "default_address", "struct_pb2"]
