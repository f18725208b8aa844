"""
Real processes for the tests: start C{twistd -n flip}, wait for conditions with
deadlines, and stop every process that was started, by PID, even on failure.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from txflip.control import client

DEFAULT_DEADLINE = 60.0


class DeadlineExceeded(AssertionError):
    pass


def waitFor(
    predicate: Callable[[], Any],
    what: str,
    deadline: float = DEFAULT_DEADLINE,
    seen: Callable[[], object] | None = None,
    longestPause: float = 0.2,
):
    """
    Poll C{predicate} until it returns something true, and return that; fail
    after C{deadline} seconds, saying what C{seen()} returns then, if given.
    The pauses between polls grow from 10 ms to C{longestPause}: a test that
    times what it waited for keeps that small.
    """
    end = time.monotonic() + deadline
    delay = min(0.01, longestPause)
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > end:
            raise DeadlineExceeded(
                f"gave up after {deadline}s waiting for {what}"
                + (f": {seen()}" if seen is not None else "")
            )
        time.sleep(delay)
        delay = min(delay * 1.5, longestPause)


def waitUntil(condition: Callable[[], Any], what: str, deadline: float = DEFAULT_DEADLINE):
    """
    L{waitFor} for a test that runs in the reactor: a Deferred that fires once
    C{condition()} holds, polled without blocking the reactor, or fails after
    C{deadline} seconds.
    """
    # Imported here, so that importing this module (benchmarks/ does) installs no reactor.
    from twisted.internet import defer, reactor, task

    @defer.inlineCallbacks
    def poll():
        end = time.monotonic() + deadline
        while not condition():
            if time.monotonic() > end:
                raise DeadlineExceeded(f"gave up after {deadline}s waiting for {what}")
            yield task.deferLater(reactor, 0.02, lambda: None)

    return poll()


def askStatus(controlPath: str, timeout: float = 30.0) -> dict:
    """What C{txflip status --json} prints, asked as it asks: connect, retrying a full queue."""
    skt = client.connect(controlPath, timeout)
    try:
        skt.sendall(b"status\n")
        return next(client.messages(skt, time.monotonic() + timeout))
    finally:
        skt.close()


def shortTempDir(testCase) -> str:
    """A directory short enough for unix socket paths (108 bytes), removed afterwards."""
    path = tempfile.mkdtemp(prefix="txflip-ops-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def txflipCommand(*args: str) -> list[str]:
    """The C{txflip} command line (as the console script would run it), for C{Popen}."""
    return [
        sys.executable,
        "-c",
        "import sys; from txflip.control.client import main; sys.exit(main())",
        *args,
    ]


def txflip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the C{txflip} command (as the console script would) and capture its output."""
    return subprocess.run(txflipCommand(*args), capture_output=True, text=True, timeout=timeout)


def freePort(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pidAlive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def readPidFile(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def childrenOf(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def openFds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fdTargets(pid: int) -> list[str]:
    """What each open descriptor of C{pid} points at, sorted."""
    targets = []
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        targets.append("socket" if target.startswith("socket:") else target)
    return sorted(targets)


def httpGet(
    host: str, port: int, path: str = "/", timeout: float = 10.0, family=socket.AF_INET
) -> tuple[int, dict, bytes]:
    return oneGet(http.client.HTTPConnection(host, port, timeout=timeout), path)


def oneGet(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict, bytes]:
    """One GET on C{conn}, which is closed after it: status, headers and body."""
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class BackgroundGet:
    """One GET in a thread: C{response} or C{error} once C{join} returns."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0) -> None:
        self.response: tuple[int, dict, bytes] | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, args=(host, port, path, timeout), daemon=True
        )
        self._thread.start()

    def _run(self, host: str, port: int, path: str, timeout: float) -> None:
        try:
            self.response = httpGet(host, port, path, timeout=timeout)
        except Exception as e:
            self.error = e

    def join(self, timeout: float = 60.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request never ended"


def ipv6LoopbackWorks() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class UNIXHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def servedBy(
    port: int | str, host: str = "127.0.0.1", path: str = "/sleep?seconds=0"
) -> int | None:
    """
    The PID that answered a GET (its C{X-Served-By} header) on C{port} of
    C{host}, or on the unix socket C{port} names; None if nobody did.
    """
    if isinstance(port, str):
        conn = UNIXHTTPConnection(port, timeout=5)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        status, headers, _ = oneGet(conn, path)
    except OSError:
        return None
    if status != 200:
        return None
    return int({name.lower(): value for name, value in headers.items()}["x-served-by"])


def twistdCommand() -> list[str]:
    """How to run twistd with this interpreter: its script beside it, or the module."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Flip:
    """
    One C{twistd -n flip} and every generation it becomes.

    Every generation logs to the same standard output, a file opened for
    appending: lines from two generations never overwrite each other (as they
    would with twistd's own --logfile, which each process opens and rotates on
    its own).

    All PIDs ever seen (the first process, PID file contents, children) are
    remembered, and L{stop} kills whichever are still alive.
    """

    def __init__(
        self, testCase, args: list[str], workdir: str | None = None, env=None, twistdArgs=()
    ) -> None:
        self.twistdArgs = list(twistdArgs)
        """twistd's own options, before C{-n flip}."""
        self.workdir = workdir or tempfile.mkdtemp(prefix="txflip-test-")
        self.pidFile = os.path.join(self.workdir, "flip.pid")
        self.logPath = os.path.join(self.workdir, "flip.log")
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("TXFLIP_DEMO_DB", os.path.join(self.workdir, "demo.sqlite3"))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.seen: set[int] = set()
        self.process: subprocess.Popen | None = None
        testCase.addCleanup(self.stop)

    def command(self) -> list[str]:
        return [
            *twistdCommand(),
            *self.twistdArgs,
            "-n",
            "flip",
            "--pid-file",
            self.pidFile,
            *self.args,
        ]

    def start(self, waitReady: bool = True, passFds: tuple[int, ...] = ()) -> int:
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.logPath, "ab"),
            stderr=open(os.path.join(self.workdir, "stderr.log"), "ab"),
            start_new_session=True,
            pass_fds=passFds,
        )
        self.seen.add(self.process.pid)
        if waitReady:
            self.waitServing(self.process.pid)
        return self.process.pid

    def log(self) -> str:
        try:
            with open(self.logPath, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stderr(self) -> str:
        with open(os.path.join(self.workdir, "stderr.log"), errors="replace") as f:
            return f.read()

    def waitLog(self, text: str, deadline: float = DEFAULT_DEADLINE, count: int = 1) -> None:
        waitFor(lambda: self.log().count(text) >= count, f"log line {text!r} x{count}", deadline)

    def pid(self) -> int | None:
        pid = readPidFile(self.pidFile)
        if pid is not None:
            self.seen.add(pid)
        return pid

    def waitServing(self, pid: int, deadline: float = DEFAULT_DEADLINE) -> None:
        """Wait until C{pid} is in the PID file and logs that it serves."""

        def serving():
            if (
                self.process is not None
                and self.process.poll() is not None
                and (pid == self.process.pid)
            ):
                raise AssertionError(
                    f"flip exited with {self.process.returncode}: {self.stderr()[-2000:]}"
                )
            if self.pid() != pid:
                return False
            return f"pid {pid}] serving" in self.log()

        waitFor(serving, f"PID {pid} serving", deadline)

    def status(self) -> dict:
        """What C{txflip status --json} says, asked over the control socket beside the PID file."""
        return askStatus(self.pidFile + ".control")

    def restart(self, deadline: float = DEFAULT_DEADLINE) -> int:
        """SIGHUP the serving generation; return the PID that took over."""
        old = self.pid()
        assert old is not None, "no PID file"
        os.kill(old, signal.SIGHUP)
        new = waitFor(
            lambda: (p := self.pid()) != old and p is not None and p, "a new PID", deadline
        )
        self.waitServing(new, deadline)
        waitFor(lambda: not pidAlive(old), f"old PID {old} to exit", deadline)
        return new

    def restartsUnderLoad(self, load, count: int) -> list[int]:
        """
        C{count} restarts while C{load} runs, each followed by more requests,
        so that every generation is really loaded; return the new PIDs.
        """
        waitFor(lambda: load.totalRequests() > 20, "load to get going")
        pids = []
        for _ in range(count):
            before = load.totalRequests()
            pids.append(self.restart())
            waitFor(
                lambda before=before: load.totalRequests() > before + 10,
                "requests after a restart",
            )
        return pids

    def aliveGenerations(self) -> list[int]:
        """Every process this flip ever ran that is still alive: first, logged and PID-file PIDs."""
        for match in re.finditer(r"started generation \d+ as PID (\d+)", self.log()):
            self.seen.add(int(match.group(1)))
        for pid in list(self.seen):
            for child in childrenOf(pid):
                self.seen.add(child)
        return sorted(pid for pid in self.seen if pidAlive(pid))

    def terminate(self, deadline: float = DEFAULT_DEADLINE) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            waitFor(lambda: not pidAlive(pid), f"PID {pid} to exit after SIGTERM", deadline)

    def stop(self) -> None:
        for pid in self.aliveGenerations():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in list(self.seen):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def demoFlip(testCase, *extra: str) -> tuple[Flip, int]:
    """A flip, not started, serving the demo on a free port of 127.0.0.1; and that port."""
    port = freePort()
    return Flip(testCase, ["--listen", f"tcp:{port}:interface=127.0.0.1", *extra]), port


def refusedAtStart(
    testCase, flipArgs: list[str], twistdArgs: tuple[str, ...] = (), workdir=None, env=None
) -> str:
    """
    Run C{twistd -n [twistdArgs] flip [flipArgs]}, which must refuse to start
    with exactly one C{twistd flip: error:} line and no PID file; return that line.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="txflip-test-")
    result = subprocess.run(
        [*twistdCommand(), "-n", *twistdArgs, "flip", *flipArgs],
        cwd=workdir,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    testCase.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    testCase.assertEqual(len(errors), 1, result.stderr)
    testCase.assertTrue(errors[0].startswith("twistd flip: error: "), errors[0])
    testCase.assertFalse(os.path.exists(os.path.join(workdir, "twistd.pid")))
    return errors[0]
