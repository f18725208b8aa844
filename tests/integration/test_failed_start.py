"""
A first generation that cannot start: it says why once, exits 1, and leaves
no socket file behind (neither the control socket nor a unix listener).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeApp
from tests.support.procs import freePort, twistdCommand


class BadAppTests(TestCase):
    def test_noControlSocketLeft(self):
        """The control socket is open before the app is loaded; a bad --app removes it."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        pidFile = os.path.join(workdir, "flip.pid")
        result = subprocess.run(
            [*twistdCommand(), "-n", "flip", "--pid-file", pidFile, "--app", "txflip_no_such_app"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("no module named 'txflip_no_such_app'", result.stderr)
        self.assertEqual(os.listdir(workdir), [])


NEVER_READY_SERVICE = """
from twisted.application.service import Service
from twisted.internet.defer import Deferred

class NeverReady(Service):
    def startService(self):
        Service.startService(self)
        return Deferred()

service = NeverReady()
"""


class NotReadyTests(TestCase):
    def test_readyTimeoutOnOneTerminal(self):
        """
        A first generation that is never ready: the reason once on a terminal
        that shows both the log and standard error, and no socket file left.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "neverready", NEVER_READY_SERVICE)
        path = os.path.join(workdir, "terminal.log")
        with open(path, "wb") as out:
            result = subprocess.run(
                [
                    *twistdCommand(),
                    "-n",
                    "flip",
                    "--pid-file",
                    os.path.join(workdir, "flip.pid"),
                    "--app",
                    "neverready.service",
                    "--ready-timeout",
                    "1",
                ],
                cwd=workdir,
                env=appEnv(workdir),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
            )
        with open(path, errors="replace") as f:
            output = f.read()
        self.assertEqual(result.returncode, 1, output)
        self.assertEqual(output.count("not ready within the ready timeout of 1s"), 1, output)
        self.assertEqual(
            sorted(n for n in os.listdir(workdir) if n != "__pycache__"),
            ["neverready.py", "terminal.log"],
        )


class BusyPortTests(TestCase):
    def setUp(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="txflip-test-")
        self.pidFile = os.path.join(self.workdir, "flip.pid")
        self.unixPath = os.path.join(self.workdir, "app.sock")
        self.port = freePort()
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", self.port))
        busy.listen()

    def _start(self, stdout, stderr) -> int:
        command = [
            *twistdCommand(),
            "-n",
            "flip",
            "--pid-file",
            self.pidFile,
            "--listen",
            f"unix:{self.unixPath}",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
        ]
        env = dict(os.environ, TXFLIP_DEMO_DB=os.path.join(self.workdir, "demo.sqlite3"))
        # subprocess.run kills the process if it outlives the timeout.
        return subprocess.run(
            command, cwd=self.workdir, env=env, stdout=stdout, stderr=stderr, timeout=60
        ).returncode

    def _leftovers(self) -> list[str]:
        return sorted(n for n in os.listdir(self.workdir) if not n.endswith(".log"))

    def test_oneTerminal(self):
        """
        Log and errors on one terminal (C{twistd -n} at a shell): the reason is
        printed once, and no socket file stays behind.
        """
        path = os.path.join(self.workdir, "terminal.log")
        with open(path, "wb") as out:
            code = self._start(out, subprocess.STDOUT)
        with open(path, errors="replace") as f:
            output = f.read()
        self.assertEqual(code, 1, output)
        self.assertEqual(output.count("Address already in use"), 1, output)
        self.assertIn(f"cannot listen on tcp:{self.port}:interface=127.0.0.1", output)
        self.assertEqual(self._leftovers(), [])

    def test_logAndStderrApart(self):
        """
        Log and standard error in different places (a supervisor that keeps
        them apart): each one gets the reason once.
        """
        logPath = os.path.join(self.workdir, "out.log")
        errPath = os.path.join(self.workdir, "err.log")
        with open(logPath, "wb") as out, open(errPath, "wb") as err:
            code = self._start(out, err)
        with open(logPath, errors="replace") as f:
            log = f.read()
        with open(errPath, errors="replace") as f:
            stderr = f.read()
        self.assertEqual(code, 1, log + stderr)
        self.assertEqual(stderr.count("Address already in use"), 1, stderr)
        self.assertEqual(log.count("Address already in use"), 1, log)
        self.assertEqual(self._leftovers(), [])
