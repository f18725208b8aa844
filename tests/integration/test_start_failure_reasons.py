"""
Why a new generation could not start reaches the operator word for word: in
the parent's log, in C{txflip reload}'s answer and in C{txflip status}, not
just on the child's own standard error (which, under a detached twistd, goes
nowhere).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import GOOD_RESOURCE, appEnv, writeApp
from tests.support.mounts import fill, tinyTmpfs
from tests.support.procs import Flip, freePort, twistdCommand, txflip, waitFor

EXITS_WITH_A_MESSAGE = """
import sys
sys.exit("release %(release)s: /etc/myrelease.conf is missing")
"""


class ReasonTests(TestCase):
    def startRelease(self, workdir: str | None = None, **flipArgs) -> Flip:
        workdir = workdir or tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
        port = freePort()
        flip = Flip(
            self,
            ["--app", "myrelease.resource", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            workdir=workdir,
            env=appEnv(workdir),
            **flipArgs,
        )
        return flip

    def assertReasonEverywhere(self, flip: Flip, old: int, reason: str) -> None:
        """A reload fails with C{reason}, and the log and the status say it too."""
        reload = txflip("reload", "--control", flip.control)
        self.assertEqual(reload.returncode, 1, reload.stdout + reload.stderr)
        self.assertIn(reason, reload.stdout)
        self.assertIn(f"generation 1 (PID {old}) keeps serving", reload.stdout)
        flip.waitLog("keeps serving")
        parentLines = [
            line for line in flip.log().splitlines() if f"[txflip gen 1 pid {old}]" in line
        ]
        self.assertTrue(any(reason in line for line in parentLines), "\n".join(parentLines))
        status = txflip("status", "--control", flip.control)
        self.assertEqual(status.returncode, 0, status.stderr)
        lastRestart = [line for line in status.stdout.splitlines() if "last restart" in line]
        self.assertIn(reason, lastRestart[0])
        waitFor(lambda: flip.aliveGenerations() == [old], "only the old generation to be left")
        self.assertEqual(flip.pid(), old)

    def test_pidFileOnAFullDisk(self):
        """
        The PID file's filesystem is full when the new generation, told to go,
        writes its PID: the parent hears "No space left on device", not only
        that the child exited with code 1. (A real 256 KiB tmpfs, filled up.)
        """
        disk = tinyTmpfs(self)
        flip = self.startRelease()
        flip.pidFile = os.path.join(disk, "flip.pid")
        flip.control = os.path.join(flip.workdir, "control.sock")
        flip.args += ["--control", flip.control]
        old = flip.start()
        fill(disk)
        self.assertReasonEverywhere(
            flip, old, f"cannot write PID file {flip.pidFile}: No space left on device"
        )

    def test_twistdCannotOpenItsLogFile(self):
        """
        An error raised after the app loaded, by twistd itself, before the
        reactor runs: the next generation cannot open the log file. The first
        generation runs detached here, so the child's standard error is
        /dev/null, and the channel is the only way the reason can get out.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        logFile = os.path.join(workdir, "logs", "twistd.log")
        os.mkdir(os.path.dirname(logFile))
        flip = self.startRelease(workdir)
        flip.control = os.path.join(workdir, "control.sock")
        flip.args += ["--control", flip.control]
        flip.command = lambda: [
            *twistdCommand(),
            f"--logfile={logFile}",
            "flip",
            "--pid-file",
            flip.pidFile,
            *flip.args,
        ]
        flip.logPath = logFile
        flip.start(waitReady=False)
        old = waitFor(flip.pid, "the detached first generation's PID file")
        flip.waitServing(old)
        # The next generation opens the same path: make it a directory.
        shutil.move(logFile, logFile + ".1")
        os.mkdir(logFile)
        flip.logPath = logFile + ".1"
        self.assertReasonEverywhere(
            flip, old, f"IsADirectoryError: [Errno 21] Is a directory: '{logFile}'"
        )

    def test_appExitsAtImport(self):
        """A release that calls sys.exit("why") at import: the parent hears why."""
        flip = self.startRelease()
        flip.control = os.path.join(flip.workdir, "control.sock")
        flip.args += ["--control", flip.control]
        old = flip.start()
        writeApp(flip.workdir, "myrelease", EXITS_WITH_A_MESSAGE, release="2")
        self.assertReasonEverywhere(flip, old, "release 2: /etc/myrelease.conf is missing")
