"""pytest fixtures: a real jobd binary on a temp Unix socket.

The binary is $JOBD_BIN (ctest sets it), else build/bin/jobd of this tree.
Readiness is its banner's "try:" line on stdout (never a sleep); the daemon
is killed by pid when the fixture ends. Every wait is bounded.
"""

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
        # Its TCP address (--tcp 127.0.0.1:0), from the banner.
        for line in out.decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("listening on 127.0.0.1:"):
                self.tcp = line[len("listening on "):]

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

    def remove(self):
        """Deletes its directory (socket, journal, log); after kill()."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def sanitizer_report(self):
        """What ASan/UBSan/LSan wrote to the daemon's log (an ASan build)."""
        with open(self.stderr.name, "rb") as f:
            log = f.read().decode(errors="replace")
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                 "runtime error:")
        return log if any(m in log for m in marks) else ""


class FreezableProxy:
    """A TCP relay on 127.0.0.1 to `target` ("host:port"): freeze() stops
    relaying but keeps every connection open, as a network cut or a host
    gone without a reset looks to both ends."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets = [self._listener]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def freeze(self):
        self._frozen.set()

    def close(self):
        self._closed.set()
        self._thread.join(5)  # (it polls _closed every 50 ms)
        for s in self._sockets:
            s.close()

    def _run(self):
        peers = {}
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)

        def drop(s):
            # That connection ends both ways (a reset, a broken pipe).
            for end in (s, peers.get(s)):
                if end is None:
                    continue
                try:
                    sel.unregister(end)
                except (KeyError, ValueError):
                    pass  # not registered (any more)
                end.close()

        try:
            while not self._closed.is_set():
                for key, _ in sel.select(0.05):
                    s = key.fileobj
                    if s is self._listener:
                        client, _ = s.accept()
                        upstream = socket.create_connection(self._target, 5)
                        upstream.settimeout(None)
                        self._sockets += [client, upstream]
                        peers[client], peers[upstream] = upstream, client
                        sel.register(client, selectors.EVENT_READ)
                        sel.register(upstream, selectors.EVENT_READ)
                        continue
                    if self._frozen.is_set():
                        sel.unregister(s)  # never read again, never closed
                        continue
                    try:
                        data = s.recv(65536)
                        if data:
                            peers[s].sendall(data)
                            continue
                        sel.unregister(s)
                        peers[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        drop(s)
        finally:
            sel.close()


@pytest.fixture
def freezable_proxy():
    holder = []

    def start(target):
        holder.append(FreezableProxy(target))
        return holder[-1]

    yield start
    for p in holder:
        p.close()


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.kill(signal.SIGTERM)  # a clean exit: LeakSanitizer runs
    report = d.sanitizer_report()
    d.remove()
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
    for d in holder:
        d.remove()


@pytest.fixture(autouse=True)
def watchdog():
    """No test may hang: dump the stacks and exit after 30 s."""
    import faulthandler
    faulthandler.dump_traceback_later(30, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
