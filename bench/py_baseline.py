#!/usr/bin/env python3
"""Python baselines for reactor_bench (bench/README.md): the same workloads
on asyncio and on concurrent.futures.ThreadPoolExecutor, in this process.

  py_baseline.py sleep asyncio N MS        N asyncio.sleep(MS) at once
  py_baseline.py sleep threads N MS W      N time.sleep(MS) on W threads
  py_baseline.py http asyncio N URL        N GETs over asyncio streams
  py_baseline.py http threads N URL W      N urllib GETs on W threads

Prints one JSON line: wall seconds, peak RSS growth in bytes per job (from
getrusage; the interpreter's start-up is the baseline), and jobs done.
Standard library only.
"""
import asyncio
import concurrent.futures
import json
import resource
import sys
import time
import urllib.parse
import urllib.request


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def asyncio_sleeps(n, seconds):
    await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(n)))
    return n


def thread_sleeps(n, seconds, workers):
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return len(list(pool.map(lambda _: time.sleep(seconds), range(n))))


async def asyncio_get(url):
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response.startswith(b"HTTP/1.1 200")


async def asyncio_gets(n, url):
    return sum(await asyncio.gather(*(asyncio_get(url) for _ in range(n))))


def thread_gets(n, url, workers):
    def get(_):
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            return r.status == 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(get, range(n)))


def main(argv):
    work, how, n = argv[1], argv[2], int(argv[3])
    base = peak_rss_bytes()
    start = time.monotonic()
    if work == "sleep" and how == "asyncio":
        done = asyncio.run(asyncio_sleeps(n, float(argv[4]) / 1000))
    elif work == "sleep" and how == "threads":
        done = thread_sleeps(n, float(argv[4]) / 1000, int(argv[5]))
    elif work == "http" and how == "asyncio":
        done = asyncio.run(asyncio_gets(n, argv[4]))
    elif work == "http" and how == "threads":
        done = thread_gets(n, argv[4], int(argv[5]))
    else:
        sys.exit(f"usage: see {argv[0]}")
    wall = time.monotonic() - start
    print(json.dumps({"wall_s": wall, "done": done,
                      "rss_per_job": (peak_rss_bytes() - base) / n}))


if __name__ == "__main__":
    main(sys.argv)
