"""Executor.map on a Submit stream of its own (ORDER_SUBMISSION,
terminal_only, omit_accepted, cancel_on_disconnect): no Future per input,
results streamed back in input order.

Laziness: gRPC's request thread takes inputs from the caller's iterables
only while fewer than `window` jobs are in flight (sent, their result not yet
taken by the consumer), so a generator of any length is read at most
`window` items ahead of the results consumed. An input that cannot become a
spec (wrong arguments, an exception raised by the iterable) ends the input
there: the results before it are yielded, then it is raised.

Batches: with chunksize > 1 and a task that takes them (TaskInfo.takes_calls:
Python tasks), each chunk of `chunksize` inputs is one job whose
JobSpec.calls is the chunk's arguments as JSON, and whose result is a JSON
list (BatchResult) unpacked here; its calls are checked by the daemon only
(it names the call and field). With one iterable and a task that takes
them (TaskInfo.takes_flat_calls), chunks are flat (JobSpec.flat_calls: a
JSON array of the inputs themselves, a third of the cost to encode). The
window still counts inputs; the request thread, once the window is full,
waits until half of it is free (or a chunk, if more) and sends that much
in one message, so that it and the consumer hand over less often.

Results: a response's values are yielded as lists through an
itertools.chain (MapResults), so an element costs the consumer no
generator step; credit for the window is returned once a response's
values were all taken.

Thread-safety: state shared by the request thread and the consumer is
guarded by self._cv.
"""

import collections
import concurrent.futures as cf
import itertools
import json
import threading
import time

import grpc

from jobd import _common, _wire
from jobd._common import JobFailed, JobRejected, connection_error, \
    error_from_event, result_of
from jobd.v1 import jobd_pb2 as pb

_EXACT = float(2 ** 53)
# A batch's calls as compact, strict JSON (the daemon refuses NaN).
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False,
                          check_circular=False).encode
_CALLS_TAG = b"\x82\x05"  # JobSpec.calls = 80, length-delimited.
_FLAT_TAG = b"\x88\x05\x01"  # JobSpec.flat_calls = 81, true.
# Chunks per Submit message: the first ones reach the workers while the
# next are being encoded (and a message stays a few hundred KB at most).
_CHUNKS_PER_MESSAGE = 32
# The first message is small: the workers start while the next is encoded.
_FIRST_CHUNKS = 2
# A chunked map's default window, in chunks (or jobd's default window of
# inputs if more): room for whole messages both ways, since each message
# costs the client two thread hand-overs under its GIL.
_DEFAULT_CHUNKS = 128


class MapResults(itertools.chain):
    """What Executor.map returns: its results in input order, over a
    generator of lists (one per response or chunk); close() ends the map
    early (so does dropping it), as a generator's would."""

    __slots__ = ("_lists",)

    def close(self):
        self._lists.close()


def batch_values(ev, task):
    """A SUCCEEDED batch's values, in call order, and None; or, if a call
    failed, the values before the first that failed and its JobFailed."""
    b = ev.result.batch
    values = json.loads(b.results)
    if not b.call_errors:
        return values, None
    e = min(b.call_errors, key=lambda c: c.index)
    return values[:e.index], JobFailed(
        e.message, reason="TASK_ERROR", code=grpc.StatusCode.UNKNOWN,
        job_id=ev.job_id or None, task=task, remote_type=e.type,
        remote_traceback=e.traceback or None)


def encode_calls(calls, first, task):
    """(calls, JobSpec.calls as compact JSON, None) for `calls` (each one
    call's arguments, or its only one); or, if call k cannot be JSON, the
    calls before it, theirs, and the JobRejected naming it (input
    `first` + k)."""
    try:
        return calls, _dumps(calls), None
    except Exception as error:  # noqa: BLE001 - named, then raised in order
        k = 0
        for k, args in enumerate(calls):
            try:
                _dumps(args)
            except Exception:  # noqa: BLE001
                break
        return calls[:k], _dumps(calls[:k]), JobRejected(
            "spec.calls[%d] (input %d): %s" % (k, first + k, error),
            task=task)


def results_of(lists):
    r = MapResults.from_iterable(lists)
    r._lists = lists
    return r


class MapStream:
    def __init__(self, executor, task, iterables, options, chunksize, window,
                 end):
        limits = executor._limits
        info = executor._task_info(task)
        batches = chunksize > 1 and getattr(info, "takes_calls", False)
        if window is None:
            window = limits.default_window or 1024
            if batches:
                window = max(window, _DEFAULT_CHUNKS * chunksize)
        window = max(1, min(int(window), limits.max_window or window))
        self._executor = executor
        self._task = task
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
        self._info = info
        # One job per chunk where the task takes batches; else the pool
        # sends up to chunksize jobs to a worker in one frame.
        self._chunk = chunksize if batches else 0
        if chunksize > 1 and not self._chunk:
            self._template.chunksize = chunksize
        # Flat chunks: one argument per call, the inputs as they are.
        self._flat = bool(self._chunk) and len(iterables) == 1 and getattr(
            self._info, "takes_flat_calls", False)
        self._inputs = iter(iterables[0]) if self._flat else zip(*iterables)
        self._waiting_for = 0  # inputs of room the request thread waits for
        if self._chunk:
            self._window = window = max(window, chunksize)
        self._sizes = collections.deque()  # inputs per job sent, in order
        self._max_bytes = max(1 << 16, (limits.max_message_bytes or
                                        (4 << 20)) // 2)
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
        if self._chunk:
            yield from self._batch_requests()
            return
        catalog = self._executor._catalog
        task, info = self._task, self._info
        template = self._template.SerializeToString()
        inputs = self._inputs
        encode_item = _wire.encode_item
        while True:
            with self._cv:
                if self._in_flight >= self._window:
                    self._waiting_for = 1
                    while self._in_flight >= self._window and \
                            not self._closed:
                        self._cv.wait()
                    self._waiting_for = 0
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
                    self._sizes.extend(itertools.repeat(1, len(parts)))
                yield b"".join(parts)
            if stop:
                return

    def _batch_requests(self):
        # A job per chunk: the template's bytes, then JobSpec.calls (and
        # JobSpec.flat_calls).
        template = self._template.SerializeToString()
        inputs = self._inputs
        chunk = self._chunk
        flat = _FLAT_TAG if self._flat else b""
        varint = _wire.varint
        islice = itertools.islice
        dumps = _dumps
        # Once the window is full: wait for half of it (whole chunks).
        refill = max(chunk, self._window // 2 // chunk * chunk)
        most = _FIRST_CHUNKS  # chunks in this message
        tag = 0
        while True:
            with self._cv:
                if self._in_flight + chunk > self._window:
                    self._waiting_for = refill
                    while self._in_flight + refill > self._window and \
                            not self._closed:
                        self._cv.wait()
                    self._waiting_for = 0
                if self._closed:
                    return
                room = min((self._window - self._in_flight) // chunk,
                           self._max_batch, most)
            most = _CHUNKS_PER_MESSAGE
            parts, sizes, nbytes = [], [], 0
            stop = False
            while len(parts) < room and nbytes < self._max_bytes:
                calls = None  # stays None if the iterable raises
                try:
                    calls = list(islice(inputs, chunk))
                    body = dumps(calls).encode()
                except Exception as e:  # noqa: BLE001 - raised in order
                    calls, body = self._bad_input(calls, e)
                    stop = True
                if calls:
                    spec = b"".join((template, _CALLS_TAG,
                                     varint(len(body)), body, flat))
                    item = b"".join((b"\x08", varint(tag), b"\x12",
                                     varint(len(spec)), spec))
                    parts.append(b"\x12" + varint(len(item)) + item)
                    sizes.append(len(calls))
                    nbytes += len(item)
                    tag += 1
                if len(calls) < chunk:
                    stop = True
                if stop:
                    break
            if parts:
                with self._cv:
                    self._in_flight += sum(sizes)
                    self._sent += sum(sizes)
                    self._sizes.extend(sizes)
                yield b"".join(parts)
            if stop:
                return

    def _bad_input(self, calls, error):
        # The calls before the one that cannot be JSON still go (as a
        # shorter chunk); that one is raised after their results.
        if calls is None:  # The iterable raised: the chunk's inputs read
            calls = []      # before it are dropped with it.
            bad = error
        else:
            calls, _, bad = encode_calls(calls, self._sent, self._task)
        if isinstance(bad, TypeError):
            bad = JobRejected(str(bad), task=self._task)
        with self._cv:
            self._input_error = bad
        return calls, _dumps(calls).encode()

    def results(self):
        return results_of(self._lists())

    def _lists(self):
        # The results as lists, in order: a batch's values, or the single
        # values of one response. An error raises after the values before
        # it.
        succeeded = pb.EVENT_TYPE_SUCCEEDED
        from_value = _common.from_value
        cv, sizes = self._cv, self._sizes
        try:
            for response in self._call:
                events = response.events
                singles = []
                for ev in events:
                    if ev.type == succeeded:
                        r = ev.result
                        if r.HasField("batch"):
                            if singles:
                                yield singles
                                singles = []
                            values, error = batch_values(ev, self._task)
                            yield values
                            if error is not None:
                                raise error
                        elif r.HasField("value"):
                            v = r.value
                            if v.WhichOneof("kind") == "number_value":
                                n = v.number_value  # from_value, inlined
                                singles.append(int(n) if n.is_integer() and
                                               -_EXACT <= n <= _EXACT else n)
                            else:
                                singles.append(from_value(v))
                        else:
                            singles.append(result_of(ev))
                        continue
                    if singles:
                        yield singles
                    if ev.type == pb.EVENT_TYPE_CANCELLED:
                        raise cf.CancelledError(
                            "job %s (%s) was cancelled: %s" % (
                                ev.job_id, self._task, ev.error.message))
                    raise error_from_event(ev, self._task)
                if singles:
                    yield singles
                # Window credit once the message's results were taken: the
                # inputs read stay within `window` of the results consumed.
                with cv:
                    self._in_flight -= sum(sizes.popleft()
                                           for _ in range(len(events)))
                    want = self._waiting_for
                    if want and self._in_flight + want <= self._window:
                        cv.notify()
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

