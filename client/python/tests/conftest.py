"""pytest fixtures: a real jobd binary on a temp Unix socket.

The binary is $JOBD_BIN (ctest sets it), else build/bin/jobd of this tree.
Readiness is its banner's "try:" line on stdout (never a sleep); the daemon
is killed by pid when the fixture ends. Every wait is bounded.
"""

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the jobd package of this tree

READY_TIMEOUT = 20.0


def jobd_binary():
    path = os.environ.get("JOBD_BIN") or os.path.join(
        HERE, "..", "..", "..", "build", "bin", "jobd")
    if not os.access(path, os.X_OK):
        pytest.fail("jobd binary not found at %s (set JOBD_BIN)" % path)
    return path


class Daemon:
    """A jobd process; .address is its Unix socket as a gRPC target. Its
    journal is off unless durability says otherwise ("batched")."""

    def __init__(self, *extra, durability="none"):
        self.dir = tempfile.mkdtemp(prefix="jobd-pytest-")
        self.socket = os.path.join(self.dir, "jobd.sock")
        self.address = "unix:" + self.socket
        self._args = [jobd_binary(), "--unix-socket", self.socket,
                      "--tcp", "127.0.0.1:0", "--testing-tasks",
                      "--state-dir", os.path.join(self.dir, "state"),
                      "--durability", durability, "--log-level", "warn",
                      *extra]
        self._start()

    def _start(self):
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(self._args, stdout=subprocess.PIPE,
                                     stderr=self.stderr,
                                     stdin=subprocess.DEVNULL)
        self._wait_ready()

    def restart(self):
        """A new process on the same socket and state directory (the old
        one killed first if it still runs)."""
        self.kill()
        self._start()

    def _wait_ready(self):
        end = time.monotonic() + READY_TIMEOUT
        out = b""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"try:" not in out:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    self.kill()
                    with open(self.stderr.name, "rb") as f:
                        err = f.read().decode(errors="replace")
                    pytest.fail("jobd did not get ready: %r\n%s" % (out, err))
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        continue
                    out += chunk
        finally:
            sel.close()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stdout.close()
        self.stderr.close()

    def sanitizer_report(self):
        """What ASan/UBSan/LSan wrote to the daemon's log (an ASan build)."""
        with open(self.stderr.name, "rb") as f:
            log = f.read().decode(errors="replace")
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                 "runtime error:")
        return log if any(m in log for m in marks) else ""


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.kill(signal.SIGTERM)  # a clean exit: LeakSanitizer runs
    report = d.sanitizer_report()
    assert not report, "jobd (pid %d) reported:\n%s" % (d.proc.pid, report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test, for fixtures' teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


@pytest.fixture
def own_daemon(request):
    """A daemon for one test (one that kills it). When the test fails, the
    daemons' logs are printed, so that a failure in CI explains itself."""
    holder = []

    def start(*extra, **options):
        holder.append(Daemon(*extra, **options))
        return holder[-1]

    yield start
    for d in holder:
        d.kill()
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for d in holder:
            with open(d.stderr.name, "rb") as f:
                log = f.read().decode(errors="replace")
            print("---- log of jobd pid %d ----\n%s" % (d.proc.pid, log[-20000:]))


@pytest.fixture(autouse=True)
def watchdog():
    """No test may hang: dump the stacks and exit after 30 s."""
    import faulthandler
    faulthandler.dump_traceback_later(30, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
