"""jobd.aio: the asyncio client, on grpc.aio.

    async with jobd.aio.Client() as client:
        job = await client.submit("sleep", 300)    # accepted (or JobRejected)
        print(job.job_id, await job)                # its result
        jobs = [await client.submit("sleep", ms) for ms in (300, 100, 200)]
        async for done in client.as_completed(jobs):
            print(await done)
        async for n in client.map("primes.count", range(100)):
            ...

A Job is an asyncio.Future: asyncio.as_completed, gather, wait and
wait_for take it as it is; job.cancel() also cancels it on jobd, queued or
running. All jobs of a Client share one Submit stream; the specs submitted
while a write is under way go out together in the next message. When the
stream breaks (jobd restarted), the accepted jobs are followed to their
ends once jobd answers again (within reconnect_timeout, as
jobd.Executor's); the others fail with ConnectionLost.

Thread-safety: one event loop; a Client belongs to the loop it was first
used in.
"""

import asyncio
import collections
import itertools

import grpc
from grpc import aio as grpc_aio

from jobd._common import ConnectionLost, JobOptions, JobRejected, \
    TaskCatalog, build_spec, channel_args, connection_error, \
    error_from_event, result_of
from jobd import _reattach
from jobd._map import batch_values, encode_calls
from jobd.v1 import jobd_pb2 as pb
from jobd.v1 import jobd_pb2_grpc as pb_grpc

# Events that end a job; any other kind but ACCEPTED/STARTED/PROGRESS
# (RETRYING, newer ones) is skipped.
_ENDS = frozenset((pb.EVENT_TYPE_SUCCEEDED, pb.EVENT_TYPE_FAILED,
                   pb.EVENT_TYPE_CANCELLED, pb.EVENT_TYPE_REJECTED))


class _ValuesThenRaise:
    """A batch's values before its failed call, then that call's error."""

    def __init__(self, values, error):
        self._values = values
        self._error = error

    def __iter__(self):
        yield from self._values
        raise self._error


class Job(asyncio.Future):
    """One job: await it for its result (JobFailed if it failed,
    asyncio.CancelledError if cancelled, ConnectionLost if the stream
    broke and the job could not be followed again). job_id, task, progress
    ((fraction, message) or None), payload and event (the terminal
    JobEvent) as jobd.JobFuture's."""

    def __init__(self, client, task):
        super().__init__()
        self._client = client
        self.task = task
        self.job_id = None
        self.progress = None
        self.payload = b""
        self.event = None
        self._accepted = asyncio.get_running_loop().create_future()
        self._accept_time = 0  # as JobFuture's (jobd._reattach)
        self._tag = 0  # its client_tag on the stream

    def cancel(self, msg=None):
        """Cancels the job here and on jobd (queued or running)."""
        if self.done():
            return False
        if self.job_id is not None:
            self._client._cancel_remote(self.job_id)
        else:
            self._cancel_on_accept = True
        return super().cancel(msg)

    _cancel_on_accept = False


class Client:
    """address, token, tls, reconnect_timeout, keepalive as jobd.Executor's.
    Connects on first use."""

    def __init__(self, address=None, *, token=None, tls=None,
                 connect_timeout=5.0, reconnect_timeout=30.0, keepalive=20.0,
                 _options=None, _root=None):
        if _root is not None:  # an options view
            self._root = _root
            self._options = _options
            return
        self._root = self
        self._options = JobOptions()
        self._address, self._metadata, self._creds, self._channel_opts = \
            channel_args(address, token, tls, keepalive)
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._channel = None
        self._stub = None
        self._limits = None
        self._catalog = TaskCatalog()
        self._connect_lock = None
        self._call = None
        self._queue = []
        self._wake = None
        self._open = {}  # client_tag -> Job, on the stream
        self._following = set()  # Jobs of broken streams (_follow)
        self._next_tag = 1
        self._tasks = []
        self._closed = False
        self._background = set()
        self._followers = set()  # _follow tasks

    def options(self, **options):
        """A view whose jobs get these options (as Executor.options)."""
        return Client(_root=self._root,
                      _options=self._options.updated(**options))

    async def __aenter__(self):
        await self._root._connect()
        return self

    async def __aexit__(self, *exc):
        await self._root.close()

    @property
    def stub(self):
        return self._root._stub

    # ------------------------------------------------------------ public

    async def submit(self, task, /, *args, **kwargs):
        """Submits a job and waits for jobd to accept it; returns its Job.
        Raises JobRejected (field named) if the spec is refused."""
        job = await self._start(task, args, kwargs)
        await job._accepted
        return job

    async def _task_info(self, task):
        # The task's TaskInfo (the list read again once for a name not in
        # it), or None.
        root = self._root
        await root._connect()
        info = root._catalog.get(task) if isinstance(task, str) else None
        if info is None and isinstance(task, str) and task:
            await root._load_tasks()
            info = root._catalog.get(task)
        return info

    async def _start(self, task, args, kwargs, chunksize=None):
        # Checks and queues the spec; the Job, not waiting for ACCEPTED.
        info = await self._task_info(task)
        self._root._catalog.check(task, self._options.args_to_check(args),
                                  kwargs, info)
        await self._dependencies_accepted()
        spec = pb.JobSpec()
        try:
            build_spec(spec, task, args, kwargs, self._options)
        except TypeError as e:
            raise JobRejected(str(e), task=task) from None
        if chunksize is not None:
            spec.chunksize = chunksize
        return self._enqueue_spec(spec, task)

    async def _start_batch(self, task, calls):
        # A job of many calls (JobSpec.calls: their arguments as JSON),
        # checked by jobd alone (it names the call and field).
        await self._dependencies_accepted()
        spec = pb.JobSpec()
        build_spec(spec, task, (), {}, self._options)
        spec.calls = calls
        return self._enqueue_spec(spec, task)

    async def _dependencies_accepted(self):
        # The ids of the Jobs this view's jobs depend on (spec.depends_on).
        for d in self._options.depends_on:
            if not isinstance(d, str) and d.job_id is None:
                await d._accepted  # Its id (or its rejection, raised).

    def _enqueue_spec(self, spec, task):
        job = Job(self._root, task)
        self._root._enqueue(spec, job)
        return job

    async def as_completed(self, jobs, timeout=None):
        """Yields the jobs as they end (async for); TimeoutError if
        `timeout` seconds pass first."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        pending = set(jobs)
        while pending:
            left = None if end is None else max(0.0, end - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError("as_completed: %d job(s) not done"
                                   % len(pending))
            for job in done:
                yield job

    async def map(self, task, iterable, window=256, chunksize=1):
        """Yields task(item) (a tuple item is spread as arguments) in input
        order, with at most `window` inputs in flight; leaving the loop
        early cancels their jobs. chunksize > 1, as Executor.map's: for a
        task that takes batches (Python tasks), each chunk of `chunksize`
        inputs is one job (JobSpec.calls), its results unpacked here and a
        failed call raised at its place; for another, the process pool
        sends up to `chunksize` jobs to a worker in one frame."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        info = await self._task_info(task)
        if chunksize > 1 and getattr(info, "takes_calls", False):
            async for x in self._map_chunks(task, iterable, window, chunksize):
                yield x
            return
        chunk_hint = chunksize if chunksize > 1 else None
        pending = collections.deque()
        try:
            for item in iterable:
                args = item if isinstance(item, tuple) else (item,)
                pending.append(await self._start(task, args, {}, chunk_hint))
                if len(pending) >= window:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for job in pending:
                job.cancel()

    async def _map_chunks(self, task, iterable, window, chunksize):
        # A job per chunk, (job, inputs) in order; at most `window` inputs
        # (whole chunks, one at least) in flight.
        pending = collections.deque()
        in_flight = 0
        bad = None  # an input that cannot be JSON: raised in its place
        sent = 0
        items = iter(iterable)
        try:
            while bad is None:
                calls = [list(x) if isinstance(x, tuple) else [x]
                         for x in itertools.islice(items, chunksize)]
                if not calls:
                    break
                calls, body, bad = encode_calls(calls, sent, task)
                if calls:
                    pending.append((await self._start_batch(task, body),
                                    len(calls)))
                    in_flight += len(calls)
                    sent += len(calls)
                while pending and in_flight + chunksize > max(window,
                                                              chunksize):
                    job, n = pending.popleft()
                    in_flight -= n
                    for x in await self._batch_results(job):
                        yield x
            while pending:
                job, _ = pending.popleft()
                for x in await self._batch_results(job):
                    yield x
            if bad is not None:
                raise bad
        finally:
            for job, _ in pending:
                job.cancel()

    async def _batch_results(self, job):
        await job  # its value is the batch's: unpacked from its event
        values, error = batch_values(job.event, job.task)
        if error is not None:
            # The calls before the failed one are yielded first.
            return _ValuesThenRaise(values, error)
        return values

    async def get_job(self, job_id, wait=None):
        req = pb.GetJobRequest(job_id=job_id)
        if wait:
            req.wait.FromNanoseconds(int(wait * 1e9))
        await self._root._connect()
        return await self._root._stub.GetJob(req,
                                             metadata=self._root._metadata)

    async def close(self):
        """Ends the stream (jobs go on in jobd) and closes the channel."""
        root = self._root
        root._closed = True
        if root._call is not None:
            root._call.cancel()
        for t in root._tasks + list(root._followers):
            t.cancel()
        if root._tasks or root._followers:
            await asyncio.gather(*root._tasks, *root._followers,
                                 return_exceptions=True)
        root._fail_open(ConnectionLost("jobd.aio.Client closed"),
                        following=True)
        if root._background:  # CancelJob calls under way: let them end
            await asyncio.wait(list(root._background), timeout=10)
        if root._channel is not None:
            await root._channel.close()

    # ------------------------------------------------------------ internals

    async def _connect(self):
        if self._limits is not None:
            return
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._limits is not None:
                return
            if self._creds is None:
                self._channel = grpc_aio.insecure_channel(
                    self._address, self._channel_opts)
            else:
                self._channel = grpc_aio.secure_channel(
                    self._address, self._creds, self._channel_opts)
            self._stub = pb_grpc.JobServiceStub(self._channel)
            try:
                stats = await self._stub.GetStats(
                    pb.GetStatsRequest(), metadata=self._metadata,
                    timeout=self._connect_timeout, wait_for_ready=True)
            except grpc.RpcError as e:
                raise connection_error(e, self._address) from None
            await self._load_tasks()
            self._limits = stats.limits

    async def _load_tasks(self):
        try:
            self._catalog.load(await self._stub.ListTasks(
                pb.ListTasksRequest(), metadata=self._metadata,
                timeout=self._connect_timeout))
        except grpc.RpcError as e:
            raise connection_error(e, self._address) from None

    def _enqueue(self, spec, job):
        if self._closed:
            raise RuntimeError("jobd.aio.Client is closed")
        if self._call is None:
            self._open_stream()
        tag = self._next_tag
        self._next_tag += 1
        self._open[tag] = job
        job._tag = tag
        self._queue.append(pb.SubmitItem(client_tag=tag, spec=spec))
        self._wake.set()

    def _open_stream(self):
        self._call = self._stub.Submit(metadata=self._metadata)
        self._wake = asyncio.Event()
        call = self._call
        self._tasks = [asyncio.ensure_future(self._write(call)),
                       asyncio.ensure_future(self._read(call))]

    async def _write(self, call):
        try:
            await call.write(pb.SubmitRequest(options=pb.SubmitOptions(
                order=pb.ORDER_COMPLETION,
                window=self._limits.max_window or 0)))
            max_batch = self._limits.max_jobs_per_request or 1024
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    batch = self._queue[:max_batch]
                    del self._queue[:max_batch]
                    req = pb.SubmitRequest()
                    req.items.extend(batch)
                    await call.write(req)
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the reader reports the stream's end

    async def _read(self, call):
        error = None
        try:
            async for response in call:
                for ev in response.events:
                    self._dispatch(ev)
        except asyncio.CancelledError:
            error = ConnectionLost("jobd.aio.Client closed")
        except grpc.RpcError as e:
            error = connection_error(e, self._address)
            if e.code() == grpc.StatusCode.UNAVAILABLE and \
                    self._reconnect_timeout > 0 and not self._closed:
                accepted = [j for j in self._open.values()
                            if j.job_id is not None]
                for j in accepted:
                    del self._open[j._tag]
                if accepted:
                    self._start_following(accepted, error)
        if error is None:
            error = ConnectionLost("jobd at %s ended the Submit stream"
                                   % self._address)
        if self._call is call:
            self._call = None
            for t in self._tasks:
                if t is not asyncio.current_task():
                    t.cancel()
            self._queue.clear()
        self._fail_open(error)

    def _fail_open(self, error, following=False):
        # The jobs on the stream, and with `following` those of broken
        # streams too (close).
        jobs = list(self._open.values())
        self._open = {}
        if following:
            jobs += self._following
            self._following = set()
        for job in jobs:
            exc = ConnectionLost(str(error), code=getattr(error, "code", None),
                                 job_id=job.job_id)
            if not job._accepted.done():
                job._accepted.set_exception(exc)
            if not job.done():
                job.set_exception(exc)

    def _dispatch(self, ev):
        job = self._open.get(ev.client_tag)
        if job is None:
            return
        if ev.type in _ENDS:
            del self._open[ev.client_tag]
        self._apply(job, ev)

    def _apply(self, job, ev):
        # Job `job` gets its event `ev` (the caller dropped it from its
        # table if it is an end).
        t = ev.type
        if t == pb.EVENT_TYPE_ACCEPTED:
            job._accept_time = ev.time.ToNanoseconds()
            job.job_id = ev.job_id
            if not job._accepted.done():
                job._accepted.set_result(None)
            if job._cancel_on_accept:
                self._cancel_remote(ev.job_id)
            return
        if t == pb.EVENT_TYPE_STARTED:
            return
        if t == pb.EVENT_TYPE_PROGRESS:
            job.progress = (ev.progress.fraction, ev.progress.message)
            return
        if t not in _ENDS:
            return  # RETRYING, or newer kinds: the job goes on.
        job.event = ev
        if ev.job_id:
            job.job_id = ev.job_id
        if t == pb.EVENT_TYPE_REJECTED:
            err = error_from_event(ev, job.task)
            if not job._accepted.done():
                job._accepted.set_exception(err)
            if not job.done():
                job.set_exception(err)
                # Marked retrieved: submit raises it (map awaits the job).
            job._accepted.exception()
            job.exception()
            return
        if not job._accepted.done():
            job._accepted.set_result(None)
        if job.done():
            return
        if t == pb.EVENT_TYPE_SUCCEEDED:
            job.payload = ev.result.payload
            job.set_result(result_of(ev))
        elif t == pb.EVENT_TYPE_CANCELLED:
            asyncio.Future.cancel(job, ev.error.message)
        else:
            job.set_exception(error_from_event(ev, job.task))

    def _cancel_remote(self, job_id):
        async def go():
            try:
                # (Waits for jobd to answer: a followed job's cancel may
                # come while jobd restarts.)
                await self._stub.CancelJob(
                    pb.CancelJobRequest(job_id=job_id),
                    metadata=self._metadata,
                    timeout=max(10, self._reconnect_timeout),
                    wait_for_ready=True)
            except grpc.RpcError:
                pass

        t = asyncio.ensure_future(go())
        self._background.add(t)
        t.add_done_callback(self._background.discard)


    # ------------------------------------------------------------ re-attach

    def _start_following(self, jobs, broken):
        self._following.update(jobs)
        t = asyncio.ensure_future(self._follow(jobs, broken))
        self._followers.add(t)
        t.add_done_callback(self._followers.discard)

    async def _follow(self, jobs, broken):
        """Follows the accepted jobs of a broken stream to their ends: the
        steps of jobd._reattach (GetJob each job once jobd answers again
        within reconnect_timeout; then one WatchJobs of those still going;
        again while the watch breaks), on this loop."""
        pending = {}  # job id -> [Job], not ended
        for j in jobs:
            pending.setdefault(j.job_id, []).append(j)

        def fail(job, error):
            jobs_of_id = pending.get(job.job_id, [])
            if job in jobs_of_id:
                jobs_of_id.remove(job)
            if not jobs_of_id:
                pending.pop(job.job_id, None)
            self._following.discard(job)
            if not job.done():
                job.set_exception(ConnectionLost(
                    str(error), code=getattr(error, "code", None),
                    job_id=job.job_id))

        def fail_all(error):
            for job in [j for js in list(pending.values()) for j in js]:
                fail(job, error)

        def apply(ev):
            jobs_of_id = pending.get(ev.job_id)
            if jobs_of_id is None:
                return
            if ev.type in _reattach.END_EVENTS:
                del pending[ev.job_id]
                self._following.difference_update(jobs_of_id)
            elif ev.type not in _reattach.STEP_EVENTS:
                return
            for job in jobs_of_id:
                self._apply(job, ev)

        try:
            await self._follow_rounds(pending, broken, fail, fail_all, apply)
        except Exception as e:  # noqa: BLE001 - reported to every job
            fail_all(connection_error(e, self._address))

    async def _follow_rounds(self, pending, broken, fail, fail_all, apply):
        pause = 0.0  # before the next round: grows while watches fail
        while pending and not self._closed:
            if pause:
                await asyncio.sleep(pause)
            if not await self._check_followed(pending, broken, fail, apply):
                fail_all(_reattach.unreachable(broken,
                                               self._reconnect_timeout))
                return
            if not pending:
                return
            call = self._stub.WatchJobs(_reattach.watch_request(pending),
                                        metadata=self._metadata)
            before = len(pending)
            try:
                async for response in call:
                    for ev in response.events:
                        apply(ev)
            except grpc.RpcError as e:
                if e.code() not in _reattach.ROUND_AGAIN:
                    fail_all(connection_error(e, self._address))
                    return
                broken = connection_error(e, self._address)
            finally:
                call.cancel()
            # No job ended: wait longer before the next round.
            pause = 0.0 if len(pending) < before else \
                min(max(pause * 2, _reattach.BACKOFF_FIRST),
                    _reattach.BACKOFF_MAX)

    async def _check_followed(self, pending, broken, fail, apply):
        # GetJob for every pending job (jobd._reattach's check); False if
        # jobd did not answer within reconnect_timeout (counted afresh at
        # each answer).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_timeout
        backoff = _reattach.BACKOFF_FIRST
        todo = list(pending)
        while todo:
            left = deadline - loop.time()
            if left <= 0:
                return False
            batch = todo[:_reattach.CHECKS_IN_FLIGHT]
            todo = todo[_reattach.CHECKS_IN_FLIGHT:]
            answers = await asyncio.gather(
                *(self._stub.GetJob(pb.GetJobRequest(job_id=job_id),
                                    metadata=self._metadata, timeout=left,
                                    wait_for_ready=True)
                  for job_id in batch), return_exceptions=True)
            retry = []
            for job_id, answer in zip(batch, answers):
                jobs = list(pending.get(job_id, ()))
                if not jobs:
                    continue  # ended meanwhile
                if not _reattach.settle(answer, jobs, broken, self._address,
                                        fail, apply):
                    retry.append(job_id)
                    continue
                deadline = loop.time() + self._reconnect_timeout  # answered
            if retry:
                if loop.time() + backoff > deadline:
                    return False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _reattach.BACKOFF_MAX)
                todo = retry + todo
        return True
