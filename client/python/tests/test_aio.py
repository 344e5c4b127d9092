"""jobd.aio.Client against a real daemon, used through asyncio."""

import asyncio
import os
import time

import pytest

import jobd
import jobd.aio
from jobd.v1 import jobd_pb2 as pb

# The daemon with jobd_test_tasks (Python tasks: they take batches).
from test_python_tasks import pyd  # noqa: F401 (fixture)

T = 10  # seconds: the bound of every wait below


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, T * 2))


def test_submit_returns_an_awaitable_accepted_job(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            job = await c.submit("echo", "hi")
            assert job.job_id and isinstance(job, asyncio.Future)
            assert await asyncio.wait_for(job, T) == "hi"
    run(main())


def test_async_for_over_completions(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            jobs = {await c.submit("sleep", ms): ms for ms in (500, 50, 250)}
            order = [jobs[j] async for j in c.as_completed(jobs, timeout=T)]
            assert order == [50, 250, 500]
    run(main())


def test_works_with_asyncio_as_completed_gather_and_wait(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            jobs = [await c.submit("sleep", ms) for ms in (300, 30, 150)]
            got = [await f for f in asyncio.as_completed(jobs, timeout=T)]
            assert got == [30, 150, 300]
            assert await asyncio.gather(*jobs) == [300, 30, 150]
            slow = await c.submit("sleep", 5000)
            fast = await c.submit("sleep", 10)
            done, pending = await asyncio.wait(
                [slow, fast], timeout=T, return_when=asyncio.FIRST_COMPLETED)
            assert done == {fast} and pending == {slow}
            slow.cancel()
    run(main())


def test_rejected_spec_raises_at_submit(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            with pytest.raises(jobd.JobRejected) as e:
                await c.submit("sleep", "x")
            assert e.value.field == "spec.args[0] (ms)"
            with pytest.raises(jobd.JobRejected) as e:
                await c.submit("http.get", "ftp://example.invalid/")
            assert e.value.field  # only jobd knows this one
    run(main())


def test_failure_and_cancel(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            bad = await c.submit("fail", "boom")
            with pytest.raises(jobd.JobFailed) as e:
                await bad
            assert e.value.reason == "TASK_ERROR"
            job = await c.options(timeout=20).submit("sleep", 30000)
            assert job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            got = await c.get_job(job.job_id, wait=T)
            assert jobd.v1.jobd_pb2.JobState.Name(got.state) == \
                "JOB_STATE_CANCELLED"
    run(main())


def test_map_in_order(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            got = [x async for x in c.map("echo", range(500), window=64)]
            assert got == list(range(500))
    run(main())


@pytest.mark.parametrize("reconnect_timeout", [0, 1])
def test_daemon_killed_for_good_fails_open_jobs(own_daemon,
                                                 reconnect_timeout):
    """At once without following, else once the wait for jobd is over."""
    d = own_daemon()

    async def main():
        async with jobd.aio.Client(
                d.address, reconnect_timeout=reconnect_timeout) as c:
            jobs = [await c.submit("sleep", 30000) for _ in range(3)]
            t0 = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, d.kill)
            for j in jobs:
                with pytest.raises(jobd.ConnectionLost) as lost:
                    await asyncio.wait_for(j, 6)
                if reconnect_timeout:
                    assert "within 1s (reconnect_timeout)" in str(lost.value)
            assert reconnect_timeout <= time.monotonic() - t0 < 6
    run(main())


def test_jobs_are_followed_across_a_daemon_restart(own_daemon):
    """The jobs of the broken stream end as jobd ends them, those that
    ended while the client could not reach it included."""
    d = own_daemon("--thread-workers", "2", durability="batched")
    link = os.path.join(d.dir, "link.sock")
    os.symlink(d.socket, link)

    async def main():
        async with jobd.aio.Client("unix:" + link) as c:
            on_thread = c.options(executor="thread")
            lost = await on_thread.submit("sleep", 30000)
            again = on_thread.options(delivery="at_least_once")
            rerun = await again.submit("sleep", 30000)
            queued = [await on_thread.submit("echo", i) for i in range(4)]
            deadline = time.monotonic() + T
            for j in (lost, rerun):
                while (await c.get_job(j.job_id)).state != \
                        pb.JOB_STATE_RUNNING:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
            os.unlink(link)  # kept away until the echo jobs ended
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, d.kill)
            await loop.run_in_executor(None, d.restart)
            async with jobd.aio.Client(d.address) as direct:
                for q in queued:
                    job = await direct.get_job(q.job_id, wait=T)
                    assert job.state == pb.JOB_STATE_SUCCEEDED
            assert not any(q.done() for q in queued)
            os.symlink(d.socket, link)
            assert [await asyncio.wait_for(q, T) for q in queued] == \
                list(range(4))
            with pytest.raises(jobd.JobFailed) as failed:
                await asyncio.wait_for(lost, T)
            assert failed.value.reason == "LOST_ON_RESTART"
            # Running again: a cancel still reaches it.
            while (await c.get_job(rerun.job_id)).state != \
                    pb.JOB_STATE_RUNNING:
                assert time.monotonic() < deadline + T
                await asyncio.sleep(0.01)
            rerun.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(rerun, T)
            job = await c.get_job(rerun.job_id, wait=T)
            assert job.state == pb.JOB_STATE_CANCELLED
            assert await c.submit("echo", 1) is not None
    run(main())


def test_retrying_is_not_an_end(own_daemon):
    d = own_daemon("--exec-allow", "/bin/sh", "--retry-attempts", "3",
                   "--retry-initial-backoff", "10ms",
                   "--retry-max-backoff", "10ms")
    count = d.dir + "/runs"
    script = ("n=$(cat %s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s; "
              "[ $n -gt 2 ]" % (count, count))

    async def main():
        async with jobd.aio.Client(d.address) as c:
            job = await c.submit("exec", argv=["/bin/sh", "-c", script])
            await asyncio.wait_for(job, T)  # The third run succeeds.
            got = await c.get_job(job.job_id)
            assert got.attempts == 3 and len(got.history) == 2
    run(main())


def test_a_dependant_waits_for_its_pending_dependencies(daemon):
    async def main():
        async with jobd.aio.Client(daemon.address) as c:
            a = await c.submit("sleep", 200)
            b = await c.options(depends_on=a, dependency_results=True).submit(
                "echo", "then")
            assert await asyncio.wait_for(b, T) == [[200], "then"]
    run(main())


async def process_jobs(c):
    """Jobs the process pool completed so far."""
    stats = await c.stub.GetStats(pb.GetStatsRequest(),
                                  timeout=T)
    for e in stats.executors:
        if e.executor == pb.EXECUTOR_PROCESS:
            return e.completed
    raise AssertionError("no process pool")


def test_map_chunks_a_python_task_into_jobs_of_many_calls(pyd):
    async def main():
        async with jobd.aio.Client(pyd.address) as c:
            before = await process_jobs(c)
            got = [x async for x in c.map(
                "jobd_test_tasks.add", ((i, i) for i in range(300)),
                window=100, chunksize=64)]
            assert got == [2 * i for i in range(300)]
            assert await process_jobs(c) - before == 5  # ceil(300 / 64)
            # One argument each: add's default second one.
            got = [x async for x in c.map("jobd_test_tasks.add", range(10),
                                          chunksize=4)]
            assert got == [i + 2 for i in range(10)]
    run(main())


def test_map_chunks_raise_a_failed_call_at_its_place(pyd):
    async def main():
        async with jobd.aio.Client(pyd.address) as c:
            got = []
            with pytest.raises(jobd.JobFailed) as e:
                async for x in c.map("jobd_test_tasks.fail_at", range(100),
                                     chunksize=16):
                    got.append(x)
            assert got == list(range(37))
            assert e.value.reason == "TASK_ERROR"
            assert e.value.remote_type == "ValueError"
            assert e.value.message == "ValueError: call 37 failed"
            # An input that cannot be JSON ends the input at its place.
            got = []
            with pytest.raises(jobd.JobRejected) as e:
                async for x in c.map("jobd_test_tasks.add",
                                     [1, 2, object(), 4], chunksize=8):
                    got.append(x)
            assert got == [3, 4]
            assert "spec.calls[2] (input 2)" in str(e.value)
    run(main())


def test_map_chunksize_elsewhere_keeps_a_job_per_input(pyd):
    async def main():
        async with jobd.aio.Client(pyd.address) as c:
            got = [x async for x in c.map("echo", range(50), chunksize=8)]
            assert got == list(range(50))
            with pytest.raises(ValueError):
                async for _ in c.map("echo", range(3), chunksize=0):
                    pass
    run(main())
