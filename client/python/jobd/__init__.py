"""jobd's Python client: the daemon through concurrent.futures and asyncio.

    import jobd
    with jobd.Executor() as ex:                 # $JOBD_ADDRESS or the socket
        print(ex.submit("echo", "hello").result(timeout=5))

jobd.Executor is a concurrent.futures.Executor (futures work with
as_completed, wait, add_done_callback); jobd.aio.Client is the asyncio
client. Needs Debian's python3-grpcio and python3-protobuf, and the jobd.v1
stubs the build generates into jobd/v1/ (README: Python client).

@jobd.task, jobd.progress, jobd.cancelled and jobd.Result (Python functions
as tasks, README: Python tasks) need only the standard library: the client
parts are imported on first use, so jobd's workers never load grpc.
"""

from jobd._task import Result, cancelled, progress, task

__version__ = "0.1.0"

_CLIENT = {"TLS", "ConnectionLost", "JobdError", "JobFailed", "JobOptions",
           "JobRejected", "default_address"}

__all__ = ["Executor", "JobFuture", "JobFailed", "JobRejected",
           "ConnectionLost", "JobdError", "JobOptions", "TLS",
           "default_address", "task", "progress", "cancelled", "Result"]


def _client():
    try:
        from jobd.v1 import jobd_pb2 as _pb  # noqa: F401
    except ImportError as e:  # pragma: no cover - a source tree not built yet
        raise ImportError(
            "jobd: the generated jobd.v1 stubs are missing (%s); build the "
            "jobd_python target (deploy/setup.sh or ninja -C build "
            "jobd_python) or install the package with pip" % e) from None


def __getattr__(name):
    # The client (grpc, protobuf) on first use: PEP 562.
    if name in _CLIENT:
        _client()
        from jobd import _common
        value = getattr(_common, name)
    elif name in ("Executor", "JobFuture"):
        _client()
        from jobd import executor
        value = getattr(executor, name)
    else:
        raise AttributeError("module 'jobd' has no attribute %r" % (name,))
    globals()[name] = value
    return value
