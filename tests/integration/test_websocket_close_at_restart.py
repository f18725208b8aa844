"""
WebSocket servers (Autobahn) through restarts: every client is sent a close
frame, 1012 at a handoff and 1001 at the final shutdown, spread over
--close-spread, and reconnects to the new generation; the old generation exits
as soon as its clients have gone, long before the drain timeout.
"""

from __future__ import annotations

import tempfile
import time

from twisted.trial.unittest import TestCase

from tests.support.anyapps import WEBSOCKET
from tests.support.apps import appEnv, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.procs import Flip, freePort, waitFor
from tests.support.wsclients import EchoClients

CLIENTS = 20
RESTARTS = 5
DRAIN_TIMEOUT = 30
SPREAD = 1.0


class WebSocketRestartTests(TestCase):
    def _restartsWithClients(self, app: str, path: str, delayed: bool = False) -> None:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "wsapp", WEBSOCKET)
        port = freePort()
        flip = Flip(
            self,
            [
                "--app",
                app,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--drain-timeout",
                str(DRAIN_TIMEOUT),
                "--close-spread",
                str(SPREAD),
            ],
            workdir=workdir,
            env=appEnv(workdir),
        )
        pid = flip.start()
        if delayed:
            # Echoes and the client's close reply cross the server's close frame in flight.
            proxy = DelayProxy(("127.0.0.1", port), 0.02).start()
            self.addCleanup(proxy.stop)
            port = proxy.port
        with EchoClients(f"ws://127.0.0.1:{port}{path}", CLIENTS) as clients:
            waitFor(lambda: clients.connectedTo(pid), f"{CLIENTS} clients on PID {pid}")
            for _ in range(RESTARTS):
                old, started = pid, time.monotonic()
                pid = flip.restart()
                exitedAfter = time.monotonic() - started
                waitFor(lambda p=pid: clients.connectedTo(p), f"every client back, on PID {pid}")
                ended = clients.endedOn(old)
                self.assertEqual(len(ended), CLIENTS, clients.failures())
                self.assertEqual({c.code for c in ended}, {1012}, clients.failures())
                closedAt = sorted(c.closedAt for c in ended)
                self.assertGreater(closedAt[-1] - closedAt[0], SPREAD / 3, "closes not spread")
                self.assertLess(exitedAfter, DRAIN_TIMEOUT / 3, "the old generation lingered")
            clients.final.set()
            flip.terminate()
            clients.join()
            self.assertEqual({c.code for c in clients.endedOn(pid)}, {1001})
            self.assertEqual(clients.failures(), [])
        self.assertEqual(flip.process.wait(30), 0)

    def test_factory(self):
        """An Autobahn WebSocketServerFactory as the app, on --listen."""
        self._restartsWithClients("wsapp.factory", "/")

    def test_webSocketResourceThroughDelayProxy(self):
        """
        A WebSocketResource inside a Site, reached through a 20 ms delay each way:
        connections upgraded off HTTP are drained too.
        """
        self._restartsWithClients("wsapp.site", "/ws", delayed=True)
