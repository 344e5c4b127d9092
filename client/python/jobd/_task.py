"""Python functions as jobd tasks: the @jobd.task decorator and what a task
calls while it runs (jobd.progress, jobd.cancelled).

This module needs nothing but the standard library: jobd's process-pool
workers import it without grpc or protobuf (README: Python tasks).

    import jobd

    @jobd.task(kind="cpu")
    def count_primes(limit: int) -> int:
        ...

jobd --python-tasks MODULE imports the module in its workers and makes each
decorated module-level function a task named "MODULE.FUNCTION" (or `name`).
Its parameters come from the signature: type hints become checks (int, float
-> number, str, bool, list/tuple, dict, anything else: any), a default makes
a parameter optional, a parameter named `payload` receives the job's bytes
payload. The function returns a JSON value (None, bool, int, float, str,
list, tuple, dict), bytes (the result's payload) or jobd.Result(value,
payload). An exception fails the job with its type, message and traceback.
"""

import collections

__all__ = ["task", "progress", "cancelled", "Result"]

_KINDS = ("cpu", "io")


def task(fn=None, *, name=None, kind="cpu"):
    """Marks a module-level function as a jobd task.

    Usable bare (@jobd.task) or with options (@jobd.task(name="x",
    kind="io")). `kind` is the job kind jobd assumes when a spec leaves it
    out; every Python task runs in jobd's process pool. The function is
    returned unchanged: it stays callable as plain Python.
    """
    if kind not in _KINDS:
        raise ValueError("jobd.task: kind must be 'cpu' or 'io', not %r"
                         % (kind,))
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("jobd.task: name must be a non-empty string")

    def mark(f):
        if not callable(f):
            raise TypeError("jobd.task decorates a function, not %r" % (f,))
        f.__jobd_task__ = {"name": name, "kind": kind}
        return f

    return mark(fn) if fn is not None else mark


def _worker():
    try:
        import _jobd_worker  # Built into jobd's workers.
        return _jobd_worker
    except ImportError:
        return None


def progress(fraction, message=""):
    """Reports the running job's progress: `fraction` in 0..1 (negative if
    unknown) and a short message. Throttled by jobd; a no-op outside jobd."""
    w = _worker()
    if w is not None:
        w.progress(float(fraction), str(message))


def cancelled():
    """True once the running job was cancelled or timed out. A task that
    loops for long polls it and returns early; one that does not is killed
    (README: Python tasks). Always False outside jobd."""
    w = _worker()
    return bool(w is not None and w.cancelled())


class Result(collections.namedtuple("Result", ["value", "payload"])):
    """A task's result with both a JSON value and a bytes payload."""

    __slots__ = ()
    __jobd_result__ = True

    def __new__(cls, value=None, payload=b""):
        return super().__new__(cls, value, payload)
