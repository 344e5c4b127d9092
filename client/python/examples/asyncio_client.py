#!/usr/bin/python3
"""The asyncio hello/gather example redone with jobd.aio: three jobs wait
one second each at once on jobd's reactor; then asyncio.as_completed and the
client's own `async for` over completions, and an ordered map.

    python3 client/python/examples/asyncio_client.py
"""
import asyncio
import time

import jobd.aio


async def main():
    async with jobd.aio.Client() as client:
        start = time.monotonic()
        jobs = [await client.submit("sleep", 1000) for _ in range(3)]
        print("submitted jobs", [j.job_id for j in jobs])
        await asyncio.gather(*jobs)
        print("3 x 1 s in %.1f s" % (time.monotonic() - start))

        jobs = [await client.submit("sleep", ms) for ms in (300, 100, 200)]
        for next_done in asyncio.as_completed(jobs, timeout=10):
            print("as_completed:", await next_done)
        jobs = [await client.submit("echo", w) for w in ("a", "b", "c")]
        async for job in client.as_completed(jobs, timeout=10):
            print("async for:", job.job_id, job.result())
        counts = [c async for c in client.options(kind="cpu").map(
            "primes.count", [10, 100, 1000])]
        print("primes below 10, 100, 1000:", counts)


asyncio.run(main())
