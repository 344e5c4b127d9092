"""Python functions as tasks (README: Python tasks): @jobd.task modules run
by a real jobd's process pool, driven from the Python client and jobctl.

The task modules are in task_modules/; the daemon gets that folder and this
tree's jobd package on --python-path (its workers import jobd without grpc).
"""

import concurrent.futures as cf
import os
import subprocess
import time

import pytest

import jobd
from jobd.v1 import jobd_pb2 as pb

from conftest import jobd_binary

T = 20  # seconds: the bound of every wait below
HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = os.path.join(HERE, "task_modules")
PACKAGE = os.path.dirname(HERE)  # client/python: the jobd package


def python_args(*modules, workers=2):
    args = ["--process-workers", str(workers), "--python-path", MODULES,
            "--python-path", PACKAGE]
    for m in modules:
        args += ["--python-tasks", m]
    return args


@pytest.fixture(scope="module")
def pyd():
    from conftest import Daemon
    d = Daemon(*python_args("jobd_test_tasks"))
    yield d
    d.kill()
    d.remove()


@pytest.fixture
def ex(pyd):
    e = jobd.Executor(pyd.address)
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def jobctl(daemon, *args):
    exe = os.path.join(os.path.dirname(jobd_binary()), "jobctl")
    return subprocess.run([exe, "--address", daemon.address, *args],
                          capture_output=True, text=True, timeout=T)


def test_list_tasks_shows_parameters_from_the_signature(ex):
    tasks = {t.name: t for t in ex.stub.ListTasks(pb.ListTasksRequest(),
                                                  timeout=T).tasks}
    add = tasks["jobd_test_tasks.add"]
    assert [(p.name, p.type, p.required) for p in add.params] == [
        ("a", "int", True), ("b", "int", False)]
    assert add.params[1].default_value.number_value == 2
    assert add.description == "Adds two ints."
    assert add.default_kind == pb.JOB_KIND_CPU_BOUND
    assert list(add.executors) == [pb.EXECUTOR_PROCESS]
    d = tasks["pt.describe"]  # name= and kind= of the decorator
    assert d.default_kind == pb.JOB_KIND_IO_BOUND
    assert [(p.name, p.type) for p in d.params] == [
        ("text", "string"), ("scale", "number"), ("flag", "bool"),
        ("items", "list"), ("opts", "object"), ("anything", "any")]
    assert not d.variadic  # payload is not a parameter


def test_args_kwargs_and_payload(ex):
    assert ex.submit("jobd_test_tasks.add", 40).result(T) == 42
    assert ex.submit("jobd_test_tasks.add", 1, b=2).result(T) == 3
    f = ex.options(payload=b"abc").submit(
        "pt.describe", "t", 2, True, [1, "x"], opts={"k": [None]})
    assert f.result(T) == {"text": "t", "scale": 2.0, "scale_type": "float",
                           "flag": True, "items": [1, "x"],
                           "opts": {"k": [None]}, "anything": None,
                           "payload_len": 3}
    assert f.payload == b"cba"


def test_map_with_chunksize(ex):
    got = list(ex.map("jobd_test_tasks.add", range(300), chunksize=32,
                      timeout=T))
    assert got == [i + 2 for i in range(300)]


def test_exception_fails_the_job_with_type_and_traceback(ex):
    f = ex.submit("jobd_test_tasks.fail", "no good")
    with pytest.raises(jobd.JobFailed) as e:
        f.result(T)
    assert e.value.reason == "TASK_ERROR"
    assert e.value.message == "ValueError: no good"
    assert e.value.remote_type == "ValueError"
    tb = e.value.remote_traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert "jobd_test_tasks.py" in tb and "raise ValueError(message)" in tb


def test_a_result_that_is_not_json_fails_naming_it(ex):
    with pytest.raises(jobd.JobFailed) as e:
        ex.submit("jobd_test_tasks.bad_result").result(T)
    assert "result: a object is not a JSON value" in str(e.value)


def test_wrong_type_is_rejected_naming_the_field_before_it_runs(ex):
    with pytest.raises(jobd.JobRejected) as e:
        ex.submit("jobd_test_tasks.add", "forty").result(T)
    assert "spec.args[0] (a): expected int, got string" in str(e.value)
    with pytest.raises(jobd.JobRejected) as e:
        ex.submit("jobd_test_tasks.add", 1, c=3).result(T)
    assert "spec.kwargs.c" in str(e.value)


def test_python_tasks_are_refused_on_the_thread_pool(ex):
    with pytest.raises(jobd.JobRejected) as e:
        ex.options(executor="thread").submit("jobd_test_tasks.add",
                                             1).result(T)
    assert "runs only on EXECUTOR_PROCESS" in str(e.value)


def test_a_segfault_fails_one_job_and_99_others_succeed(ex):
    futures = [ex.submit("jobd_test_tasks.crash_if", i) for i in range(100)]
    done, _ = cf.wait(futures, timeout=T)
    assert len(done) == 100
    for i, f in enumerate(futures):
        if i == 13:
            assert f.exception().reason == "WORKER_CRASHED"
            assert "SIGSEGV" in str(f.exception()) or "11" in str(
                f.exception())
        else:
            assert f.result() == i


def test_busy_loop_is_killed_at_its_timeout(ex):
    start = time.monotonic()
    with pytest.raises(jobd.JobFailed) as e:
        ex.options(timeout=0.5).submit("jobd_test_tasks.spin").result(T)
    assert e.value.reason == "TIMEOUT"
    assert time.monotonic() - start < 5
    # The pool replaced the killed worker: the next job runs.
    assert ex.submit("jobd_test_tasks.add", 1).result(T) == 3


def test_busy_loop_is_killed_on_cancel(ex):
    f = ex.submit("jobd_test_tasks.spin")
    end = time.monotonic() + T
    while not f.running():
        assert time.monotonic() < end
        time.sleep(0.01)
    assert f.cancel()
    assert f.cancelled()
    assert ex.submit("jobd_test_tasks.add", 2).result(T) == 4


def test_progress_and_cooperative_cancel(ex):
    f = ex.submit("jobd_test_tasks.cooperative", 4)
    assert f.result(T) == "done"
    assert f.progress is not None and f.progress[1].startswith("step ")
    # Cancelled while it runs: jobd.cancelled() turns true in the task.
    f = ex.submit("jobd_test_tasks.cooperative", 200)
    end = time.monotonic() + T
    while f.progress is None:
        assert time.monotonic() < end
        time.sleep(0.01)
    assert f.cancel()


def test_workers_are_recycled_after_n_jobs(own_daemon):
    d = own_daemon(*python_args("jobd_test_tasks", workers=1),
                   "--max-jobs-per-worker", "3")
    with jobd.Executor(d.address) as e:
        pids = [e.submit("jobd_test_tasks.pid").result(T) for _ in range(9)]
    assert len(set(pids)) == 3, pids
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3, 3]


def test_jobctl_submits_python_tasks(pyd):
    out = jobctl(pyd, "submit", "jobd_test_tasks.add", "5", "-k", "b=6",
                 "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "11"
    out = jobctl(pyd, "submit", "jobd_test_tasks.fail", '"oops"', "--wait")
    assert out.returncode != 0
    assert "ValueError: oops" in out.stderr
    assert "Traceback (most recent call last):" in out.stderr
    out = jobctl(pyd, "tasks")
    assert "jobd_test_tasks.add" in out.stdout and "a:int b:int=2" in out.stdout


def start_fails(*args):
    d = subprocess.run([jobd_binary(), "--unix-socket",
                        "/nonexistent-dir/jobd.sock", "--durability", "none",
                        *args], capture_output=True, text=True, timeout=T,
                       stdin=subprocess.DEVNULL)
    assert d.returncode != 0
    return d.stderr


def test_a_module_that_fails_to_import_stops_the_start():
    err = start_fails(*python_args("jobd_broken_tasks"))
    assert "RuntimeError: this module is broken on purpose" in err
    assert "Traceback (most recent call last):" in err
    assert "jobd_broken_tasks.py" in err


def test_a_missing_module_stops_the_start():
    err = start_fails(*python_args("no_such_module_here"))
    assert "ModuleNotFoundError" in err and "no_such_module_here" in err


def test_async_tasks_are_refused_at_start():
    err = start_fails(*python_args("jobd_async_tasks"))
    assert "jobd_async_tasks.nap" in err and "async def" in err


def test_bad_python_options_are_refused_naming_the_option():
    assert "--python-tasks: 'not-a-module'" in start_fails(
        "--python-tasks", "not-a-module")
    assert "--python-path: '/no/such/dir' is not a directory" in start_fails(
        "--python-path", "/no/such/dir", "--python-tasks", "x")
    assert "--process-workers is 0" in start_fails("--process-workers", "0",
                                           "--python-tasks", "x")


def test_the_decorator_needs_no_grpc():
    code = ("import sys; sys.modules['grpc'] = None; import jobd\n"
            "@jobd.task(kind='io')\n"
            "def f(x): return x\n"
            "assert f(3) == 3 and f.__jobd_task__['kind'] == 'io'\n"
            "assert jobd.cancelled() is False; jobd.progress(0.5, 'x')\n"
            "print('ok')")
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=PACKAGE,
                         capture_output=True, text=True, timeout=T)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_task_that_keeps_crashing_is_quarantined(own_daemon):
    d = own_daemon(*python_args("jobd_test_tasks"), "--quarantine-after",
                   "2")
    with jobd.Executor(d.address) as e:
        for _ in range(2):
            with pytest.raises(jobd.JobFailed) as err:
                e.submit("jobd_test_tasks.crash_if", 13).result(T)
            assert err.value.reason == "WORKER_CRASHED"
        with pytest.raises(jobd.JobFailed) as err:
            e.submit("jobd_test_tasks.crash_if", 1).result(T)
        assert err.value.reason == "QUARANTINED"
        tasks = {t.name: t for t in e.stub.ListTasks(
            pb.ListTasksRequest(), timeout=T).tasks}
        assert tasks["jobd_test_tasks.crash_if"].quarantined
        assert e.submit("jobd_test_tasks.add", 1).result(T) == 3


def idle_worker_rss(address):
    """The resident bytes of a Python worker that has run one job (an ASan
    build's workers start far bigger than a release build's)."""
    with jobd.Executor(address) as e:
        e.submit("jobd_test_tasks.pid").result(T)
        stats = e.stub.GetStats(pb.GetStatsRequest(), timeout=T)
        return max(w.rss_bytes for w in stats.process_pool.workers)


def test_a_worker_over_its_rss_limit_is_killed_and_replaced(own_daemon):
    # The limit sits 100 MiB above a worker's own size, measured on a daemon
    # without it, so that only the job's 200 MiB can cross it.
    probe = own_daemon(*python_args("jobd_test_tasks", workers=1))
    baseline = idle_worker_rss(probe.address)
    assert baseline > 0
    probe.kill()
    limit_mib = baseline // (1 << 20) + 100
    d = own_daemon(*python_args("jobd_test_tasks", workers=1),
                   "--max-worker-rss", "%dM" % limit_mib)
    with jobd.Executor(d.address) as e:
        before = e.submit("jobd_test_tasks.pid").result(T)
        with pytest.raises(jobd.JobFailed) as err:
            e.submit("jobd_test_tasks.hold", 200, seconds=5).result(T)
        assert err.value.reason == "OUT_OF_MEMORY"
        after = e.submit("jobd_test_tasks.pid").result(T)
        assert after != before, "the replacement is a new process"
