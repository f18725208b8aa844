"""
Signals at awkward moments: SIGTERM while a new generation starts, a storm of
SIGHUPs, and SIGHUP to a generation that is draining.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support.apps import NEVER_READY, releaseFlip, writeApp
from tests.support.procs import demoFlip, httpGet, pidAlive, servedBy, waitFor


class SignalTests(TestCase):
    def test_sigtermDuringUpgradeStopsBoth(self):
        """SIGTERM while a new generation is starting: the child is killed, the parent drains."""
        flip, port, workdir = releaseFlip(self)
        old = flip.start()
        writeApp(workdir, "myrelease", NEVER_READY, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("started generation 2 as PID")
        os.kill(old, signal.SIGTERM)
        self.assertEqual(flip.process.wait(60), 0)
        waitFor(lambda: flip.aliveGenerations() == [], "no process to be left")
        self.assertIn("failed: this generation is shutting down", flip.log())
        self.assertFalse(os.path.exists(flip.pidFile))

    def test_sighupStorm(self):
        """Ten SIGHUPs within 100 ms start exactly one new generation."""
        flip, port, _ = releaseFlip(self)
        old = flip.start()
        for _ in range(10):
            os.kill(old, signal.SIGHUP)
            time.sleep(0.01)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "a new PID")
        flip.waitServing(new)
        waitFor(lambda: not pidAlive(old), "the old PID to exit")
        self.assertEqual(flip.aliveGenerations(), [new])
        self.assertIn("SIGHUP refused: an upgrade is already in progress", flip.log())
        self.assertEqual(flip.log().count("SIGHUP: starting generation"), 1)

    def test_sighupDuringDrain(self):
        """
        A SIGHUP to a draining generation is refused; one to the new generation
        starts a third, and only the third is left.
        """
        flip, port = demoFlip(self)
        first = flip.start()
        slow = threading.Thread(
            target=lambda: httpGet("127.0.0.1", port, "/sleep?seconds=4", timeout=30), daemon=True
        )
        slow.start()
        flip.waitLog(f"sleeping 4.0s for a request (PID {first})")
        os.kill(first, signal.SIGHUP)
        second = waitFor(lambda: (p := flip.pid()) != first and p, "generation 2")
        flip.waitServing(second)
        self.assertTrue(pidAlive(first), "generation 1 should still be draining")
        os.kill(first, signal.SIGHUP)
        flip.waitLog(f"[txflip gen 1 pid {first}] SIGHUP refused: this generation has handed over")
        third = flip.restart()
        slow.join(30)
        waitFor(lambda: flip.aliveGenerations() == [third], "only generation 3 to be left")
        self.assertEqual(servedBy(port), third)
