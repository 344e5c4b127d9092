#!/usr/bin/python3
"""Callbacks with add_done_callback: each runs once, when its job ends (on
the client's event thread), or at once in the caller's thread if the job has
already ended, as with the standard library.

    python3 client/python/examples/callbacks.py
"""
import threading

import jobd

pending = 3
all_called = threading.Event()
lock = threading.Lock()


def call_back(fut):
    global pending
    print("callback on %s: job %s -> %r" % (
        threading.current_thread().name, fut.job_id, fut.result()))
    with lock:
        pending -= 1
        if pending == 0:
            all_called.set()


with jobd.Executor() as executor:
    print("Main: " + threading.current_thread().name)
    futs = [executor.submit("sleep", ms) for ms in (400, 100, 200)]
    for fut in futs:
        fut.add_done_callback(call_back)  # before they end
    all_called.wait(timeout=30)
    pending = 1
    futs[0].add_done_callback(call_back)  # after: runs at once, here
    failing = executor.submit("fail", "no such file")
    failing.add_done_callback(lambda f: print("failed:", f.exception()))
