"""
Many restarts under continuous load, with real processes, signals and
clients: plain HTTP (new connections, keep-alive GETs, POSTs that never
retry) and TLS (new-connection and keep-alive clients on two kinds of TLS
listener). No request fails and no acknowledged write is lost.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.python.log import msg
from twisted.trial.unittest import TestCase

from tests.support.load import Load
from tests.support.procs import Flip, demoFlip, freePort, waitFor
from tests.support.tlsflip import TLSFlipCase
from tests.support.tlsload import TLSLoad, summary


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


RESTARTS = 10


class TLSRestartUnderLoadTests(TLSFlipCase):
    def test_tenRestartsUnderTLSLoad(self) -> None:
        """
        New-connection and keep-alive clients on a C{flip-tls:} certDir listener
        and an C{ssl:} listener see no failed handshake and no failed request
        through 10 restarts.
        """
        flip = self.makeFlip([])
        self.ca.combined(os.path.join(self.certs, "localhost.pem"), ["localhost", "127.0.0.1"])
        keyPath, certPath, chainPath = self.ca.pair(flip.workdir, ["localhost"])
        dirPort, sslPort = freePort(), freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{dirPort}:interface=127.0.0.1:certDir={self.certs}",
            "--listen",
            f"ssl:{sslPort}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
            f":extraCertChain={chainPath}",
        ]
        pids = [flip.start()]
        loads = [TLSLoad(port, self.ca.caFile).start() for port in (dirPort, sslPort)]
        try:
            for _ in range(RESTARTS):
                before = sum(load.requests() for load in loads)
                waitFor(
                    lambda before=before: sum(load.requests() for load in loads) > before + 20,
                    "requests between restarts",
                )
                pids.append(flip.restart())
            waitFor(
                lambda: all(load.requests() > 0 for load in loads), "requests on both listeners"
            )
        finally:
            results = [r for load in loads for r in load.stop()]
        report = summary(results)
        msg(f"{RESTARTS} restarts under TLS load: {report}")
        self.assertEqual(len(set(pids)), RESTARTS + 1)
        self.assertEqual(sum(r.failedHandshakes for r in results), 0, report)
        self.assertEqual(sum(r.failedRequests for r in results), 0, report)
        for result in results:
            self.assertGreater(result.requests, 0, report)
            if result.kind == "keep-alive":  # really kept alive: one handshake per generation
                self.assertLess(result.handshakes, result.requests // 10, report)
        servedBy = set().union(*(r.pids for r in results))
        self.assertGreaterEqual(len(servedBy), RESTARTS // 2, report)
        self.assertEqual(flip.aliveGenerations(), [pids[-1]])
