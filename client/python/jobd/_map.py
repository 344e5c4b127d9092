"""Executor.map on a Submit stream of its own (ORDER_SUBMISSION,
terminal_only, omit_accepted, cancel_on_disconnect): no Future per input,
results streamed back in input order.

Laziness: gRPC's request thread takes inputs from the caller's iterables
only while fewer than `window` jobs are in flight (sent, their result not yet
taken by the consumer), so a generator of any length is read at most
`window` items ahead of the results consumed. An input that cannot become a
spec (wrong arguments, an exception raised by the iterable) ends the input
there: the results before it are yielded, then it is raised.

Thread-safety: state shared by the request thread and the consumer is
guarded by self._cv.
"""

import concurrent.futures as cf
import threading
import time

import grpc

from jobd._common import JobRejected, build_spec, connection_error, \
    error_from_event, result_of
from jobd.v1 import jobd_pb2 as pb


class MapStream:
    def __init__(self, executor, task, inputs, options, chunksize, window,
                 end):
        limits = executor._limits
        if window is None:
            window = limits.default_window or 1024
        window = max(1, min(int(window), limits.max_window or window))
        self._executor = executor
        self._task = task
        self._inputs = inputs
        self._options = options
        self._window = window
        self._max_batch = max(1, min(limits.max_jobs_per_request or 1024,
                                     window))
        self._cv = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._input_error = None  # raised after the results before it
        self._sent = 0
        self._template = pb.JobSpec(task=task)
        options.fill(self._template)
        if chunksize > 1:
            self._template.chunksize = chunksize
        self._info = executor._task_info(task)
        first = pb.SubmitRequest(options=pb.SubmitOptions(
            order=pb.ORDER_SUBMISSION, window=window, terminal_only=True,
            omit_accepted=True, cancel_on_disconnect=True))
        timeout = None if end is None else max(0.0, end - time.monotonic())
        with executor._lock:
            executor._maps.add(self)
        self._call = executor._stub.Submit(self._requests(first),
                                           metadata=executor._metadata,
                                           timeout=timeout)

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._call.cancel()
        with self._executor._lock:
            self._executor._maps.discard(self)

    def _requests(self, first):
        yield first
        catalog = self._executor._catalog
        task, info, template = self._task, self._info, self._template
        inputs = self._inputs
        while True:
            with self._cv:
                while self._in_flight >= self._window and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                room = min(self._window - self._in_flight, self._max_batch)
            req = pb.SubmitRequest()
            items = req.items
            n = 0
            stop = False
            try:
                for args in inputs:
                    catalog.check(task, args, {}, info)
                    item = items.add()
                    item.client_tag = self._sent + n
                    spec = item.spec
                    spec.CopyFrom(template)
                    build_spec(spec, task, args, None, _NO_OPTIONS)
                    n += 1
                    if n == room:
                        break
                else:
                    stop = True
            except Exception as e:  # noqa: BLE001 - raised at its position
                if isinstance(e, TypeError):
                    e = JobRejected(str(e), task=task)
                with self._cv:
                    self._input_error = e
                stop = True
                if n:
                    del items[n:]
            if n:
                with self._cv:
                    self._in_flight += n
                    self._sent += n
                yield req
            if stop:
                return

    def results(self):
        try:
            for response in self._call:
                for ev in response.events:
                    with self._cv:
                        self._in_flight -= 1
                        if self._in_flight == self._window - 1 or \
                                self._in_flight == 0:
                            self._cv.notify_all()
                    t = ev.type
                    if t == pb.EVENT_TYPE_SUCCEEDED:
                        yield result_of(ev)
                    elif t == pb.EVENT_TYPE_CANCELLED:
                        raise cf.CancelledError(
                            "job %s (%s) was cancelled: %s" % (
                                ev.job_id, self._task, ev.error.message))
                    else:
                        raise error_from_event(ev, self._task)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError("map: timeout reached") from None
            if e.code() == grpc.StatusCode.CANCELLED and self._closed:
                return
            raise connection_error(e, self._executor._address) from None
        finally:
            self.close()
        if self._input_error is not None:
            raise self._input_error


class _NoOptions:
    @staticmethod
    def fill(spec):
        pass


_NO_OPTIONS = _NoOptions()
