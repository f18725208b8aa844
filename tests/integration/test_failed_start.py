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

from tests.support.procs import freePort, twistdCommand


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
