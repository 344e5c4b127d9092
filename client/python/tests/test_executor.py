"""jobd.Executor against a real daemon, used through concurrent.futures."""

import concurrent.futures as cf
import datetime
import itertools
import os
import threading
import time

import grpc
import pytest

import jobd
from jobd.v1 import jobd_pb2 as pb

T = 10  # seconds: the bound of every wait below


@pytest.fixture
def ex(daemon):
    e = jobd.Executor(daemon.address)
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def job_state(ex, future):
    return ex.stub.GetJob(pb.GetJobRequest(job_id=future.job_id),
                          timeout=T).state


def wait_until(pred, timeout=T):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_submit_returns_a_real_future(ex):
    f = ex.submit("echo", "hello")
    assert isinstance(f, cf.Future)
    assert f.result(timeout=T) == "hello"
    assert f.done() and not f.cancelled() and f.exception(T) is None
    assert f.job_id


def test_results_convert_json_values(ex):
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert ex.submit("echo", value).result(T) == value


def test_as_completed_yields_in_completion_order(ex):
    fs = {ex.submit("sleep", ms): ms for ms in (600, 100, 350)}
    order = [fs[f] for f in cf.as_completed(fs, timeout=T)]
    assert order == [100, 350, 600]


def test_wait_first_completed(ex):
    slow = ex.submit("sleep", 5000)
    fast = ex.submit("sleep", 50)
    done, not_done = cf.wait([slow, fast], timeout=T,
                             return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    assert slow.cancel()


def test_wait_first_exception(ex):
    slow = ex.submit("sleep", 5000)
    ok = ex.submit("echo", 1)
    bad = ex.submit("fail", "boom")
    done, not_done = cf.wait([slow, ok, bad], timeout=T,
                             return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    assert slow.cancel()


def test_wait_all_completed(ex):
    fs = [ex.submit("sleep", ms) for ms in (10, 20, 30)]
    done, not_done = cf.wait(fs, timeout=T, return_when=cf.ALL_COMPLETED)
    assert done == set(fs) and not not_done


def test_wait_times_out(ex):
    f = ex.submit("sleep", 5000)
    t0 = time.monotonic()
    done, not_done = cf.wait([f], timeout=0.2)
    assert not done and not_done == {f}
    assert time.monotonic() - t0 < 2
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.1)
    assert f.cancel()


def test_done_callbacks_before_and_after_completion(ex):
    seen = []
    ended = threading.Event()
    f = ex.submit("sleep", 100)
    f.add_done_callback(lambda g: (seen.append(("before", g.result())),
                                   ended.set()))
    assert ended.wait(T)
    f.add_done_callback(lambda g: seen.append(("after", g.result())))
    assert seen == [("before", 100), ("after", 100)]  # after: at once


def test_failed_job_raises_jobfailed(ex):
    f = ex.submit("fail", "disk on fire")
    err = f.exception(timeout=T)
    assert isinstance(err, jobd.JobFailed)
    assert err.reason == "TASK_ERROR" and "disk on fire" in err.message
    assert isinstance(err.code, grpc.StatusCode)
    assert err.job_id == f.job_id and err.task == "fail"
    assert err.remote_type is None and err.remote_traceback is None
    with pytest.raises(jobd.JobFailed):
        f.result(T)


def test_job_timeout_option(ex):
    f = ex.options(timeout=0.2).submit("sleep", 5000)
    err = f.exception(timeout=T)
    assert isinstance(err, jobd.JobFailed) and err.reason == "TIMEOUT"


def test_cancel_running_job(ex):
    f = ex.submit("sleep", 30000)
    wait_until(f.running)
    t0 = time.monotonic()
    assert f.cancel()
    assert f.cancelled() and f.done()
    assert time.monotonic() - t0 < 2
    with pytest.raises(cf.CancelledError):
        f.result(T)
    assert job_state(ex, f) == pb.JOB_STATE_CANCELLED
    assert not f.cancel() or f.cancelled()


def test_cancel_queued_job(own_daemon):
    d = own_daemon("--thread-workers", "1")
    with jobd.Executor(d.address) as ex:
        on_thread = ex.options(executor="thread")
        first = on_thread.submit("sleep", 30000)
        queued = on_thread.submit("sleep", 30000)
        wait_until(lambda: first.running() and queued.job_id)
        assert not queued.running()
        assert job_state(ex, queued) == pb.JOB_STATE_QUEUED
        assert queued.cancel()
        assert job_state(ex, queued) == pb.JOB_STATE_CANCELLED
        assert first.cancel()


def test_cancel_after_end_is_false(ex):
    f = ex.submit("echo", 1)
    f.result(T)
    assert not f.cancel()


def test_map_yields_in_submission_order(ex):
    assert list(ex.map("echo", range(2000))) == list(range(2000))
    # Later inputs end first; results still come in input order.
    assert list(ex.map("sleep", [300, 200, 100, 0], timeout=T)) == \
        [300, 200, 100, 0]


def test_map_several_iterables(ex):
    assert list(ex.map("echo", "abc", [1, 2, 3])) == \
        [["a", 1], ["b", 2], ["c", 3]]


def test_map_is_lazy_with_a_bounded_window(ex):
    taken = itertools.count()
    consumed = [0]

    def inputs():
        for i in range(10_000_000):
            consumed[0] = next(taken) + 1
            yield i

    results = ex.map("echo", inputs(), window=100)
    for taken_results in (250, 1000):
        got = list(itertools.islice(results, taken_results - (
            0 if taken_results == 250 else 250)))
        assert got[0] == (0 if taken_results == 250 else 250)
        # A runaway writer would read far ahead meanwhile (nothing to await:
        # this checks that something does not happen).
        time.sleep(0.2)
        # The writer stays within `window` of the results consumed.
        assert taken_results <= consumed[0] <= taken_results + 100
    results.close()


def test_map_chunksize_matches_local_count(ex):
    def count(n):
        return sum(1 for k in range(2, n)
                   if all(k % d for d in range(2, int(k ** .5) + 1)))

    ns = list(range(0, 3000, 37))
    got = list(ex.options(kind="cpu").map("primes.count", ns, chunksize=8,
                                          timeout=T))
    assert got == [count(n) for n in ns]


def test_map_timeout(ex):
    it = ex.map("sleep", [5000], timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        next(it)
    assert time.monotonic() - t0 < 3


def test_map_raises_at_the_failed_item(ex):
    it = ex.map("sleep", [10, "x", 30])
    assert next(it) == 10
    with pytest.raises(jobd.JobRejected) as e:
        next(it)
    assert e.value.field == "spec.args[0] (ms)"


def test_map_raises_jobfailed(ex):
    it = ex.map("fail", ["a"], timeout=T)
    with pytest.raises(jobd.JobFailed):
        next(it)


def test_rejected_spec_raises_at_submit_naming_the_field(ex):
    cases = [
        (("nope",), {}, "spec.task"),
        (("sleep", "x"), {}, "spec.args[0] (ms)"),
        (("sleep",), {}, "spec.args[0] / spec.kwargs.ms"),
        (("sleep", 1), {"bogus": 1}, "spec.kwargs.bogus"),
        (("sleep", 1, 2), {}, "spec.args"),
        (("echo", object()), {}, "spec.args[0]"),
    ]
    for args, kwargs, field in cases:
        with pytest.raises(jobd.JobRejected) as e:
            ex.submit(*args, **kwargs)
        assert e.value.field == field, e.value
    with pytest.raises(jobd.JobRejected) as e:
        ex.options(kind="gpu")
    assert e.value.field == "spec.kind"
    with pytest.raises(TypeError):
        ex.options(colour="red")


def test_rejection_only_jobd_knows_fails_the_future(ex):
    f = ex.submit("http.get", "ftp://example.invalid/")
    err = f.exception(timeout=T)
    assert isinstance(err, jobd.JobRejected) and err.field


def test_options_never_collide_with_task_kwargs(ex):
    view = ex.options(priority=5, labels={"team": "ml"}, kind="io")
    out = view.submit("echo", 1, timeout=3, priority="x").result(T)
    assert out == {"args": [1], "kwargs": {"timeout": 3, "priority": "x"}}
    f = view.submit("echo", 2)
    f.result(T)
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id), timeout=T)
    assert job.spec.priority == 5 and job.spec.labels["team"] == "ml"
    assert job.spec.kind == pb.JOB_KIND_IO_BOUND


def test_jobs_over_time_options_reach_the_daemon(ex):
    # A delayed job waits (listed WAITING) and can be cancelled there.
    later = ex.options(delay=3600).submit("echo", 1)
    wait_until(lambda: later.job_id is not None)
    wait_until(lambda: job_state(ex, later) == pb.JOB_STATE_WAITING)
    assert later.cancel() or later.cancelled()
    wait_until(lambda: job_state(ex, later) == pb.JOB_STATE_CANCELLED)
    at = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(hours=1)
    pinned = ex.options(not_before=at).submit("echo", 1)
    wait_until(lambda: pinned.job_id is not None)
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=pinned.job_id), timeout=T)
    assert job.state == pb.JOB_STATE_WAITING
    assert abs(job.spec.not_before.ToDatetime(datetime.timezone.utc) -
               at) < datetime.timedelta(milliseconds=1)
    pinned.cancel()
    # Retries: three runs of a task that always fails, then the failure.
    flaky = ex.options(retries=2, retry_on="TASK_ERROR", retry_backoff=0.001)
    f = flaky.submit("fail")
    with pytest.raises(jobd.JobFailed):
        f.result(T)
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id), timeout=T)
    assert job.attempts == 3 and len(job.history) == 3  # every attempt
    assert list(job.spec.retry.retry_on) == [pb.ERROR_REASON_TASK_ERROR]
    # Deadlines, key, trace context: on the spec as asked.
    g = ex.options(start_deadline=30, total_deadline=60, concurrency_key="db",
                   traceparent="00-0af7651916cd43dd8448eb211c80319c-"
                               "b7ad6b7169203331-01").submit("echo", 2)
    assert g.result(T) == 2
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=g.job_id), timeout=T)
    assert job.spec.start_deadline.seconds == 30
    assert job.spec.total_deadline.seconds == 60
    assert job.spec.concurrency_key == "db"
    assert job.traceparent.startswith("00-0af7651916cd43dd")


def test_dependencies_by_future_or_id_pass_their_results(ex):
    # A group, then one job with their results (a chord), by futures still
    # queued, and by id.
    parts = [ex.submit("sleep", ms) for ms in (300, 100)]
    merged = ex.options(depends_on=parts, dependency_results=True).submit(
        "echo", "sum")
    assert merged.result(T) == [[300, 100], "sum"]
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=merged.job_id), timeout=T)
    assert list(job.spec.depends_on) == [f.job_id for f in parts]
    assert job.start_time.ToNanoseconds() >= max(
        ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id),
                       timeout=T).finish_time.ToNanoseconds() for f in parts)
    failed = ex.submit("fail")
    after = ex.options(depends_on=[failed, parts[0].job_id]).submit("echo", 1)
    with pytest.raises(jobd.JobFailed) as err:
        after.result(T)
    assert err.value.reason == "DEPENDENCY_FAILED"
    anyway = ex.options(depends_on=failed, dependency_policy="all_ended",
                        dependency_results=True).submit("echo")
    assert anyway.result(T) == [None]
    # A cancelled dependency: refused at once if it never got an id, or
    # the dependant is cancelled with it; never the 60 s wait for an id.
    gone = ex.submit("sleep", 5000)
    gone.cancel()
    started = time.monotonic()
    try:
        dependant = ex.options(depends_on=gone).submit("echo")
        with pytest.raises(cf.CancelledError):
            dependant.result(T)
    except jobd.JobRejected as e:
        assert "spec.depends_on[0]" in str(e)
    assert time.monotonic() - started < T
    # The results come first: a task taking ints cannot take them.
    with pytest.raises(jobd.JobRejected) as err:
        ex.options(depends_on=parts, dependency_results=True).submit(
            "sleep", 1)
    assert "spec.args" in str(err.value)


@pytest.mark.parametrize("options, field", [
    ({"depends_on": [3.5]}, "spec.depends_on[0]"),
    ({"dependency_policy": "any"}, "spec.dependency_policy"),
    ({"dependency_results": True}, "spec.dependency_results"),
    ({"delay": -1}, "spec.delay"),
    ({"delay": 1, "not_before": 5.0}, "spec.delay"),
    ({"not_before": datetime.datetime(2030, 1, 1)}, "spec.not_before"),
    ({"retries": -1}, "spec.retry.max_attempts"),
    ({"retry_on": ["NOPE"]}, "spec.retry.retry_on[0]"),
    ({"retry_backoff": float("nan")}, "spec.retry.initial_backoff"),
    ({"concurrency_key": 7}, "spec.concurrency_key"),
])
def test_bad_over_time_options_name_the_field(ex, options, field):
    with pytest.raises(jobd.JobRejected) as err:
        ex.options(**options)
    assert field in str(err.value)


def test_a_key_the_daemon_refuses_names_the_field(ex):
    with pytest.raises(jobd.JobRejected) as err:
        ex.options(concurrency_key="x" * 200).submit("echo", 1).result(T)
    assert "spec.concurrency_key" in str(err.value)


def test_idempotency_key_returns_the_same_job(ex):
    view = ex.options(idempotency_key="py-idem-1")
    a = view.submit("echo", 1)
    a.result(T)
    b = view.submit("echo", 1)
    b.result(T)
    assert a.job_id == b.job_id


def test_futures_share_one_stream(ex):
    fs = [ex.submit("echo", i) for i in range(3000)]
    assert [f.result(T) for f in fs] == list(range(3000))
    assert len(ex._sessions) <= 1 and ex._session is not None


def test_shutdown_waits_and_refuses_new_work(daemon):
    ex = jobd.Executor(daemon.address)
    fs = [ex.submit("sleep", 200) for _ in range(5)]
    ex.shutdown(wait=True)
    assert all(f.done() and f.result() == 200 for f in fs)
    with pytest.raises(RuntimeError):
        ex.submit("echo", 1)


def test_context_manager_waits(daemon):
    with jobd.Executor(daemon.address) as ex:
        f = ex.submit("sleep", 200)
    assert f.done() and f.result() == 200


def test_shutdown_cancel_futures_cancels_queued_only(own_daemon):
    d = own_daemon("--thread-workers", "1")
    ex = jobd.Executor(d.address)
    on_thread = ex.options(executor="thread")
    running = on_thread.submit("sleep", 500)
    queued = [on_thread.submit("sleep", 30000) for _ in range(3)]
    wait_until(lambda: running.running() and all(q.job_id for q in queued))
    t0 = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < 5
    assert running.result(0) == 500
    assert all(q.cancelled() for q in queued)


def test_default_address_from_environment(daemon, monkeypatch):
    monkeypatch.setenv("JOBD_ADDRESS", daemon.address)
    assert jobd.default_address() == daemon.address
    with jobd.Executor() as ex:
        assert ex.submit("echo", 7).result(T) == 7


def test_unreachable_daemon_raises_connection_lost(tmp_path):
    ex = jobd.Executor("unix:%s/none.sock" % tmp_path, connect_timeout=0.5)
    with pytest.raises(jobd.ConnectionLost):
        ex.submit("echo", 1)


def test_daemon_killed_fails_pending_futures_promptly(own_daemon):
    d = own_daemon()
    ex = jobd.Executor(d.address, reconnect_timeout=0)
    fs = [ex.submit("sleep", 30000) for _ in range(5)]
    wait_until(lambda: all(f.running() for f in fs))
    it = ex.map("sleep", [30000, 30000])
    t0 = time.monotonic()
    d.kill()
    done, not_done = cf.wait(fs, timeout=5)
    assert not not_done and time.monotonic() - t0 < 5
    for f in fs:
        assert isinstance(f.exception(), jobd.ConnectionLost)
    with pytest.raises(jobd.ConnectionLost):
        next(it)
    ex.shutdown(wait=False)


def test_futures_follow_their_jobs_across_a_daemon_restart(own_daemon):
    d = own_daemon("--thread-workers", "2", durability="batched")
    ex = jobd.Executor(d.address)
    on_thread = ex.options(executor="thread")
    # At most once (the default): it was running, so it fails, never twice.
    lost = on_thread.submit("sleep", 30000)
    # At least once: it runs again after the restart.
    again = on_thread.options(delivery="at_least_once").submit("sleep", 4000)
    queued = [on_thread.submit("echo", i) for i in range(5)]
    # Two futures of one job (the second a duplicate by its key).
    twins = [on_thread.options(idempotency_key="twin").submit("echo", "t")
             for _ in range(2)]
    wait_until(lambda: lost.running() and again.running()
               and all(q.job_id for q in queued + twins))
    assert twins[0].job_id == twins[1].job_id
    ids = [f.job_id for f in [lost, again] + queued]
    d.kill()  # -9: the Submit stream breaks
    d.restart()
    assert [q.result(T) for q in queued] == list(range(5))
    assert [t.result(T) for t in twins] == ["t", "t"]
    assert again.result(T) == 4000
    with pytest.raises(jobd.JobFailed) as failed:
        lost.result(T)
    assert failed.value.reason == "LOST_ON_RESTART"
    assert [f.job_id for f in [lost, again] + queued] == ids
    # The executor goes on: a new stream for new jobs.
    assert ex.submit("echo", "after").result(T) == "after"
    ex.shutdown(wait=True)


def test_a_future_cancelled_while_jobd_is_down_is_cancelled_there_too(
        own_daemon):
    d = own_daemon("--thread-workers", "1", durability="batched")
    ex = jobd.Executor(d.address)
    on_thread = ex.options(executor="thread")
    first = on_thread.submit("sleep", 30000)
    queued = on_thread.submit("sleep", 30000)
    wait_until(lambda: first.running() and queued.job_id)
    d.kill()
    wait_until(lambda: ex._reattaches)  # followed, jobd still down
    assert queued.cancel() and queued.cancelled()
    d.restart()
    with pytest.raises(jobd.JobFailed):  # at most once: LOST_ON_RESTART
        first.result(T)
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=queued.job_id), timeout=T)
    deadline = time.monotonic() + T
    while job.state != pb.JOB_STATE_CANCELLED:
        assert time.monotonic() < deadline, job
        time.sleep(0.01)
        job = ex.stub.GetJob(pb.GetJobRequest(job_id=queued.job_id),
                             timeout=T)
    ex.shutdown(wait=True)


def test_a_result_jobd_did_not_keep_is_not_taken_for_none(own_daemon):
    """A job that ended while the client was away, its result too large to
    be retained: its future fails, it does not succeed with nothing."""
    d = own_daemon("--thread-workers", "1", "--max-retained-result-bytes",
                   "64", durability="batched")
    link = os.path.join(d.dir, "link.sock")
    os.symlink(d.socket, link)
    ex = jobd.Executor("unix:" + link)
    on_thread = ex.options(executor="thread")
    first = on_thread.submit("sleep", 30000)
    big = on_thread.submit("echo", "x" * 1000)  # queued behind it
    wait_until(lambda: first.running() and big.job_id)
    os.unlink(link)
    d.kill()
    d.restart()
    with jobd.Executor(d.address) as direct:
        # (Not a waiting GetJob: that one would get the result with the end.)
        wait_until(lambda: direct.stub.GetJob(
            pb.GetJobRequest(job_id=big.job_id), timeout=T).state ==
            pb.JOB_STATE_SUCCEEDED)
        job = direct.stub.GetJob(pb.GetJobRequest(job_id=big.job_id),
                                 timeout=T)
        assert job.result.dropped
    os.symlink(d.socket, link)
    with pytest.raises(jobd.ConnectionLost, match="larger than jobd retains"):
        big.result(T)
    ex.shutdown(wait=False)


def test_a_daemon_that_does_not_come_back_fails_the_futures(own_daemon):
    d = own_daemon()
    ex = jobd.Executor(d.address, reconnect_timeout=1.0)
    fs = [ex.submit("sleep", 30000) for _ in range(3)]
    wait_until(lambda: all(f.running() for f in fs))
    t0 = time.monotonic()
    d.kill()
    done, not_done = cf.wait(fs, timeout=T)
    elapsed = time.monotonic() - t0
    assert not not_done and 1.0 <= elapsed < 6, elapsed
    for f in fs:
        e = f.exception()
        assert isinstance(e, jobd.ConnectionLost)
        assert "within 1s (reconnect_timeout)" in str(e)
        assert e.job_id == f.job_id
    ex.shutdown(wait=False)


def test_a_restart_without_the_journal_loses_the_jobs_and_says_so(
        own_daemon):
    """jobd restarted without its journal numbers its jobs afresh: an id
    the future had may be unknown, or name a newer job, never followed."""
    d = own_daemon("--thread-workers", "1")  # no journal
    # The executor reaches jobd through a link it can be kept away by.
    link = os.path.join(d.dir, "link.sock")
    os.symlink(d.socket, link)
    ex = jobd.Executor("unix:" + link)
    fs = [ex.options(executor="thread").submit("sleep", 30000)
          for _ in range(3)]
    wait_until(lambda: all(f.job_id for f in fs))
    os.unlink(link)
    d.kill()
    d.restart()
    with jobd.Executor(d.address) as other:  # the same ids, other jobs
        newer = [other.submit("echo", i) for i in range(2)]
        assert [f.result(T) for f in newer] == [0, 1]
        assert sorted(f.job_id for f in newer) == sorted(
            f.job_id for f in fs[:2])
    os.symlink(d.socket, link)
    done, not_done = cf.wait(fs, timeout=T)
    assert not not_done
    messages = sorted(str(f.exception()) for f in fs)
    assert all(isinstance(f.exception(), jobd.ConnectionLost) for f in fs)
    assert sum("names another job" in m for m in messages) == 2, messages
    assert sum("no longer knows job" in m for m in messages) == 1, messages
    ex.shutdown(wait=False)


def test_token_authenticates(own_daemon, monkeypatch):
    import hashlib
    digest = hashlib.sha256(b"s3cret").hexdigest()
    d = own_daemon("--auth-token", "alice:submit+read:" + digest,
                   "--unix-socket-auth", "token")
    with jobd.Executor(d.address, token="s3cret") as ex:
        assert ex.submit("echo", 1).result(T) == 1
    monkeypatch.setenv("JOBD_TOKEN", "s3cret")
    with jobd.Executor(d.address) as ex:
        assert list(ex.map("echo", [1, 2])) == [1, 2]
    ex = jobd.Executor(d.address, token="wrong")
    with pytest.raises(jobd.ConnectionLost) as e:
        ex.submit("echo", 1)
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_cancel_at_every_stage_leaves_nothing_running(own_daemon):
    # Cancelled at once after submit: some specs are not sent yet (dropped),
    # some sent but not acknowledged (cancelled on jobd when their id comes),
    # some accepted (CancelJob). None may stay alive on jobd.
    d = own_daemon()
    ex = jobd.Executor(d.address)
    fs = [ex.submit("sleep", 30000) for _ in range(3000)]
    # Newest first: the last ones are still queued or unacknowledged then.
    assert all(f.cancel() for f in reversed(fs))
    done, not_done = cf.wait(fs, timeout=T)
    assert not not_done and all(f.cancelled() for f in fs)

    def live():
        return ex.stub.GetStats(pb.GetStatsRequest(), timeout=T).live
    wait_until(lambda: live() == 0)
    ex.shutdown(wait=True)


def test_leaving_map_early_cancels_its_jobs(own_daemon):
    d = own_daemon()
    with jobd.Executor(d.address) as ex:
        results = ex.map("sleep", [10, 30000, 30000])
        assert next(results) == 10
        results.close()

        def live():
            return ex.stub.GetStats(pb.GetStatsRequest(), timeout=T).live
        wait_until(lambda: live() == 0)


def test_submits_are_batched_under_load(daemon, monkeypatch):
    from jobd._session import Session
    sizes = []
    plain = Session._requests

    def counting(self):
        for req in plain(self):
            sizes.append(len(req.items))
            yield req
    monkeypatch.setattr(Session, "_requests", counting)
    with jobd.Executor(daemon.address) as ex:
        fs = [ex.submit("echo", i) for i in range(5000)]
        assert [f.result(T) for f in fs] == list(range(5000))
    assert sum(sizes) == 5000  # (the first request: options, no items)
    assert max(sizes) > 1 and len(sizes) < 2500, sizes


def _flaky(d, runs_to_fail):
    """An exec job that fails `runs_to_fail` times, then returns."""
    count = os.path.join(d.dir, "runs")
    script = ("n=$(cat %s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s; "
              "[ $n -gt %d ]" % (count, count, runs_to_fail))
    return {"argv": ["/bin/sh", "-c", script]}


def test_retrying_is_not_an_end_for_futures_and_map(own_daemon):
    # Every job may run 3 times: RETRYING events reach the stream between.
    d = own_daemon("--exec-allow", "/bin/sh", "--retry-attempts", "3",
                   "--retry-initial-backoff", "10ms",
                   "--retry-max-backoff", "10ms")
    with jobd.Executor(d.address) as ex:
        f = ex.submit("exec", **_flaky(d, 2))
        assert f.result(T) is not None  # The third run's, not an error.
        got = ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id), timeout=T)
        assert got.attempts == 3 and len(got.history) == 2
        # A failure after all its retries.
        bad = ex.submit("fail", "always")
        with pytest.raises(jobd.JobFailed):
            bad.result(T)
        got = ex.stub.GetJob(pb.GetJobRequest(job_id=bad.job_id), timeout=T)
        assert len(got.history) == 3
        # map: terminal events only; one result per input.
        assert list(ex.map("echo", [1, 2], timeout=T)) == [1, 2]


def test_in_memory_jobs_run_and_a_daemon_may_forbid_them(ex, own_daemon):
    # Accepted and run (this daemon has no journal: every job is in memory).
    assert ex.options(in_memory=True).submit("echo", 7).result(T) == 7
    with pytest.raises(jobd.JobRejected) as e:
        ex.options(in_memory="yes")
    assert e.value.field == "spec.in_memory"
    d = own_daemon("--in-memory-jobs", "forbid")
    with jobd.Executor(d.address) as strict:
        f = strict.options(in_memory=True).submit("echo", 1)
        err = f.exception(timeout=T)
        assert isinstance(err, jobd.JobRejected), err
        assert err.field == "spec.in_memory"
        assert "--in-memory-jobs forbid" in str(err)
        assert strict.submit("echo", 2).result(T) == 2
