"""Executor.map with chunksize > 1 on Python tasks (README: Python client,
map): each chunk is one job of many calls (JobSpec.calls; flat ones,
JobSpec.flat_calls, for a map of one iterable), run in one worker, its
results unpacked in order, a failed call raised at its place. A real jobd
runs the tasks of task_modules/jobd_test_tasks.py.
"""

import json

import pytest

import jobd
from jobd.v1 import jobd_pb2 as pb

# The daemon with jobd_test_tasks (module scope) and an executor on it.
from test_python_tasks import T, ex, pyd  # noqa: F401 (fixtures)

ADD = "jobd_test_tasks.add"


def process_jobs(ex):
    """(succeeded, failed) jobs of the process pool so far."""
    stats = ex.stub.GetStats(pb.GetStatsRequest(), timeout=T)
    for e in stats.executors:
        if e.executor == pb.EXECUTOR_PROCESS:
            return e.completed, e.failed
    raise AssertionError("no process pool")


def test_the_task_list_says_python_tasks_take_batches(ex):
    tasks = {t.name: t for t in ex.stub.ListTasks(pb.ListTasksRequest(),
                                                  timeout=T).tasks}
    assert tasks[ADD].takes_calls and tasks[ADD].takes_flat_calls
    assert not tasks["echo"].takes_calls
    assert not tasks["echo"].takes_flat_calls


def test_order_is_kept_across_chunks_and_each_chunk_is_one_job(ex):
    before, _ = process_jobs(ex)
    got = list(ex.map(ADD, range(1000), range(1000), chunksize=64,
                      timeout=T))
    assert got == [2 * i for i in range(1000)]
    after, _ = process_jobs(ex)
    assert after - before == 16  # ceil(1000 / 64) jobs, not 1000


def test_a_small_window_still_reads_whole_chunks(ex):
    before, _ = process_jobs(ex)
    got = list(ex.map(ADD, range(300), chunksize=50, window=10, timeout=T))
    assert got == [i + 2 for i in range(300)]
    assert process_jobs(ex)[0] - before == 6


def test_an_exception_in_call_k_surfaces_at_element_k(ex):
    it = ex.map("jobd_test_tasks.fail_at", range(100), chunksize=16,
                timeout=T)
    got = []
    with pytest.raises(jobd.JobFailed) as e:
        for x in it:
            got.append(x)
    assert got == list(range(37))
    err = e.value
    assert err.reason == "TASK_ERROR"
    assert err.message == "ValueError: call 37 failed"
    assert err.remote_type == "ValueError"
    tb = err.remote_traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert "jobd_test_tasks.py" in tb and "raise ValueError" in tb
    assert "<jobd batch>" not in tb  # starts in the task
    # One job ran calls 32..47: it succeeded, its call 37 (index 5) failed.
    # One iterable: a flat chunk, the inputs themselves.
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=err.job_id), timeout=T)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert job.spec.flat_calls
    assert json.loads(job.spec.calls) == list(range(32, 48))
    assert json.loads(job.result.batch.results) == [
        None if i == 37 else i for i in range(32, 48)]
    [call] = job.result.batch.call_errors
    assert (call.index, call.type) == (5, "ValueError")


def test_a_result_that_is_not_json_fails_that_call_only(ex):
    it = ex.map("jobd_test_tasks.not_json_at", range(8), chunksize=8,
                timeout=T)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(jobd.JobFailed) as e:
        next(it)
    assert e.value.remote_type == "TypeError"
    assert "result" in e.value.message and "set" in e.value.message


def test_type_hints_apply_to_each_call(ex):
    before, _ = process_jobs(ex)
    got = list(ex.map("jobd_test_tasks.kinds", [1, 2.5], [3, 4.0],
                      chunksize=2, timeout=T))
    assert got == [["float", "int", "NoneType"], ["float", "int", "NoneType"]]
    assert process_jobs(ex)[0] - before == 1


def test_bad_arguments_are_refused_naming_call_and_field_before_any_run(ex):
    before = process_jobs(ex)
    # Two iterables: calls of argument arrays.
    it = ex.map(ADD, [1, 2, "x", 4, 5, 6], range(6), chunksize=8, timeout=T)
    with pytest.raises(jobd.JobRejected) as e:
        next(it)
    assert "spec.calls[2][0] (a): expected int, got string" in str(e.value)
    assert e.value.field == "spec.calls[2][0] (a)"
    assert process_jobs(ex) == before  # nothing ran


def test_a_wrong_type_in_a_flat_chunk_is_raised_at_its_chunk(ex):
    before = process_jobs(ex)
    it = ex.map(ADD, [1, 2, 3, "x", 5, 6], chunksize=2, timeout=T)
    assert [next(it), next(it)] == [3, 4]  # the chunk before it
    with pytest.raises(jobd.JobRejected) as e:
        next(it)
    # Its place in the flat chunk [3, "x"], as the daemon names it.
    assert "spec.calls[1] (a): expected int, got string" in str(e.value)
    assert e.value.field == "spec.calls[1] (a)"
    assert process_jobs(ex)[0] - before[0] <= 2  # not the bad chunk


def test_two_iterables_send_argument_arrays(ex):
    it = ex.map("jobd_test_tasks.fail_at", range(20), [7] * 20, chunksize=8,
                timeout=T)
    with pytest.raises(jobd.JobFailed) as e:
        list(it)
    job = ex.stub.GetJob(pb.GetJobRequest(job_id=e.value.job_id), timeout=T)
    assert not job.spec.flat_calls
    assert json.loads(job.spec.calls) == [[i, 7] for i in range(8)]


def submit_one(ex, spec):
    """The terminal event of one spec sent on a Submit stream of its own."""
    requests = [pb.SubmitRequest(options=pb.SubmitOptions(
        terminal_only=True)), pb.SubmitRequest(items=[pb.SubmitItem(
            client_tag=1, spec=spec)])]
    for response in ex.stub.Submit(iter(requests), timeout=T):
        for ev in response.events:
            if ev.type != pb.EVENT_TYPE_ACCEPTED:
                return ev
    raise AssertionError("no terminal event")


def test_other_clients_can_send_flat_batches(ex):
    ev = submit_one(ex, pb.JobSpec(
        task="pt.describe", kind=pb.JOB_KIND_CPU_BOUND, calls="[1]",
        flat_calls=True))
    assert ev.type == pb.EVENT_TYPE_REJECTED
    assert "spec.flat_calls: task 'pt.describe' requires argument 'scale'" \
        in ev.error.message
    ev = submit_one(ex, pb.JobSpec(
        task="jobd_test_tasks.kinds", kind=pb.JOB_KIND_CPU_BOUND,
        calls="[1, 2.5, 3.0]", flat_calls=True))
    assert ev.type == pb.EVENT_TYPE_REJECTED
    assert "task 'jobd_test_tasks.kinds' requires argument 'n' (int)" in \
        ev.error.message
    ev = submit_one(ex, pb.JobSpec(
        task="jobd_test_tasks.fail_at", kind=pb.JOB_KIND_CPU_BOUND,
        calls="[36, 37.0, 38]", flat_calls=True))
    assert ev.type == pb.EVENT_TYPE_SUCCEEDED
    # The int hint turns 37.0 into 37: that call raises.
    assert json.loads(ev.result.batch.results) == [36, None, 38]
    [call] = ev.result.batch.call_errors
    assert (call.index, call.message) == (1, "ValueError: call 37 failed")
    ev = submit_one(ex, pb.JobSpec(task="echo", kind=pb.JOB_KIND_IO_BOUND,
                                   calls="[1]", flat_calls=True))
    assert ev.type == pb.EVENT_TYPE_REJECTED
    assert "spec.flat_calls: task 'echo' does not take flat batches" in \
        ev.error.message


def test_chunksize_larger_than_the_input_and_empty_input(ex):
    before, _ = process_jobs(ex)
    assert list(ex.map(ADD, range(5), chunksize=100, timeout=T)) == [
        2, 3, 4, 5, 6]
    assert process_jobs(ex)[0] - before == 1
    assert list(ex.map(ADD, [], chunksize=8, timeout=T)) == []
    assert list(ex.map(ADD, range(7), chunksize=3, timeout=T)) == [
        2, 3, 4, 5, 6, 7, 8]


def test_an_oversized_chunk_is_refused_with_a_clear_error(ex):
    big = "x" * (400 << 10)  # 3 calls: 1.2 MB > --max-args-bytes (1 MiB)
    with pytest.raises(jobd.JobRejected) as e:
        list(ex.map("jobd_test_tasks.ident", [big] * 3, chunksize=3,
                    timeout=T))
    assert "spec.calls:" in str(e.value)
    assert "more than the limit of 1048576 (max-args-bytes)" in str(e.value)
    assert "smaller chunksize" in str(e.value)
    # Smaller chunks of the same inputs pass.
    got = list(ex.map("jobd_test_tasks.ident", [big] * 3, chunksize=2,
                      timeout=T))
    assert got == [big] * 3


def test_a_value_that_is_not_json_ends_the_input_at_its_place(ex):
    it = ex.map("jobd_test_tasks.ident", [1, 2, {3}, 4], chunksize=4,
                timeout=T)
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(jobd.JobRejected) as e:
        next(it)
    assert "spec.calls[2] (input 2)" in str(e.value)


def test_a_segfault_fails_only_its_chunk(ex):
    # crash_if(13) segfaults its worker; it is in the last chunk, so every
    # chunk before it is seen to succeed (the map stops at the failure).
    inputs = list(range(100, 156)) + [1, 13, 2, 3, 4, 5, 6, 7]
    before = process_jobs(ex)
    it = ex.map("jobd_test_tasks.crash_if", inputs, chunksize=8, timeout=T)
    got = []
    with pytest.raises(jobd.JobFailed) as e:
        for x in it:
            got.append(x)
    assert got == list(range(100, 156))  # the 7 chunks before it
    assert e.value.reason == "WORKER_CRASHED"
    after = process_jobs(ex)
    assert after[0] - before[0] == 7 and after[1] - before[1] == 1
    # The pool goes on.
    assert list(ex.map(ADD, range(20), chunksize=8, timeout=T)) == [
        i + 2 for i in range(20)]


def test_chunksize_1_and_cpp_tasks_keep_one_job_per_input(ex):
    before, _ = process_jobs(ex)
    assert list(ex.map(ADD, range(10), timeout=T)) == [
        i + 2 for i in range(10)]
    assert process_jobs(ex)[0] - before == 10
    got = list(ex.options(kind="cpu").map("echo", range(40), chunksize=16,
                                          timeout=T))
    assert got == list(range(40))


def test_an_iterable_that_raises_ends_the_map_after_the_chunks_before(ex):
    def inputs():
        yield from range(10)
        raise KeyError("no more")

    it = ex.map(ADD, inputs(), chunksize=4, timeout=T)
    assert [next(it) for _ in range(8)] == [i + 2 for i in range(8)]
    with pytest.raises(KeyError):
        next(it)
