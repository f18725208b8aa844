"""
Broken releases and signal storms: the serving generation must survive them.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support.apps import (
    EXITS_AT_ONCE,
    GOOD_RESOURCE,
    NEVER_READY,
    RAISES_AT_IMPORT,
    appEnv,
    writeApp,
)
from tests.support.procs import Flip, freePort, httpGet, pidAlive, servedBy, waitFor


def releaseFlip(testCase, *extra: str) -> tuple[Flip, int, str]:
    workdir = tempfile.mkdtemp(prefix="txflip-test-")
    writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
    port = freePort()
    flip = Flip(
        testCase,
        ["--app", "myrelease.resource", "--listen", f"tcp:{port}:interface=127.0.0.1", *extra],
        workdir=workdir,
        env=appEnv(workdir),
    )
    return flip, port, workdir


def release(port: int) -> bytes:
    status, _, body = httpGet("127.0.0.1", port, "/")
    assert status == 200, status
    return body


class BrokenReleaseTests(TestCase):
    def _brokenThenFixed(self, broken: str, expectedReason: str, *extra: str) -> None:
        flip, port, workdir = releaseFlip(self, *extra)
        old = flip.start()
        self.assertIn(b"release 1", release(port))
        writeApp(workdir, "myrelease", broken, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving")
        self.assertIn(expectedReason, flip.log())
        self.assertEqual(flip.pid(), old)
        self.assertIn(f"pid {old}".encode(), release(port))
        waitFor(lambda: flip.aliveGenerations() == [old], "the broken child to be gone")

        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="3")
        new = flip.restart()
        self.assertNotEqual(new, old)
        self.assertIn(f"release 3 pid {new}".encode(), release(port))
        self.assertEqual(flip.aliveGenerations(), [new])

    def test_raisesAtImport(self):
        """A release that raises at import: the parent logs the child's own one-line reason."""
        self._brokenThenFixed(RAISES_AT_IMPORT, "release 2 is broken on purpose")

    def test_exitsAtOnce(self):
        self._brokenThenFixed(EXITS_AT_ONCE, "exited with code 3 before serving")

    def test_neverReady(self):
        """A release that hangs is killed at the ready timeout."""
        # The timeout also applies to the fixed release that follows, which
        # must have room to start on a loaded machine.
        self._brokenThenFixed(
            NEVER_READY, "not ready within the ready timeout of 10s", "--ready-timeout", "10"
        )

    def test_brokenReleaseUnderLoadLosesNothing(self):
        """While a broken child comes and goes, a client hammering the port sees no error."""
        flip, port, workdir = releaseFlip(self)
        old = flip.start()
        failures = []
        stop = threading.Event()

        def hammer():
            end = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < end:
                try:
                    release(port)
                except Exception as e:
                    failures.append(repr(e))

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            writeApp(workdir, "myrelease", RAISES_AT_IMPORT, release="2")
            os.kill(old, signal.SIGHUP)
            flip.waitLog("keeps serving")
        finally:
            stop.set()
            thread.join(30)
        self.assertEqual(failures, [])
        waitFor(lambda: flip.aliveGenerations() == [old], "the broken release to be gone")


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
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
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

    def test_pidFileAlwaysNamesALiveProcess(self):
        """The PID file, read every 10 ms through 10 restarts, always names a live process."""
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        flip.start()
        samples: list[tuple[int | None, bool]] = []
        stop = threading.Event()

        def sample():
            end = time.monotonic() + 300
            while not stop.is_set() and time.monotonic() < end:
                with open(flip.pidFile) as f:
                    text = f.read()
                pid = int(text) if text.strip().isdigit() else None
                samples.append((pid, pid is not None and pidAlive(pid)))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            pids = [flip.restart() for _ in range(10)]
        finally:
            stop.set()
            sampler.join(30)
        bad = [s for s in samples if not s[1]]
        self.assertEqual(bad, [])
        self.assertGreater(len(samples), 100)
        self.assertEqual(len({pid for pid, _ in samples}), 11)
        flip.terminate()
        self.assertFalse(os.path.exists(flip.pidFile))
        self.assertEqual(flip.aliveGenerations(), [])
        del pids
