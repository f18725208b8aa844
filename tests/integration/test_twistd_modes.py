"""
flip under twistd's own modes: daemonized (the first generation detaches, as
under systemd's Type=forking), twistd's --logfile shared by two overlapping
generations, and a command line that does not grow over restarts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.load import Load
from tests.support.procs import (
    demoFlip,
    freePort,
    pidAlive,
    readPidFile,
    servedBy,
    twistdCommand,
    waitFor,
)

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[")


class TwistdModeTests(TestCase):
    def _flip(self, twistdArgs: list[str], workdir: str, port: int) -> subprocess.Popen:
        pidFile = os.path.join(workdir, "flip.pid")
        seen: set[int] = set()

        def cleanup():
            pid = readPidFile(pidFile)
            for p in seen | ({pid} if pid else set()):
                if pidAlive(p):
                    os.kill(p, signal.SIGKILL)

        self.addCleanup(cleanup)
        self.seen = seen
        return subprocess.Popen(
            [
                *twistdCommand(),
                *twistdArgs,
                "flip",
                "--pid-file",
                pidFile,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=workdir,
            env=dict(os.environ, TXFLIP_DEMO_DB=os.path.join(workdir, "demo.sqlite3")),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _restart(self, pidFile: str, port: int) -> int:
        old = readPidFile(pidFile)
        self.seen.add(old)
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := readPidFile(pidFile)) not in (None, old) and p, "a new PID")
        self.seen.add(new)
        waitFor(lambda: servedBy(port) == new, "the new PID to answer")
        waitFor(lambda: not pidAlive(old), "the old PID to exit")
        return new

    def test_daemonized(self):
        """Without -n the first generation detaches; its successors do not, and log where it did."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        pidFile = os.path.join(workdir, "flip.pid")
        launcher = self._flip([], workdir, port)
        self.assertEqual(launcher.wait(60), 0)
        first = waitFor(lambda: readPidFile(pidFile), "the daemon's PID file")
        self.assertNotEqual(first, launcher.pid)
        waitFor(lambda: servedBy(port) == first, "the daemon to answer")
        second = self._restart(pidFile, port)
        third = self._restart(pidFile, port)
        os.kill(third, signal.SIGTERM)
        waitFor(lambda: not pidAlive(third), "the last generation to exit")
        with open(os.path.join(workdir, "twistd.log")) as f:
            log = f.read()
        for pid in (first, second, third):
            self.assertIn(f"pid {pid}] serving", log)
        self.assertIn(f"[txflip gen 3 pid {third}] generation exits (shut down)", log)

    def test_sharedLogfileKeepsEveryLine(self):
        """Two generations writing twistd's --logfile during handoffs never clobber a line."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        pidFile = os.path.join(workdir, "flip.pid")
        logPath = os.path.join(workdir, "flip.log")
        self._flip(["-n", "--logfile", logPath], workdir, port)
        waitFor(lambda: servedBy(port), "flip to answer")
        # Requests of 10 ms each keep the log under twistd's 1 MB rotation, which
        # each process does on its own (a documented limit of --logfile).
        kinds = ("newConnection", "keepAliveGet")
        with Load("127.0.0.1", port, kinds=kinds, path="/sleep?seconds=0.01") as load:
            for _ in range(3):
                self._restart(pidFile, port)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertFalse(os.path.exists(logPath + ".1"), "the log rotated: the test proves less")
        with open(logPath) as f:
            lines = f.read().splitlines()
        broken = [line for line in lines if not LOG_LINE.match(line)]
        self.assertEqual(broken[:5], [])
        # Every request served left its access-log line, across every generation.
        requestLines = [line for line in lines if '"GET /sleep' in line]
        self.assertGreater(load.totalRequests(), 10)
        self.assertGreaterEqual(len(requestLines), load.totalRequests())


class CommandLineTests(TestCase):
    def test_commandLineDoesNotGrow(self):
        flip, _ = demoFlip(self)
        flip.start()
        for _ in range(3):
            pid = flip.restart()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        self.assertEqual(argv.count(b"--pidfile="), 1, argv)
