"""jobd.Executor: a concurrent.futures.Executor whose jobs run in a jobd
daemon.

    with jobd.Executor() as ex:                      # $JOBD_ADDRESS / socket
        f = ex.submit("sleep", 300)                  # concurrent.futures.Future
        print(f.result(timeout=5))
        for n in ex.options(kind="cpu").map("primes.count", range(10**4),
                                            chunksize=64):
            ...

Differences from the standard library, on purpose: `cancel()` also cancels a
running job (jobd asks its task to stop and ends it at once); `map` is lazy
(at most `window` inputs taken ahead of the results consumed); a failed job
raises jobd.JobFailed. When the connection breaks (jobd restarted), the
futures of accepted jobs follow their jobs again once jobd answers (within
reconnect_timeout); the others fail with jobd.ConnectionLost.

Thread-safety: an Executor and its futures may be used from any thread.
Ownership: the Executor owns its channel and its Submit stream; shutdown()
(or leaving the `with` block) releases them.
"""

import concurrent.futures as cf
import threading
import time

import grpc

from jobd._common import ConnectionLost, JobOptions, JobRejected, \
    TaskCatalog, build_spec, channel_args, connection_error
from jobd._map import MapStream
from jobd._reattach import Reattach
from jobd._session import Session
from jobd.v1 import jobd_pb2 as pb
from jobd.v1 import jobd_pb2_grpc as pb_grpc

_CANCEL_RPC_TIMEOUT = 10.0
_ACCEPT_WAIT = 60  # seconds a dependant's submit waits for a dependency's id


class JobFuture(cf.Future):
    """A concurrent.futures.Future for one jobd job.

    Extra attributes: job_id (None until jobd accepted it), task, progress
    ((fraction, message) of the latest PROGRESS event, or None), payload
    (the result's bytes) and event (the terminal JobEvent)."""

    def __init__(self, executor, task):
        super().__init__()
        self._executor = executor
        self._session = None
        self._tag = 0
        self.task = task
        self.job_id = None
        self.progress = None
        self.payload = b""
        self.event = None
        self._started = False
        self._cancel_wanted = False
        # The ACCEPTED event's time (ns): how a re-attachment knows that
        # its id still names its job (_reattach).
        self._accept_time = 0
        self._queued = False  # in its session's queue, not sent (session)
        self._notify_lock = threading.Lock()
        self._notified = False  # CANCELLED_AND_NOTIFIED set (_cancel_here)
        self._accepted_event = threading.Event()  # job_id known, or ended

    def __repr__(self):
        return "<JobFuture %s job=%s %s>" % (self.task, self.job_id,
                                             self._state)

    def running(self):
        """True once jobd reported the job started, until it ends."""
        return self._started and not self.done()

    def cancel(self):
        """Cancels the job, queued or running (unlike the stdlib, a running
        job can be cancelled: jobd ends it at once and asks its task to
        stop). True if the future is now cancelled; False if the job had
        already ended."""
        if self.done():
            return self.cancelled()
        session = self._session
        if session is not None and session.unqueue(self):
            return self._cancel_here()  # never sent
        job_id = self.job_id
        if job_id is not None and session is not None and session.broken():
            # Followed again (_reattach), perhaps while jobd is down.
            return self._cancel_when_jobd_answers(job_id)
        if job_id is None:
            # Sent, not yet accepted: cancelled here now, on jobd as soon as
            # its id arrives (_accepted).
            self._cancel_wanted = True
            if self.job_id is None:
                return self._cancel_here()
            job_id = self.job_id
        try:
            resp = self._executor._stub.CancelJob(
                pb.CancelJobRequest(job_id=job_id),
                metadata=self._executor._metadata,
                timeout=_CANCEL_RPC_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or \
                    self._executor._reconnect_timeout <= 0:
                return False
            # jobd went away (its stream breaks next): as above.
            return self._cancel_when_jobd_answers(job_id)
        if resp.state == pb.JOB_STATE_CANCELLED:
            return self._cancel_here() or self.cancelled()
        return False

    def _cancel_when_jobd_answers(self, job_id):
        # Cancelled here now, on jobd as soon as it answers (CancelJob
        # waits for it); its end then comes to the re-attachment.
        if not self._cancel_here():
            return self.cancelled()
        self._executor._cancel_async(job_id)
        return True

    def _cancel_here(self):
        # CANCELLED_AND_NOTIFIED at once, as a stdlib executor does when a
        # worker meets a cancelled future: wait() and as_completed() count
        # only that state as done.
        if not cf.Future.cancel(self):
            return False
        with self._notify_lock:
            first, self._notified = not self._notified, True
        if first:
            self.set_running_or_notify_cancel()
        return True

    # Called by the session (reader thread).
    def _attach(self, session, tag):
        self._session = session
        self._tag = tag

    def _await_accepted(self, index):
        # A job depending on this one needs its id: wait (bounded) for
        # jobd's acceptance, or its end however it comes (a rejection, a
        # cancel here, a lost stream).
        self.add_done_callback(lambda f: f._accepted_event.set())
        if not self._accepted_event.wait(_ACCEPT_WAIT) or self.job_id is None:
            if self.done():
                why = "cancelled" if self.cancelled() else self.exception()
                raise JobRejected("spec.depends_on[%d]: that job has no id: "
                                  "%s" % (index, why))
            raise JobRejected("spec.depends_on[%d]: that job was not "
                              "accepted within %ds" % (index, _ACCEPT_WAIT))

    def _accepted(self, job_id):
        self.job_id = job_id
        self._accepted_event.set()
        if self._cancel_wanted:
            self._executor._cancel_async(job_id)

    def _finish(self, value, error, ev, cancelled=False):
        self.event = ev
        if ev.job_id:
            self.job_id = ev.job_id
        self._accepted_event.set()
        try:
            if cancelled:
                self._cancel_here()
            elif error is not None:
                self.set_exception(error)
            else:
                if ev.result.payload:
                    self.payload = ev.result.payload
                self.set_result(value)
        except cf.InvalidStateError:
            pass  # cancelled here meanwhile

    def _fail_connection(self, error):
        if self.done():
            return
        try:
            self.set_exception(ConnectionLost(str(error), code=error.code,
                                              job_id=self.job_id))
        except cf.InvalidStateError:
            pass


class _Base(cf.Executor):
    """What Executor and its options views share."""

    _options: JobOptions

    def submit(self, task, /, *args, **kwargs):
        """Submits a job of `task` with JSON-like args/kwargs; returns a
        JobFuture at once. Raises jobd.JobRejected (its `field` named) when
        the spec is wrong for the task, RuntimeError after shutdown."""
        return self._root()._submit(task, args, kwargs, self._options)

    def map(self, task, *iterables, timeout=None, chunksize=1, window=None):
        """Like Executor.map: yields task(*item) in input order. Lazy: at most
        `window` inputs (default: the daemon's default window) are taken
        from the iterables ahead of the results consumed. chunksize > 1:
        for a task that takes batches (Python tasks) each chunk is one job
        of that many calls, its results unpacked in order (a failed call
        raises at its input; timeout, cancel and retries apply to the
        chunk); for other tasks the process pool sends that many jobs to a
        worker in one frame. Runs
        on a Submit stream of its own; leaving the loop early cancels the
        jobs still running. timeout: seconds from this call for the whole
        map (TimeoutError)."""
        return self._root()._map(task, iterables, timeout, chunksize, window,
                                 self._options)

    def options(self, **options):
        """A view of this executor whose jobs get these options: kind ("auto",
        "cpu", "io"), executor (None, "process", "thread", "reactor"),
        priority (int, higher first), timeout (seconds), labels (dict),
        idempotency_key (str), delivery ("at_most_once", "at_least_once"),
        payload (bytes); over time: delay (seconds) or not_before (an aware
        datetime or epoch seconds), retries (after the first run), retry_on (reason
        names, e.g. ("TASK_ERROR",)), retry_backoff (seconds),
        start_deadline and total_deadline (seconds); concurrency_key (str),
        callback_url (str), traceparent (str); depends_on (job ids or
        JobFutures: submit waits until each future's job was accepted),
        dependency_policy ("all_succeeded", "all_ended") and
        dependency_results (their results, a list, as the first argument).
        Shares the executor's connection and stream."""
        return _OptionsView(self._root(), self._options.updated(**options))

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._root()._shutdown(wait, cancel_futures)


class _OptionsView(_Base):
    def __init__(self, root, options):
        self._root_ex = root
        self._options = options

    def _root(self):
        return self._root_ex

    def __repr__(self):
        return "<jobd.Executor view %r>" % (self._options,)


class Executor(_Base):
    """A concurrent.futures.Executor backed by a jobd daemon.

    address: any gRPC target ("unix:/path", "host:port"); default
    $JOBD_ADDRESS, else the daemon's default socket (as jobctl). token:
    bearer token (default $JOBD_TOKEN). tls: None, True (system roots) or a
    jobd.TLS. Connects on first use; raises jobd.ConnectionLost if the
    daemon cannot be reached. reconnect_timeout: seconds a broken Submit
    stream's accepted jobs wait for jobd to answer again (a restart), to
    be followed to their ends (0: their futures fail with
    jobd.ConnectionLost at once). keepalive: seconds between pings while
    calls are open, so that a dead connection that sends no reset (a host
    gone, a network cut) is noticed within it plus 10 s (0: none)."""

    def __init__(self, address=None, *, token=None, tls=None,
                 connect_timeout=5.0, reconnect_timeout=30.0, keepalive=20.0):
        self._address, self._metadata, creds, opts = channel_args(
            address, token, tls, keepalive)
        if creds is None:
            self._channel = grpc.insecure_channel(self._address, opts)
        else:
            self._channel = grpc.secure_channel(self._address, creds, opts)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._options = JobOptions()
        self._lock = threading.Lock()
        self._limits = None
        self._session = None
        self._sessions = set()  # sessions with jobs still open
        self._shutdown_flag = False
        self._catalog = TaskCatalog()
        self._maps = set()
        self._cancels = set()  # CancelJob calls under way (_cancel_async)
        self._reattaches = set()  # broken streams' jobs being followed

    def _root(self):
        return self

    def __repr__(self):
        return "<jobd.Executor %s>" % self._address

    @property
    def address(self):
        return self._address

    @property
    def stub(self):
        """The jobd.v1 JobService stub (GetJob, ListJobs, GetStats, ...)."""
        return self._stub

    # ---------------------------------------------------------- connect

    def _connect_locked(self):
        if self._limits is not None:
            return
        try:
            stats = self._stub.GetStats(pb.GetStatsRequest(),
                                        metadata=self._metadata,
                                        timeout=self._connect_timeout,
                                        wait_for_ready=True)
            tasks = self._stub.ListTasks(pb.ListTasksRequest(),
                                         metadata=self._metadata,
                                         timeout=self._connect_timeout)
        except grpc.RpcError as e:
            raise connection_error(e, self._address) from None
        self._catalog.load(tasks)
        self._limits = stats.limits

    def _task_info(self, task):
        # The task's ListTasks entry; the list is reloaded once for a name
        # it does not have (a task registered since), None if still unknown.
        info = self._catalog.get(task) if isinstance(task, str) else None
        if info is None and isinstance(task, str) and task:
            try:
                self._catalog.load(self._stub.ListTasks(
                    pb.ListTasksRequest(), metadata=self._metadata,
                    timeout=self._connect_timeout))
            except grpc.RpcError as e:
                raise connection_error(e, self._address) from None
            info = self._catalog.get(task)
        return info

    def _make_spec(self, task, args, kwargs, options):
        self._catalog.check(task, options.args_to_check(args), kwargs,
                            self._task_info(task))
        spec = pb.JobSpec()
        try:
            build_spec(spec, task, args, kwargs, options)
        except TypeError as e:
            raise JobRejected(str(e), task=task) from None
        return spec

    # ---------------------------------------------------------- submit

    def _submit(self, task, args, kwargs, options):
        with self._lock:
            if self._shutdown_flag:
                raise RuntimeError("cannot schedule new futures after "
                                   "shutdown")
            self._connect_locked()
        for i, d in enumerate(options.depends_on):
            if not isinstance(d, str) and d.job_id is None:
                d._await_accepted(i)
        spec = self._make_spec(task, args, kwargs, options)
        future = JobFuture(self, task)
        for _ in range(2):
            with self._lock:
                if self._shutdown_flag:
                    raise RuntimeError("cannot schedule new futures after "
                                       "shutdown")
                if self._session is None or self._session.broken():
                    self._session = Session(
                        self._stub, self._metadata, self._address,
                        self._limits, self._session_ended,
                        self._reattach if self._reconnect_timeout > 0
                        else None)
                    self._sessions.add(self._session)
                session = self._session
            if session.enqueue(spec, future):
                return future
        raise ConnectionLost("jobd at %s: the Submit stream could not be "
                             "opened" % self._address)

    def _cancel_async(self, job_id):
        # Held until done: gRPC cancels a call whose future is collected.
        # (Waits for jobd to answer, as a re-attachment does.)
        call = self._stub.CancelJob.future(
            pb.CancelJobRequest(job_id=job_id), metadata=self._metadata,
            timeout=max(_CANCEL_RPC_TIMEOUT, self._reconnect_timeout),
            wait_for_ready=True)
        with self._lock:
            self._cancels.add(call)
        call.add_done_callback(self._cancel_done)

    def _cancel_done(self, call):
        with self._lock:
            self._cancels.discard(call)

    def _session_ended(self, session):
        with self._lock:
            self._sessions.discard(session)

    def _reattach(self, futures, broken):
        # (The lock also keeps _reattach_done from running before the add.)
        with self._lock:
            self._reattaches.add(Reattach(
                self._stub, self._metadata, self._address, futures, broken,
                self._reconnect_timeout, self._reattach_done))

    def _reattach_done(self, reattach):
        with self._lock:
            self._reattaches.discard(reattach)

    # ---------------------------------------------------------- map

    def _map(self, task, iterables, timeout, chunksize, window, options):
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._shutdown_flag:
                raise RuntimeError("cannot schedule new futures after "
                                   "shutdown")
            self._connect_locked()
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        self._check_task_name(task)
        stream = MapStream(self, task, iterables, options, chunksize, window,
                           end)
        return stream.results()

    def _check_task_name(self, task):
        if not isinstance(task, str) or not task:
            raise JobRejected("spec.task: missing task name")
        if self._task_info(task) is None:
            raise JobRejected("spec.task: unknown task '%s' (see ListTasks / "
                              "jobctl tasks)" % task, task=task)

    # ---------------------------------------------------------- shutdown

    def _shutdown(self, wait, cancel_futures):
        with self._lock:
            self._shutdown_flag = True
            sessions = list(self._sessions)
            maps = list(self._maps)
        open_ = [f for s in sessions for f in s.open_futures()]
        with self._lock:  # after: a hand-off under way is in one or other
            reattaches = list(self._reattaches)
        open_ += [f for r in reattaches for f in r.futures()]
        if cancel_futures:
            for f in open_:
                if not f._started:
                    f.cancel()
        for s in sessions:
            s.close(when_idle=True)
        if wait:
            cf.wait(open_)
            for s in sessions:
                s.close(timeout=10)
            for m in maps:
                m.close()
            with self._lock:
                cancels = list(self._cancels)
                reattaches = list(self._reattaches)
            for r in reattaches:  # their futures ended: threads winding up
                r.stop()
            for call in cancels:  # each ends within its timeout
                try:
                    call.result()
                except grpc.RpcError:
                    pass
            self._channel.close()
