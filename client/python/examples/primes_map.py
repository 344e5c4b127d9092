#!/usr/bin/python3
"""CPU-bound: ProcessPoolExecutor.map(is_prime, PRIMES, chunksize=...) redone
with jobd. jobd's built-in primes.count(n) counts the primes below n by
trial division in its process pool; chunksize lets a worker take several
jobs in one frame, as the stdlib's chunksize does.

    python3 client/python/examples/primes_map.py
"""
import time

import jobd

NUMBERS = range(10_000, 1_010_000, 10_000)  # 100 inputs

with jobd.Executor() as executor:  # $JOBD_ADDRESS or jobd's default socket
    cpu = executor.options(kind="cpu")
    start = time.monotonic()
    for n, count in zip(NUMBERS, cpu.map("primes.count", NUMBERS,
                                         chunksize=4)):
        if n % 250_000 == 0:
            print("%9d has %6d primes below it" % (n, count))
    print("%d inputs in %.2f s" % (len(NUMBERS), time.monotonic() - start))
