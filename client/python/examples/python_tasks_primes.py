#!/usr/bin/python3
"""Python functions run as jobd tasks: the concurrent.futures
ProcessPoolExecutor example (is_prime over six large numbers) and a
pure-Python computation over many inputs (Collatz steps of 1..20000,
mapped with chunksize), both in jobd's process pool. Start jobd with the
task module first (README: Python tasks):

    jobd --python-path client/python/examples/tasks \\
         --python-path client/python --python-tasks prime_tasks &
    PYTHONPATH=client/python python3 client/python/examples/python_tasks_primes.py
"""
import time

import jobd

PRIMES = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419]

with jobd.Executor() as executor:  # $JOBD_ADDRESS or jobd's default socket
    start = time.monotonic()
    for number, prime in zip(PRIMES, executor.map("prime_tasks.is_prime",
                                                  PRIMES)):
        print("%d is prime: %s" % (number, prime))
    print("is_prime: %.2f s" % (time.monotonic() - start))

    start = time.monotonic()
    numbers = range(1, 20_001)
    steps = list(executor.map("prime_tasks.collatz", numbers, chunksize=256))
    longest = max(numbers, key=lambda n: steps[n - 1])
    print("collatz: %d inputs in %.2f s; %d takes the most steps (%d)"
          % (len(steps), time.monotonic() - start, longest,
             steps[longest - 1]))

    f = executor.submit("prime_tasks.count_primes", 300_000)
    print("primes below 300000: %d (last progress: %s)"
          % (f.result(), f.progress))
