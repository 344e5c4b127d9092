"""Python tasks the tests run in jobd's process pool (test_python_tasks.py)."""

import ctypes
import os
import time

import jobd


@jobd.task
def add(a: int, b: int = 2) -> int:
    """Adds two ints."""
    return a + b


@jobd.task(name="pt.describe", kind="io")
def describe(text: str, scale: float, flag: bool, items: list, opts: dict,
             anything=None, *, payload: bytes = b""):
    """Returns what it got, with the payload reversed."""
    return jobd.Result({"text": text, "scale": scale,
                        "scale_type": type(scale).__name__, "flag": flag,
                        "items": items, "opts": opts, "anything": anything,
                        "payload_len": len(payload)}, payload[::-1])


@jobd.task
def fail(message: str):
    raise ValueError(message)


@jobd.task
def crash_if(n: int):
    """Segfaults (a NULL read through ctypes) when n == 13."""
    if n == 13:
        ctypes.string_at(0)
    return n


@jobd.task
def spin(seconds_between_checks: float = 0.0):
    """A busy loop that never looks at jobd.cancelled()."""
    x = 0
    while True:
        x += 1


@jobd.task
def cooperative(steps: int):
    """Reports progress each step; returns early once cancelled."""
    for i in range(steps):
        if jobd.cancelled():
            return "stopped at %d" % i
        jobd.progress((i + 1) / steps, "step %d" % (i + 1))
        time.sleep(0.15)
    return "done"


@jobd.task
def pid() -> int:
    return os.getpid()


@jobd.task
def bad_result():
    return object()


@jobd.task
def noop():
    return None


_held = []


@jobd.task
def hold(mb: int, seconds: float = 1.0) -> int:
    """Keeps mb MiB (touched) for the worker's life, then waits."""
    _held.append(b"x" * (mb << 20))
    time.sleep(seconds)
    return os.getpid()


@jobd.task
def fail_at(n: int, at: int = 37) -> int:
    """Returns n, raises ValueError when n == at (a batch's failing call)."""
    if n == at:
        raise ValueError("call %d failed" % n)
    return n


@jobd.task
def kinds(x: float, n: int, anything=None) -> list:
    """The Python types its arguments arrived as."""
    return [type(x).__name__, type(n).__name__, type(anything).__name__]


@jobd.task
def ident(x):
    return x


@jobd.task
def not_json_at(n: int, at: int = 3):
    """Returns n, and a set (not JSON) when n == at."""
    return {n} if n == at else n
