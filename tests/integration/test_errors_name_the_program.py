"""
A start failure is one line on standard error that begins with the program
the operator ran: C{txflip run: error:} under C{python -m txflip run},
C{twistd flip: error:} under C{twistd flip}; both before the reactor runs
(bad input) and after (the app fails to become ready).
(C{twistd flip} refusing a missing PID file directory is in test_config_errors.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeApp
from tests.support.procs import freePort, twistdCommand

# Ready once "the database" answers; it fails, after the reactor runs.
PROGRAM_WHOSE_DATABASE_FAILS = """
import sys
import txflip
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory

def connect():
    raise RuntimeError("the database is down")

reactor.listenTCP(int(sys.argv[1]), Factory(), interface="127.0.0.1")
txflip.current().waitFor(task.deferLater(reactor, 0.2, connect), "the database")
reactor.run()
"""

SERVICE_WHOSE_DATABASE_FAILS = """
from twisted.application.service import Service
from twisted.internet import reactor, task

def connect():
    raise RuntimeError("the database is down")

class App(Service):
    def startService(self):
        Service.startService(self)
        return task.deferLater(reactor, 0.2, connect)

service = App()
"""


def run(testCase, command: list[str], workdir: str, env=None) -> list[str]:
    """Run C{command}, which must exit 1; its standard error's lines."""
    result = subprocess.run(
        command,
        cwd=workdir,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    testCase.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # A program that never began logging shows flip's log lines on standard
    # error (txflip.programlog); the error is said once, in its own line, last.
    testCase.assertEqual(
        [line for line in lines[:-1] if "[txflip gen" not in line], [], result.stderr
    )
    reason = lines[-1].partition(": error: ")[2][:40] if lines else ""
    testCase.assertEqual([line for line in lines[:-1] if reason in line], [], "said twice")
    return lines[-1:]


class LauncherErrorTests(TestCase):
    def setUp(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="txflip-test-")
        self.program = os.path.join(self.workdir, "program.py")
        with open(self.program, "w") as f:
            f.write(PROGRAM_WHOSE_DATABASE_FAILS)

    def test_missingPidFileDirectory(self) -> None:
        """Bad input, refused before the program runs."""
        lines = run(
            self,
            [sys.executable, "-m", "txflip", "run", "--pid-file", "/nonexistent-txflip-dir/x.pid"]
            + [self.program, str(freePort())],
            self.workdir,
        )
        self.assertEqual(
            lines,
            [
                "txflip run: error: PID file directory /nonexistent-txflip-dir does not exist: "
                "create it or choose another --pid-file"
            ],
        )

    def test_notReady(self) -> None:
        """The program's readiness fails once the reactor runs."""
        pidFile = os.path.join(self.workdir, "x.pid")
        lines = run(
            self,
            [sys.executable, "-m", "txflip", "run", "--pid-file", pidFile]
            + [self.program, str(freePort())],
            self.workdir,
        )
        self.assertEqual(
            lines,
            ["txflip run: error: the database failed: RuntimeError: the database is down"],
        )
        self.assertFalse(os.path.exists(pidFile))


class TwistdErrorTests(TestCase):
    def test_notReady(self) -> None:
        """The app's startService Deferred fails once the reactor runs."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "failing", SERVICE_WHOSE_DATABASE_FAILS)
        pidFile = os.path.join(workdir, "x.pid")
        lines = run(
            self,
            [*twistdCommand(), "-n", "flip", "--pid-file", pidFile, "--app", "failing.service"],
            workdir,
            appEnv(workdir),
        )
        self.assertEqual(
            lines,
            [
                "twistd flip: error: the app's startService Deferred failed: "
                "RuntimeError: the database is down"
            ],
        )
        self.assertFalse(os.path.exists(pidFile))
