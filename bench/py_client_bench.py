#!/usr/bin/python3
"""The Python client's throughput beside the C++ client's and Python's own
executors, in one run (bench/README.md, "Python client").

Starts build/bin/jobd (--durability none, 2 thread workers, window 65536,
256 jobs per request: jobd_bench's settings) on a temp Unix socket, then
measures no-op jobs/s (the built-in `echo` of one int, kind io) through:

  jobd.Executor.map                  (this package; one stream, ordered)
  jobd.Executor.submit + as_completed (a future per job, the shared stream)
  jobd.aio.Client.map                (asyncio client)
  jobctl map echo --ordered          (the C++ client's Map, stdin lines)
and, with no daemon, the same no-op function on
  ProcessPoolExecutor.map            (chunksize 1, and 256)
  ThreadPoolExecutor.map

  bench/py_client_bench.py [--jobs N] [--pool-jobs N] [--repeat R]
                           [--profile FILE]

Prints one line per figure (best of R runs) and the ratios. --profile
writes a cProfile of one Executor.map run (pstats, sorted by tottime).
"""

import argparse
import asyncio
import concurrent.futures as cf
import cProfile
import os
import pstats
import selectors
import subprocess
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))

import jobd  # noqa: E402
import jobd.aio  # noqa: E402

BIN = os.path.join(ROOT, "build", "bin")


def noop(x):
    return x


def start_daemon(tmp):
    sock = os.path.join(tmp, "jobd.sock")
    proc = subprocess.Popen(
        [os.path.join(BIN, "jobd"), "--unix-socket", sock, "--tcp",
         "127.0.0.1:0", "--state-dir", os.path.join(tmp, "state"),
         "--durability", "none", "--thread-workers", "2", "--log-level",
         "warn", "--max-window", "65536", "--max-jobs-per-request", "256"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "err"), "wb"))
    out, end = b"", time.monotonic() + 20
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while b"try:" not in out:
        if time.monotonic() > end or proc.poll() is not None:
            proc.kill()
            sys.exit("jobd did not start: %r" % out)
        if sel.select(end - time.monotonic()):
            out += os.read(proc.stdout.fileno(), 4096)
    return proc, "unix:" + sock


def best(fn, repeat):
    return max(fn() for _ in range(repeat))


def py_map(address, n):
    with jobd.Executor(address) as ex:
        view = ex.options(kind="io")
        assert next(view.map("echo", [0])) == 0  # connected, warm
        t0 = time.perf_counter()
        count = 0
        for _ in view.map("echo", range(n), window=65536):
            count += 1
        rate = count / (time.perf_counter() - t0)
    assert count == n
    return rate


def py_submit(address, n):
    with jobd.Executor(address) as ex:
        view = ex.options(kind="io")
        view.submit("echo", 0).result(10)
        t0 = time.perf_counter()
        fs = [view.submit("echo", i) for i in range(n)]
        done = sum(1 for _ in cf.as_completed(fs, timeout=120))
        return done / (time.perf_counter() - t0)


def aio_map(address, n):
    async def main():
        async with jobd.aio.Client(address) as c:
            view = c.options(kind="io")
            await (await view.submit("echo", 0))
            t0 = time.perf_counter()
            count = 0
            async for _ in view.map("echo", range(n), window=4096):
                count += 1
            return count / (time.perf_counter() - t0)
    return asyncio.run(main())


def jobctl_map(address, n, tmp):
    path = os.path.join(tmp, "inputs.txt")
    with open(path, "w") as f:
        f.write("".join("%d\n" % i for i in range(n)))
    with open(path, "rb") as stdin:
        t0 = time.perf_counter()
        r = subprocess.run(
            [os.path.join(BIN, "jobctl"), "--address", address, "map",
             "echo", "--ordered", "--kind", "io", "--window", "65536",
             "--no-progress"], stdin=stdin, stdout=subprocess.PIPE,
            check=True)
        rate = n / (time.perf_counter() - t0)
    assert r.stdout.count(b"\n") == n
    return rate


def pool_map(kind, n, chunksize=1):
    with kind(max_workers=os.cpu_count()) as pool:
        list(pool.map(noop, range(100)))  # workers up
        t0 = time.perf_counter()
        count = sum(1 for _ in pool.map(noop, range(n), chunksize=chunksize))
        return count / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200000)
    ap.add_argument("--pool-jobs", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="py-client-bench-")
    proc, address = start_daemon(tmp)
    rows = []
    try:
        rows.append(("jobd.Executor.map", best(
            lambda: py_map(address, a.jobs), a.repeat)))
        rows.append(("jobctl map (C++ client Map)", best(
            lambda: jobctl_map(address, a.jobs, tmp), a.repeat)))
        rows.append(("jobd.Executor.submit + as_completed", best(
            lambda: py_submit(address, a.jobs // 4), a.repeat)))
        rows.append(("jobd.aio.Client.map", best(
            lambda: aio_map(address, a.jobs // 4), a.repeat)))
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            py_map(address, a.jobs // 4)
            prof.disable()
            prof.dump_stats(a.profile)
            pstats.Stats(a.profile).sort_stats("tottime").print_stats(15)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)
    rows.append(("ProcessPoolExecutor.map, chunksize 1", best(
        lambda: pool_map(cf.ProcessPoolExecutor, a.pool_jobs), a.repeat)))
    rows.append(("ProcessPoolExecutor.map, chunksize 256", best(
        lambda: pool_map(cf.ProcessPoolExecutor, a.jobs, 256), a.repeat)))
    rows.append(("ThreadPoolExecutor.map", best(
        lambda: pool_map(cf.ThreadPoolExecutor, a.pool_jobs * 5), a.repeat)))
    rates = dict(rows)
    for name, rate in rows:
        print("%-42s %10.0f jobs/s" % (name, rate))
    py = rates["jobd.Executor.map"]
    print("Executor.map / C++ Map:            %.2f" % (
        py / rates["jobctl map (C++ client Map)"]))
    print("Executor.map / ProcessPool.map c1: %.1fx" % (
        py / rates["ProcessPoolExecutor.map, chunksize 1"]))


if __name__ == "__main__":
    main()
