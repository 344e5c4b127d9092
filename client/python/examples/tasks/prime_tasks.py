"""CPU-bound Python functions as jobd tasks: the ProcessPoolExecutor
example's is_prime, a pure-Python prime count, and a tiny function to map
over many inputs. jobd imports this module in its process-pool workers:

    jobd --python-path client/python/examples/tasks \\
         --python-path client/python --python-tasks prime_tasks

(the second --python-path lets the workers `import jobd`; an installed jobd
finds its own copy). Run from python_tasks_primes.py.
"""
import math

import jobd


@jobd.task
def is_prime(n: int) -> bool:
    """True if n is prime (trial division by odd numbers)."""
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False
    sqrt_n = int(math.floor(math.sqrt(n)))
    for i in range(3, sqrt_n + 1, 2):
        if n % i == 0:
            return False
    return True


@jobd.task
def count_primes(limit: int) -> int:
    """How many primes are below limit; reports progress as it goes."""
    count = 0
    for n in range(limit):
        if n % 100_000 == 0:
            jobd.progress(n / max(limit, 1), "%d checked" % n)
            if jobd.cancelled():
                raise RuntimeError("cancelled at %d" % n)
        if is_prime(n):
            count += 1
    return count


@jobd.task(name="prime_tasks.collatz")
def collatz_steps(n: int) -> int:
    """Steps of the Collatz sequence from n down to 1."""
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps
