"""
Restarts of the demo app under flip, with real processes, signals and clients.
"""

from __future__ import annotations

import os
import signal
import sqlite3

from twisted.trial.unittest import TestCase

from tests.support.load import Load
from tests.support.procs import BackgroundGet, Flip, freePort, pidAlive, servedBy, waitFor


def demoFlip(testCase, *extra: str) -> tuple[Flip, int]:
    port = freePort()
    flip = Flip(testCase, ["--listen", f"tcp:{port}:interface=127.0.0.1", *extra])
    return flip, port


def guestbookMessages(flip: Flip) -> dict[str, int]:
    db = sqlite3.connect(flip.env["TXFLIP_DEMO_DB"], timeout=30)
    try:
        return {
            message: rowid for rowid, message in db.execute("SELECT id, message FROM guestbook")
        }
    finally:
        db.close()


class RestartUnderLoadTests(TestCase):
    def test_twentyRestartsUnderMixedLoad(self):
        """
        20 restarts while three clients run (new connection per request,
        keep-alive GETs, keep-alive POSTs that never retry): no request fails,
        every acknowledged POST is in the database, every restart brings a
        new PID, and one serving process is left.
        """
        flip, port = demoFlip(self)
        first = flip.start()
        pids = [first]
        with Load("127.0.0.1", port) as load:
            pids += flip.restartsUnderLoad(load, 20)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual(len(set(pids)), 21, pids)
        stored = guestbookMessages(flip)
        acknowledged = [a for r in load.results() for a in r.acknowledged]
        self.assertGreater(len(acknowledged), 20)
        missing = [m for m, _ in acknowledged if m not in stored]
        self.assertEqual(missing, [])
        self.assertEqual(flip.aliveGenerations(), [pids[-1]])
        servers = set()
        for r in load.results():
            servers.update(r.pids)
        self.assertGreater(len(servers), 10, "the load should have reached many generations")

    def test_slowRequestFinishesOnOldPid(self):
        """A request in flight at SIGHUP completes on the old PID; new ones reach the new PID."""
        flip, port = demoFlip(self)
        old = flip.start()
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=3")
        flip.waitLog(f"sleeping 3.0s for a request (PID {old})")
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "new PID")
        flip.waitServing(new)
        self.assertEqual(servedBy(port), new)
        self.assertTrue(pidAlive(old), "the old generation should still be draining")
        slow.join()
        self.assertIsNone(slow.error)
        status, headers, body = slow.response
        self.assertEqual(status, 200)
        self.assertIn(f'"pid": {old}'.encode(), body)
        waitFor(lambda: not pidAlive(old), "old PID to exit after its last request")
