"""The Python tasks py_tasks_bench.py measures, in jobd's process pool and
in ProcessPoolExecutor alike (the decorator returns the function as is)."""

import os

import jobd


@jobd.task
def noop(x):
    return x


@jobd.task
def count_primes(limit: int) -> int:
    """Pure-Python trial division: the primes below limit."""
    count = 0
    for n in range(2, limit):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


@jobd.task
def pid() -> int:
    return os.getpid()


@jobd.task
def count_primes_where(limit: int) -> list:
    """count_primes(limit) and the pid of the worker that ran it."""
    return [os.getpid(), count_primes(limit)]
