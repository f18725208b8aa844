"""
Broken releases: one that raises at import, exits, never gets ready, stops
itself after starting, or listens on nothing never takes over; the serving
generation keeps everything and loses no request, and a fixed release then
takes over.
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
    LISTENS_ON_NOTHING,
    NEVER_READY,
    RAISES_AT_IMPORT,
    SERVICE_THAT_LISTENS,
    STOPS_ITSELF,
    appEnv,
    releaseFlip,
    writeApp,
)
from tests.support.procs import (
    Flip,
    UNIXHTTPConnection,
    freePort,
    httpGet,
    servedBy,
    txflip,
    waitFor,
)


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


class ReleaseGivesUpTests(TestCase):
    def test_releaseThatStopsItselfLeavesEverythingInPlace(self):
        """
        A release that stops itself right after starting never takes over: the
        old generation keeps its TCP and unix listeners, its PID file and its
        control socket.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
        port = freePort()
        path = os.path.join(workdir, "app.sock")
        flip = Flip(
            self,
            [
                "--app",
                "myrelease.resource",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--listen",
                f"unix:{path}",
            ],
            workdir=workdir,
            env=appEnv(workdir),
        )
        old = flip.start()
        inode = os.stat(path).st_ino
        writeApp(workdir, "myrelease", STOPS_ITSELF, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving")
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")
        self.assertEqual(flip.pid(), old)
        self.assertEqual(os.stat(path).st_ino, inode)
        self.assertTrue(os.path.exists(flip.pidFile + ".control"))
        self.assertIn(f"pid {old}".encode(), httpGet("127.0.0.1", port, "/")[2])
        conn = UNIXHTTPConnection(path)
        conn.request("GET", "/")
        self.assertIn(f"pid {old}".encode(), conn.getresponse().read())
        conn.close()


class ListensOnNothingTests(TestCase):
    def test_releaseListeningOnNothingDoesNotTakeOver(self):
        """
        A new release of a self-listening service that no longer listens is
        never ready (it gave no signal of its own, and the inherited socket is
        unclaimed): at the timeout it fails, naming the listener it never
        claimed, although the control socket was handed to it.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "selflisten", SERVICE_THAT_LISTENS, port=port)
        flip = Flip(
            self,
            ["--app", "selflisten.makeService", "--ready-timeout", "4"],
            workdir=workdir,
            env=appEnv(workdir),
        )
        old = flip.start()
        writeApp(workdir, "selflisten", LISTENS_ON_NOTHING)
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(
            f"it was still waiting for listening again on tcp:127.0.0.1:{port}", result.stdout
        )
        self.assertEqual(servedBy(port, path="/"), old)
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")
