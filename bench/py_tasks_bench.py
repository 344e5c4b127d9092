#!/usr/bin/python3
"""Python tasks (@jobd.task) in jobd's process pool beside Python's own
ProcessPoolExecutor, in one run (bench/README.md, "Python tasks").

Starts build/bin/jobd with --python-tasks bench_tasks (bench/py_tasks/) on
a temp Unix socket (--durability none, window 65536, 256 jobs per request)
and measures:

  no-op     bench_tasks.noop(i) through jobd.Executor.map, chunksize 1 and
            256, and ProcessPoolExecutor(2).map on the same function, same
            chunksizes: µs per job (best of --repeat)
  primes    8 jobs of bench_tasks.count_primes(N), N sized so one job takes
            ~250 ms here, on 1 and on 2 process workers: the speedup
  start     a worker killed (SIGKILL), then the time until a job runs on
            its replacement (fork + interpreter + imports + one job),
            median of --starts; beside the same for a C++ echo job on a
            jobd without Python tasks
  memory    each idle worker's RSS and PSS (smaps_rollup), with and
            without Python tasks

  bench/py_tasks_bench.py [--jobs N] [--repeat R] [--starts S]
                          [--only noop,primes,start]
"""

import argparse
import concurrent.futures as cf
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = os.path.join(ROOT, "bench", "py_tasks")
PACKAGE = os.path.join(ROOT, "client", "python")
sys.path.insert(0, PACKAGE)
sys.path.insert(0, TASKS)

import jobd  # noqa: E402
import bench_tasks  # noqa: E402

BIN = os.path.join(ROOT, "build", "bin")


class Daemon:
    def __init__(self, tmp, workers, python=True, extra=()):
        self.dir = tempfile.mkdtemp(dir=tmp)
        self.sock = os.path.join(self.dir, "jobd.sock")
        args = [os.path.join(BIN, "jobd"), "--unix-socket", self.sock,
                "--tcp", "127.0.0.1:0", "--state-dir",
                os.path.join(self.dir, "state"), "--durability", "none",
                "--log-level", "warn", "--max-window", "65536",
                "--max-jobs-per-request", "256", "--process-workers",
                str(workers), *extra]
        if python:
            args += ["--python-path", TASKS, "--python-path", PACKAGE,
                     "--python-tasks", "bench_tasks"]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.dir, "err"), "wb"))
        out, end = b"", time.monotonic() + 30
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while b"try:" not in out:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                sys.exit("jobd did not start: " + open(
                    os.path.join(self.dir, "err")).read())
            if sel.select(left):
                out += os.read(self.proc.stdout.fileno(), 4096)
        sel.close()
        self.address = "unix:" + self.sock

    def workers(self):
        found = []
        for fs in children(self.proc.pid):
            for w in children(fs):
                if comm(w) == "jobd-worker":
                    found.append(w)
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_workers(d, n):
    """The pool's worker pids once there are n of them (no spare)."""
    end = time.monotonic() + 10
    ws = d.workers()
    while len(ws) != n:
        assert time.monotonic() < end, ws
        time.sleep(0.01)
        ws = d.workers()
    return ws


def memory_kb(pid):
    rss = pss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def best(fn, repeat):
    return min(fn() for _ in range(repeat))


def time_map(mapper, n, chunksize):
    start = time.perf_counter()
    for i, r in enumerate(mapper(range(n), chunksize)):
        if r != i:
            raise AssertionError("wrong result %r for %d" % (r, i))
    return (time.perf_counter() - start) / n * 1e6


def noop_bench(tmp, jobs, repeat):
    d = Daemon(tmp, 2)
    try:
        with jobd.Executor(d.address) as ex:
            list(ex.map("bench_tasks.noop", range(2000), chunksize=64))
            rows = {}
            for c in (1, 256):
                rows[("jobd", c)] = best(lambda: time_map(
                    lambda it, cs: ex.map("bench_tasks.noop", it,
                                          chunksize=cs), jobs, c), repeat)
    finally:
        d.stop()
    with cf.ProcessPoolExecutor(2) as pool:
        list(pool.map(bench_tasks.noop, range(2000)))
        for c in (1, 256):
            rows[("ppe", c)] = best(lambda: time_map(
                lambda it, cs: pool.map(bench_tasks.noop, it, chunksize=cs),
                jobs, c), repeat)
    for c in (1, 256):
        j, p = rows[("jobd", c)], rows[("ppe", c)]
        print("no-op, chunksize %3d: jobd %7.2f µs/job (%9.0f/s)   "
              "ProcessPoolExecutor %7.2f µs/job (%9.0f/s)   jobd %.2fx faster"
              % (c, j, 1e6 / j, p, 1e6 / p, p / j))


def primes_bench(tmp, repeat):
    limit, took = 20000, 0.0
    while True:  # ~250 ms for one job here
        start = time.perf_counter()
        bench_tasks.count_primes(limit)
        took = time.perf_counter() - start
        if took >= 0.2:
            break
        limit = int(limit * min(4.0, 0.25 / max(took, 1e-3)))
    limit = int(limit * 0.25 / took)
    start = time.perf_counter()
    bench_tasks.count_primes(limit)
    alone = time.perf_counter() - start
    times = {}
    for workers in (1, 2):
        d = Daemon(tmp, workers)
        try:
            with jobd.Executor(d.address) as ex:
                ex.submit("bench_tasks.count_primes", 1000).result(30)

                def run():
                    start = time.perf_counter()
                    r = list(ex.map("bench_tasks.count_primes",
                                    [limit] * 8, timeout=120))
                    assert len(set(r)) == 1
                    return time.perf_counter() - start
                times[workers] = best(run, repeat)
        finally:
            d.stop()
    print("primes: 8 jobs of count_primes(%d) (%.0f ms each alone): "
          "1 worker %.2f s, 2 workers %.2f s: speedup %.2fx"
          % (limit, alone * 1000, times[1], times[2],
             times[1] / times[2]))


def start_bench(tmp, starts):
    for python, task in ((True, "bench_tasks.pid"), (False, "echo")):
        # No spare worker: the job waits for the replacement's start.
        d = Daemon(tmp, 1, python=python, extra=("--spare-workers", "0"))
        try:
            with jobd.Executor(d.address) as ex:
                args = (1,) if task == "echo" else ()
                ex.submit(task, *args).result(30)
                samples = []
                for _ in range(starts * 3):
                    if len(samples) == starts:
                        break
                    ws = wait_workers(d, 1)
                    os.kill(ws[0], signal.SIGKILL)
                    start = time.perf_counter()
                    # Reaped by the fork server: the daemon hears of it now.
                    end = time.monotonic() + 10
                    while os.path.exists("/proc/%d" % ws[0]):
                        assert time.monotonic() < end
                        time.sleep(0.0005)
                    try:
                        ex.submit(task, *args).result(30)
                    except jobd.JobFailed:
                        continue  # Sent to the dead worker before it knew.
                    samples.append((time.perf_counter() - start) * 1e3)
                for _ in range(50):  # a few jobs first, as in use
                    ex.submit(task, *args).result(30)
                mem = [memory_kb(w) for w in wait_workers(d, 1)]
        finally:
            d.stop()
        what = "Python worker" if python else "C++-only worker"
        print("start, %s: kill -> first job done: median %.1f ms "
              "(min %.1f, max %.1f, %d starts)"
              % (what, statistics.median(samples), min(samples),
                 max(samples), len(samples)))
        for rss, pss in mem:
            print("memory, %s: RSS %.1f MiB, PSS %.1f MiB"
                  % (what, rss / 1024, pss / 1024))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--starts", type=int, default=15)
    ap.add_argument("--only", default="noop,primes,start",
                    help="comma-separated: noop, primes, start")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "noop" in a.only:
            noop_bench(tmp, a.jobs, a.repeat)
        if "primes" in a.only:
            primes_bench(tmp, a.repeat)
        if "start" in a.only:
            start_bench(tmp, a.starts)


if __name__ == "__main__":
    main()
