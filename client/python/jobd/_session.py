"""One Submit stream shared by the futures of an Executor.

submit() queues a SubmitItem; gRPC's request thread takes everything queued
into one SubmitRequest (up to the daemon's max_jobs_per_request), so submits
are batched under load; a reader thread dispatches the events to the futures
by client_tag. When the stream ends, every future still open fails with
ConnectionLost at once; but when it broke (UNAVAILABLE: jobd restarted or
the connection dropped) and the session has a `reattach` hand-off, the
futures of jobs jobd had accepted go there instead (jobd._reattach) and
follow their jobs to their ends once jobd answers again.

Thread-safety: all mutable state, and each future's _queued flag, is
guarded by self._cv. Future callbacks run
on the reader thread (as the stdlib runs them on a worker thread), never
under self._cv.
"""

import collections
import threading

import grpc

from jobd._common import ConnectionLost, connection_error, error_from_event, \
    result_of
from jobd.v1 import jobd_pb2 as pb

# Events that end a job's place in the stream, and the other ones a future
# follows; any other kind (RETRYING, newer ones) is skipped.
_ENDS = frozenset((pb.EVENT_TYPE_SUCCEEDED, pb.EVENT_TYPE_FAILED,
                   pb.EVENT_TYPE_CANCELLED, pb.EVENT_TYPE_REJECTED))
_STEPS = frozenset((pb.EVENT_TYPE_ACCEPTED, pb.EVENT_TYPE_STARTED,
                    pb.EVENT_TYPE_PROGRESS))


class Session:
    def __init__(self, stub, metadata, address, limits, on_drained=None,
                 reattach=None):
        self._stub = stub
        self._address = address
        self._max_batch = max(1, limits.max_jobs_per_request or 1024)
        self._cv = threading.Condition()
        self._queue = collections.deque()  # (SubmitItem, future) to send
        self._open = {}  # client_tag -> future, sent or queued, not ended
        self._next_tag = 1
        self._closing = False  # no more specs; half-close when sent
        self._close_when_idle = False
        self._ended = None  # the exception that ended the stream
        self._on_drained = on_drained
        self._reattach = reattach  # (futures, ConnectionLost) -> None
        self._handing = []  # futures on their way to self._reattach
        options = pb.SubmitOptions(order=pb.ORDER_COMPLETION,
                                   window=limits.max_window or 0)
        self._first = pb.SubmitRequest(options=options)
        self._call = stub.Submit(self._requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name="jobd-submit-reader")
        self._reader.start()

    # ----------------------------------------------------------- API

    def broken(self):
        with self._cv:
            return self._ended is not None

    def enqueue(self, spec, future):
        """Queues spec for future; False if the stream has ended (the caller
        opens a new session)."""
        with self._cv:
            if self._ended is not None or self._closing:
                return False
            tag = self._next_tag
            self._next_tag += 1
            item = pb.SubmitItem(client_tag=tag, spec=spec)
            future._attach(self, tag)
            future._queued = True
            self._open[tag] = future
            self._queue.append((item, future))
            if len(self._queue) == 1:
                self._cv.notify_all()
            return True

    def unqueue(self, future):
        """Drops future's spec if it has not been sent yet; True if so. O(1):
        the writer skips it (cancelling many queued futures stays linear)."""
        with self._cv:
            if not future._queued:
                return False
            future._queued = False
            self._open.pop(future._tag, None)
            self._maybe_idle_locked()
            return True

    def forget(self, tag):
        with self._cv:
            self._open.pop(tag, None)
            self._maybe_idle_locked()

    def open_futures(self):
        with self._cv:
            return list(self._open.values()) + self._handing

    def close(self, when_idle=False, timeout=None):
        """Half-closes the stream: now (when_idle=False: jobs still open are
        failed when the stream ends) or once every open future has ended."""
        with self._cv:
            if when_idle:
                self._close_when_idle = True
                self._maybe_idle_locked()
            else:
                self._closing = True
            self._cv.notify_all()
        if not when_idle:
            self._reader.join(timeout)
            if self._reader.is_alive():
                self._call.cancel()
                self._reader.join(5)

    def cancel_stream(self):
        self._call.cancel()

    # ----------------------------------------------------------- internals

    def _maybe_idle_locked(self):
        if self._close_when_idle and not self._open:
            self._closing = True
            self._cv.notify_all()

    def _requests(self):
        yield self._first
        while True:
            with self._cv:
                while not self._queue and not self._closing and \
                        self._ended is None:
                    self._cv.wait()
                if not self._queue:
                    return  # closing: half-close the stream
                n = min(len(self._queue), self._max_batch)
                pop = self._queue.popleft
                batch = []
                for _ in range(n):
                    item, f = pop()
                    if f._queued:  # else cancelled before it was sent
                        f._queued = False
                        batch.append(item)
            if not batch:
                continue
            req = pb.SubmitRequest()
            req.items.extend(batch)
            yield req

    def _read(self):
        error = None
        try:
            for response in self._call:
                self._dispatch(response.events)
        except grpc.RpcError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - reported to every future
            error = e
        with self._cv:
            if error is None:
                self._ended = ConnectionLost(
                    "jobd at %s ended the Submit stream" % self._address)
            else:
                self._ended = connection_error(error, self._address)
            left = list(self._open.values())
            self._open.clear()
            self._queue.clear()
            if self._reattach is not None and \
                    isinstance(error, grpc.RpcError) and \
                    error.code() == grpc.StatusCode.UNAVAILABLE:
                # Still open_futures() until the hand-off (shutdown waits).
                self._handing = [f for f in left if f.job_id is not None]
                left = [f for f in left if f.job_id is None]
            handing = self._handing
            self._cv.notify_all()
        ended = self._ended
        if handing:
            try:
                self._reattach(handing, ended)
            except Exception:  # noqa: BLE001 - no thread: fail them here
                left += handing
            finally:
                with self._cv:
                    self._handing = []
        for f in left:
            f._fail_connection(ended)
        if self._on_drained is not None:
            self._on_drained(self)

    def _dispatch(self, events):
        open_ = self._open
        done = []
        with self._cv:
            for ev in events:
                f = open_.get(ev.client_tag)
                if f is None:
                    continue
                t = ev.type
                if t in _ENDS:
                    del open_[ev.client_tag]
                elif t not in _STEPS:
                    continue  # RETRYING, or newer kinds: not an end.
                done.append((f, ev))
            if self._close_when_idle and not open_:
                self._closing = True
                self._cv.notify_all()
        for f, ev in done:
            apply_event(f, ev)


def apply_event(f, ev):
    """Gives the JobFuture f its job's event ev (an end, or a step)."""
    t = ev.type
    if t == pb.EVENT_TYPE_SUCCEEDED:
        f._finish(result_of(ev), None, ev)
    elif t == pb.EVENT_TYPE_ACCEPTED:
        f._accept_time = ev.time.ToNanoseconds()  # (_reattach checks it)
        f._accepted(ev.job_id)
    elif t == pb.EVENT_TYPE_STARTED:
        f._started = True
    elif t == pb.EVENT_TYPE_PROGRESS:
        f.progress = (ev.progress.fraction, ev.progress.message)
    elif t == pb.EVENT_TYPE_CANCELLED:
        f._finish(None, None, ev, cancelled=True)
    else:  # FAILED, REJECTED
        f._finish(None, error_from_event(ev, f.task), ev)
