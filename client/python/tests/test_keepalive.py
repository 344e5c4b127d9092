"""Keepalive pings against a real jobd: a quiet stream is not ended for
pinging (jobd accepts a ping a second), and a connection that went silent
without a reset (a relay that froze) is noticed by a client that only
reads, the Python client's and jobctl's (the C++ client's) alike."""

import os
import subprocess
import time

import pytest

import jobd
from conftest import jobd_binary
from jobd.v1 import jobd_pb2 as pb

T = 10  # seconds: the bound of every wait below
NOTICED = 1 + 1 + 3  # a ping, its timeout (both 1 s here), slack


def wait_until(pred, timeout=T):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_the_python_client_notices_a_dead_connection(own_daemon,
                                                     freezable_proxy):
    d = own_daemon()
    proxy = freezable_proxy(d.tcp)
    ex = jobd.Executor(proxy.address, keepalive=1, reconnect_timeout=0)
    assert ex.submit("sleep", 5000).result(T) == 5000  # 5 pings, quiet
    f = ex.submit("sleep", 30000)
    wait_until(f.running)
    t0 = time.monotonic()
    proxy.freeze()
    with pytest.raises(jobd.ConnectionLost):
        f.result(T)
    assert time.monotonic() - t0 < NOTICED
    ex.shutdown(wait=False)


def test_jobctl_notices_a_dead_connection(own_daemon, freezable_proxy):
    d = own_daemon()
    proxy = freezable_proxy(d.tcp)
    jobctl = os.path.join(os.path.dirname(jobd_binary()), "jobctl")
    ex = jobd.Executor(d.address)
    f = ex.submit("sleep", 30000)
    try:
        wait_until(f.running)
        # Its latest event (STARTED) replayed: a line once jobctl is in.
        last = ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id),
                              timeout=T).last_sequence
        watch = subprocess.Popen(
            [jobctl, "--address", proxy.address, "--keepalive", "1s",
             "watch", f.job_id, "--after", str(last - 1)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert watch.stdout.readline()  # (bounded by the watchdog)
            # Quiet for 5 s: still watching, not ended for its pings.
            with pytest.raises(subprocess.TimeoutExpired):
                watch.wait(5)
            t0 = time.monotonic()
            proxy.freeze()
            assert watch.wait(T) != 0
            assert time.monotonic() - t0 < NOTICED
            assert b"unavailable" in watch.stderr.read()
        finally:
            watch.kill()
            watch.wait()
            watch.stdout.close()
            watch.stderr.close()
        assert ex.stub.GetJob(pb.GetJobRequest(job_id=f.job_id),
                              timeout=T).state == pb.JOB_STATE_RUNNING
    finally:
        f.cancel()
        ex.shutdown(wait=False)


def test_a_keepalive_under_a_second_is_refused(daemon):
    with pytest.raises(ValueError, match="keepalive: at least 1 s"):
        jobd.Executor(daemon.address, keepalive=0.5)
    jobctl = os.path.join(os.path.dirname(jobd_binary()), "jobctl")
    out = subprocess.run([jobctl, "--address", daemon.address,
                          "--keepalive", "500ms", "ls"],
                         capture_output=True, timeout=T)
    assert out.returncode != 0
    assert b"--keepalive: at least 1s" in out.stderr
