"""Following the accepted jobs of a broken Submit stream to their ends
(jobd.Executor's futures here; jobd.aio's jobs take the same steps on
their loop, with the helpers below).

A Submit stream breaks (UNAVAILABLE) when jobd restarts or the connection
drops, but the jobs jobd had accepted go on: a durable job survives a
restart (README: Durability). So their futures do not fail: a Reattach
thread waits, up to the executor's reconnect_timeout, for jobd to answer
again, then

- asks for each job (GetJob). An id jobd no longer knows (an in-memory
  job, or one forgotten since), or one that names a job created after the
  one the future was accepted as (a daemon restarted without its journal
  numbers its jobs afresh), fails its future with ConnectionLost; a job
  that ended meanwhile ends its future;
- follows the others over one WatchJobs stream of those ids (live events:
  jobd delivers a watched job's end exactly once, also when it ended
  between the GetJob and the watch).

A watch that breaks again (jobd went away, or ended it) starts another
round, with a new wait; rounds that follow a watch that delivered nothing
in which no job ended wait a growing pause first (so a watch refused again
and again becomes a GetJob poll, never a busy loop). Several futures of one job (a duplicate
by idempotency key) are all followed.

Thread-safety: each Reattach runs on its own thread and is the only
writer of its futures' state (futures' callbacks run there, never under
its lock); cancel() on a followed future cancels it here at once and on
jobd once it answers (jobd.Executor). Ownership: the executor keeps the
Reattach until it finished (shutdown waits for its futures).
"""

import threading
import time

import grpc

from jobd._common import ConnectionLost, connection_error
from jobd._session import apply_event
from jobd.v1 import jobd_pb2 as pb

# First pause between attempts to reach jobd again, and the longest.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
# GetJob calls in flight at once while checking the futures' jobs.
CHECKS_IN_FLIGHT = 64

_END_OF_STATE = {
    pb.JOB_STATE_SUCCEEDED: pb.EVENT_TYPE_SUCCEEDED,
    pb.JOB_STATE_FAILED: pb.EVENT_TYPE_FAILED,
    pb.JOB_STATE_CANCELLED: pb.EVENT_TYPE_CANCELLED,
}
END_EVENTS = frozenset(_END_OF_STATE.values())
# The steps a re-attached future follows (ACCEPTED not again: it has its
# id); other kinds (RETRYING, newer ones) are skipped.
STEP_EVENTS = frozenset((pb.EVENT_TYPE_STARTED, pb.EVENT_TYPE_PROGRESS))
# Watch errors after which another round follows (jobd went away again,
# forgot a job since its check, or ended a watch that fell behind); any
# other fails the futures.
ROUND_AGAIN = frozenset((grpc.StatusCode.UNAVAILABLE,
                         grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.RESOURCE_EXHAUSTED))


def watch_request(job_ids):
    """The WatchJobs request that follows these jobs' live events and ends
    (no replay: GetJob told how each stood)."""
    return pb.WatchJobsRequest(job_ids=sorted(job_ids),
                               include_progress=True)


def end_event_of(job):
    """The terminal JobEvent of an ended pb.Job, None if it has not ended."""
    t = _END_OF_STATE.get(job.state)
    if t is None:
        return None
    ev = pb.JobEvent(sequence=job.last_sequence, job_id=job.id, type=t,
                     executor=job.executor)
    ev.time.CopyFrom(job.finish_time)
    if t == pb.EVENT_TYPE_SUCCEEDED:
        ev.result.CopyFrom(job.result)
    else:
        ev.error.CopyFrom(job.error)
    return ev


# How far another node's clock may run ahead (judge).
_CLOCK_SLACK_NS = 1_000_000_000

# What judge() says of a future after its job's GetJob.
RETRY, FAIL, END, WATCH = "retry", "fail", "end", "watch"


def judge(answer, f, broken, address):
    """(verdict, what) for the future f, from its job's GetJob `answer` (a
    pb.Job or the grpc.RpcError): RETRY (jobd did not answer), FAIL with
    the ConnectionLost to fail it with, END with the terminal JobEvent, or
    WATCH (its job goes on; a running one marks f started). `broken`: the
    ConnectionLost of the stream."""
    if isinstance(answer, grpc.RpcError):
        code = answer.code()
        if code in (grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED):
            return RETRY, None
        if code == grpc.StatusCode.NOT_FOUND:
            return FAIL, ConnectionLost(
                "%s; after reconnecting, jobd no longer knows job %s (an "
                "in-memory job lost in a restart, or one forgotten since)"
                % (broken, f.job_id), code=code, job_id=f.job_id)
        return FAIL, connection_error(answer, address)
    if not isinstance(answer, pb.Job):  # a call that ended otherwise
        return FAIL, connection_error(answer, address)
    # Created after the future's acceptance: another job under a reused id
    # (the daemon lost its journal). In a cluster ("N@node") the job may be
    # another node's, whose clock may be a little ahead.
    slack = _CLOCK_SLACK_NS if "@" in f.job_id else 0
    if answer.create_time.ToNanoseconds() > f._accept_time + slack:
        return FAIL, ConnectionLost(
            "%s; after reconnecting, job id %s names another job (jobd "
            "restarted without its journal): this job is lost"
            % (broken, f.job_id), job_id=f.job_id)
    ev = end_event_of(answer)
    if ev is not None and ev.result.dropped:
        return FAIL, ConnectionLost(
            "%s; job %s succeeded meanwhile, but its result is larger than "
            "jobd retains (max-retained-result-bytes)" % (broken, f.job_id),
            job_id=f.job_id)
    if ev is not None:
        ev.job_id = f.job_id  # as the future knows it
        return END, ev
    if answer.state == pb.JOB_STATE_RUNNING:
        f._started = True
    return WATCH, None


def settle(answer, futures, broken, address, fail, end):
    """Gives one job's futures its GetJob `answer` (judge): fail(f, error)
    for each to fail, end(event) once if the job ended (it ends them all).
    False if jobd did not answer: that job is checked again."""
    for f in futures:
        verdict, what = judge(answer, f, broken, address)
        if verdict == RETRY:
            return False
        if verdict == FAIL:
            fail(f, what)
        elif verdict == END:
            end(what)
            break
    return True


def unreachable(broken, timeout):
    """The ConnectionLost of futures whose jobd did not come back."""
    return ConnectionLost(
        "%s; jobd did not answer again within %gs (reconnect_timeout)"
        % (broken, timeout), code=broken.code)


class _Unreachable(Exception):
    """jobd did not answer (UNAVAILABLE, or the round's deadline passed)."""


class Reattach:
    def __init__(self, stub, metadata, address, futures, broken, timeout,
                 on_done):
        self._stub = stub
        self._metadata = metadata
        self._address = address
        self._timeout = timeout
        self._broken = broken  # the ConnectionLost that broke the stream
        self._on_done = on_done
        self._lock = threading.Lock()
        self._pending = {}  # job id -> [future], not ended
        for f in futures:
            self._pending.setdefault(f.job_id, []).append(f)
        self._calls = set()  # GetJob calls and the watch under way
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="jobd-reattach")
        self._thread.start()

    def futures(self):
        with self._lock:
            return [f for fs in self._pending.values() for f in fs]

    def stop(self):
        """Ends the reattachment now (the executor's channel is closing):
        the futures still open fail with the stream's ConnectionLost."""
        with self._lock:
            self._stopped = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    # ------------------------------------------------------------ thread

    def _run(self):
        try:
            self._rounds()
        except Exception as e:  # noqa: BLE001 - reported to every future
            self._fail_all(connection_error(e, self._address))
        self._fail_all(self._broken)  # stopped: what is left
        self._on_done(self)

    def _rounds(self):
        pause = 0.0  # before the next round: grows while watches fail
        while True:
            if pause:
                time.sleep(pause)
            try:
                self._check_jobs()
            except _Unreachable:
                self._fail_all(unreachable(self._broken, self._timeout))
                return
            with self._lock:
                if self._stopped or not self._pending:
                    return
                watch = self._stub.WatchJobs(
                    watch_request(self._pending), metadata=self._metadata)
                self._calls.add(watch)
                before = len(self._pending)
            try:
                for response in watch:
                    for ev in response.events:
                        self._apply(ev)
                error = None
            except grpc.RpcError as e:
                error = e
            finally:
                with self._lock:
                    self._calls.discard(watch)
            if self._stopped:
                return
            if error is not None and error.code() not in ROUND_AGAIN:
                self._fail_all(connection_error(error, self._address))
                return
            if error is not None:
                self._broken = connection_error(error, self._address)
            # (A watch that ended OK ended with its jobs: any left is
            # checked again.) No job ended: wait longer before the next.
            with self._lock:
                progressed = len(self._pending) < before
            pause = 0.0 if progressed else \
                min(max(pause * 2, BACKOFF_FIRST), BACKOFF_MAX)

    def _check_jobs(self):
        """GetJob for every pending job: ends the futures whose jobs ended,
        fails those jobd no longer has. _Unreachable if jobd does not answer
        within the timeout (counted afresh at each answer)."""
        deadline = time.monotonic() + self._timeout
        backoff = BACKOFF_FIRST
        with self._lock:
            todo = list(self._pending)
        while todo and not self._stopped:
            batch, todo = todo[:CHECKS_IN_FLIGHT], todo[CHECKS_IN_FLIGHT:]
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Unreachable()
            calls = []
            with self._lock:
                for job_id in batch:
                    call = self._stub.GetJob.future(
                        pb.GetJobRequest(job_id=job_id),
                        metadata=self._metadata, timeout=left,
                        wait_for_ready=True)
                    self._calls.add(call)
                    calls.append((job_id, call))
            retry = []
            for job_id, call in calls:
                try:
                    answer = call.result()
                except grpc.RpcError as e:
                    answer = e
                except Exception as e:  # noqa: BLE001 - cancelled (stop)
                    answer = e
                with self._lock:
                    self._calls.discard(call)
                    futures = list(self._pending.get(job_id, ()))
                if not futures:
                    continue  # ended meanwhile
                if not settle(answer, futures, self._broken, self._address,
                              self._fail, self._apply):
                    retry.append(job_id)
                    continue
                deadline = time.monotonic() + self._timeout  # answered
            if retry:
                if time.monotonic() + backoff > deadline:
                    raise _Unreachable()
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                todo = retry + todo

    # ------------------------------------------------------------ futures

    def _apply(self, ev):
        with self._lock:
            futures = self._pending.get(ev.job_id)
            if futures is None:
                return
            if ev.type in END_EVENTS:
                del self._pending[ev.job_id]
            elif ev.type not in STEP_EVENTS:
                return  # RETRYING, or newer kinds: not an end
            futures = list(futures)
        for f in futures:
            apply_event(f, ev)

    def _fail(self, f, error):
        with self._lock:
            futures = self._pending.get(f.job_id, [])
            if f in futures:
                futures.remove(f)
            if not futures:
                self._pending.pop(f.job_id, None)
        f._fail_connection(error)

    def _fail_all(self, error):
        with self._lock:
            left = [f for fs in self._pending.values() for f in fs]
            self._pending.clear()
        for f in left:
            f._fail_connection(error)
