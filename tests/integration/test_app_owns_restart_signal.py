"""
An app with a SIGHUP handler of its own (Buildbot reloads its configuration on
SIGHUP): with C{--restart-signal USR2} both work, and without it flip says that
SIGHUP no longer restarts; C{txflip reload} always does.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import OWNS_SIGHUP, appEnv, writeApp
from tests.support.procs import Flip, freePort, httpGet, refusedAtStart, txflip, waitFor

WARNING = "the app installed its own SIGHUP handler"


def ownsSighupFlip(testCase, *extra: str) -> tuple[Flip, int]:
    """A flip, not started, serving L{OWNS_SIGHUP}; and its port."""
    workdir = tempfile.mkdtemp(prefix="txflip-test-")
    port = freePort()
    writeApp(workdir, "ownssighup", OWNS_SIGHUP, port=port)
    flip = Flip(testCase, ["--app", "ownssighup.makeService", *extra], workdir, appEnv(workdir))
    return flip, port


def status(port: int) -> dict:
    return json.loads(httpGet("127.0.0.1", port, "/")[2])


class RestartSignalTests(TestCase):
    def hangUpReachesTheApp(self, flip: Flip, port: int, pid: int) -> None:
        os.kill(pid, signal.SIGHUP)
        waitFor(lambda: status(port) == {"pid": pid, "reloads": 1}, f"PID {pid}'s app to reload")
        self.assertEqual(flip.pid(), pid)

    def restartOn(self, flip: Flip, signum: int) -> int:
        old = flip.pid()
        os.kill(old, signum)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "the next generation")
        flip.waitServing(new)
        return new

    def test_usr2RestartsAndSighupReachesTheApp(self) -> None:
        """With --restart-signal USR2, in every generation: HUP is the app's, USR2 restarts."""
        flip, port = ownsSighupFlip(self, "--restart-signal", "USR2")
        first = flip.start()
        self.hangUpReachesTheApp(flip, port, first)
        second = self.restartOn(flip, signal.SIGUSR2)
        self.hangUpReachesTheApp(flip, port, second)
        third = self.restartOn(flip, signal.SIGUSR2)
        self.assertEqual(status(port), {"pid": third, "reloads": 0})
        log = flip.log()
        self.assertIn(f"[txflip gen 1 pid {first}] SIGUSR2: starting generation 2", log)
        self.assertIn(f"[txflip gen 2 pid {second}] restarts on SIGUSR2 (--restart-signal)", log)
        self.assertNotIn("installed its own", log)

    def test_withoutItFlipWarnsOnceAndReloadStillRestarts(self) -> None:
        flip, port = ownsSighupFlip(self)
        first = flip.start()
        flip.waitLog(WARNING)
        self.hangUpReachesTheApp(flip, port, first)
        [warning] = [line for line in flip.log().splitlines() if WARNING in line]
        self.assertIn(f"[txflip gen 1 pid {first}]", warning)
        self.assertIn("so SIGHUP no longer restarts", warning)
        self.assertIn(f"restart with `txflip reload --pid-file {flip.pidFile}`", warning)
        self.assertIn("--restart-signal USR2", warning)
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        second = flip.pid()
        self.assertNotEqual(second, first)
        flip.waitServing(second)
        self.assertEqual(status(port), {"pid": second, "reloads": 0})
        self.assertEqual(flip.log().count(f"[txflip gen 1 pid {first}] the app installed"), 1)

    def test_badRestartSignalIsOneLine(self) -> None:
        line = refusedAtStart(self, ["--restart-signal", "TERM"])
        self.assertIn("--restart-signal TERM: flip drains and exits on SIGTERM", line)
        line = refusedAtStart(self, ["--restart-signal", "USR3"])
        self.assertIn("--restart-signal USR3: no such signal; give HUP, USR1 or USR2", line)
