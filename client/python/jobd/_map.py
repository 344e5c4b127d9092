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

from jobd import _common, _wire
from jobd._common import JobRejected, connection_error, error_from_event, \
    result_of
from jobd.v1 import jobd_pb2 as pb

_EXACT = float(2 ** 53)


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
        submit = executor._channel.stream_stream(
            "/jobd.v1.JobService/Submit",
            request_serializer=None,  # bytes from _requests
            response_deserializer=pb.SubmitResponse.FromString)
        self._call = submit(self._requests(first),
                            metadata=executor._metadata, timeout=timeout)

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._call.cancel()
        with self._executor._lock:
            self._executor._maps.discard(self)

    def _requests(self, first):
        # Requests go out as bytes encoded here (_wire.py): a spec is the
        # template's bytes plus its arguments', a third of the cost of
        # building messages field by field.
        yield first.SerializeToString()
        catalog = self._executor._catalog
        task, info = self._task, self._info
        template = self._template.SerializeToString()
        inputs = self._inputs
        encode_item = _wire.encode_item
        while True:
            with self._cv:
                while self._in_flight >= self._window and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                room = min(self._window - self._in_flight, self._max_batch)
            parts = []
            tag = self._sent
            stop = False
            try:
                for args in inputs:
                    catalog.check(task, args, {}, info)
                    parts.append(encode_item(tag, template, args))
                    tag += 1
                    if len(parts) == room:
                        break
                else:
                    stop = True
            except Exception as e:  # noqa: BLE001 - raised at its position
                if isinstance(e, TypeError):
                    e = JobRejected(str(e), task=task)
                with self._cv:
                    self._input_error = e
                stop = True
            if parts:
                with self._cv:
                    self._in_flight += len(parts)
                    self._sent += len(parts)
                yield b"".join(parts)
            if stop:
                return

    def results(self):
        succeeded = pb.EVENT_TYPE_SUCCEEDED
        from_value = _common.from_value
        try:
            for response in self._call:
                events = response.events
                for ev in events:
                    if ev.type == succeeded:
                        r = ev.result
                        if r.HasField("value"):
                            v = r.value
                            if v.WhichOneof("kind") == "number_value":
                                n = v.number_value  # from_value, inlined
                                yield int(n) if n.is_integer() and \
                                    -_EXACT <= n <= _EXACT else n
                            else:
                                yield from_value(v)
                        else:
                            yield result_of(ev)
                    elif ev.type == pb.EVENT_TYPE_CANCELLED:
                        raise cf.CancelledError(
                            "job %s (%s) was cancelled: %s" % (
                                ev.job_id, self._task, ev.error.message))
                    else:
                        raise error_from_event(ev, self._task)
                # Window credit once the message's results were taken: the
                # inputs read stay within `window` of the results consumed.
                with self._cv:
                    self._in_flight -= len(events)
                    self._cv.notify_all()
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
