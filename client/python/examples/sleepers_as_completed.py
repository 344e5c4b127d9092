#!/usr/bin/python3
"""IO-bound fan-out with as_completed: the ThreadPoolExecutor sleeper
example redone with jobd; its `sleep` task waits on jobd's reactor, so all
three wait at once. With URLs as arguments, it fetches them with jobd's
http.get instead (public addresses only, unless jobd has --http-allow).

    python3 client/python/examples/sleepers_as_completed.py
    python3 client/python/examples/sleepers_as_completed.py https://example.com/
"""
import sys
import time
from concurrent.futures import as_completed

import jobd

with jobd.Executor() as executor:
    start = time.monotonic()
    if len(sys.argv) > 1:
        futs = {executor.submit("http.get", url, timeout_ms=10_000): url
                for url in sys.argv[1:]}
        for fut in as_completed(futs, timeout=30):
            try:
                r = fut.result()
                print("%s: HTTP %d, %d bytes in %d ms" % (
                    futs[fut], r["status"], r["body_bytes"], r["elapsed_ms"]))
            except jobd.JobFailed as e:
                print("%s: %s" % (futs[fut], e))
    else:
        times = [4, 1, 2]
        futs = [executor.submit("sleep", secs * 1000) for secs in times]
        for fut in as_completed(futs, timeout=30):
            print("I slept for %d seconds" % (fut.result() // 1000))
    print("%.1f s" % (time.monotonic() - start))
