"""
WebSockets move to the next generation at a restart, as a user sees it: a
real twistd flip, SIGHUP, real C{websockets} clients through a proxy adding
20 ms each way. Clients of a movable protocol see no close frame and never
reconnect, and no message is lost or doubled; one that never consents, or
that uses permessage-deflate, gets 1012 as without moving.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support.delayproxy import DelayProxy
from tests.support.procs import Flip, freePort, pidAlive, txflip, waitFor
from tests.support.wsclients import CountingClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICE_RESTART = 1012


class WebSocketMoveTests(TestCase):
    def flip(self, app: str, *extra: str) -> tuple[Flip, int, DelayProxy]:
        port = freePort()
        flip = Flip(
            self,
            [
                "--app",
                f"tests.support.movablews.{app}",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *extra,
            ],
            workdir=tempfile.mkdtemp(prefix="txflip-test-"),
            env={"PYTHONPATH": ROOT},
        )
        pid = flip.start()
        proxy = DelayProxy(("127.0.0.1", port), 0.02).start()
        self.addCleanup(proxy.stop)
        return flip, pid, proxy

    def clients(
        self, url: str, count: int, **options
    ) -> tuple[list[CountingClient], threading.Event]:
        stop = threading.Event()
        clients = [CountingClient(url, stop, **options) for _ in range(count)]
        for client in clients:
            client.start()

        def stopAll():
            stop.set()
            for client in clients:
                client.join(timeout=30)

        self.addCleanup(stopAll)
        return clients, stop

    def reloadCounting(self, flip: Flip, generation: int) -> int:
        """Restart through txflip reload, which counts what moved of each kind; the new PID."""
        old = flip.pid()
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(
            f"moved 20 connection(s) (20 WebSocket) to generation {generation}", result.stdout
        )
        waitFor(lambda: not pidAlive(old), "the previous generation to exit")
        return flip.pid()

    def _restartsNobodySees(self, app: str, path: str, restarts: int) -> None:
        flip, pid, proxy = self.flip(app)
        clients, stop = self.clients(f"ws://127.0.0.1:{proxy.port}{path}", 20)
        waitFor(lambda: all(len(c.pids) >= 2 or c.failures for c in clients), "clients talking")
        pids = [pid]
        for index in range(restarts):
            started = time.monotonic()
            if index < restarts - 1:
                pids.append(flip.restart())
            else:
                pids.append(self.reloadCounting(flip, restarts + 1))
            waitFor(
                lambda started=started: time.monotonic() - started >= 2.5,
                "2.5 s since the last restart",
            )
        waitFor(
            lambda: all(c.pids[-1] == pids[-1] or c.failures or not c.is_alive() for c in clients),
            "every client answered by the last generation",
        )
        stop.set()
        for client in clients:
            client.join(timeout=30)
        self.assertEqual([f for c in clients for f in c.failures], [])
        self.assertEqual([c.closeCode for c in clients if c.closeCode is not None], [])
        for client in clients:
            self.assertGreaterEqual(len(set(client.pids)), 3, client.pids)
        self.assertEqual(proxy.connections, 20, "a client reconnected")
        self.assertIn(f"moved 20 connection(s) to generation {restarts + 1}", flip.log())
        flip.terminate()

    def test_factoryThroughTenRestarts(self):
        """20 clients of a WebSocketServerFactory, 10 restarts 2.5 s apart."""
        self._restartsNobodySees("factory", "/", 10)

    def test_resourceInASite(self):
        """The same through WebSocketResource at /ws in a Site, 3 restarts."""
        self._restartsNobodySees("site", "/ws", 3)

    def _closedAsBefore(self, app: str, **options) -> None:
        flip, pid, proxy = self.flip(app, "--drain-timeout", "4")
        [client], _ = self.clients(f"ws://127.0.0.1:{proxy.port}/", 1, **options)
        waitFor(lambda: len(client.pids) >= 2 or client.failures, "the client talking")
        flip.restart()
        client.join(timeout=30)
        self.assertEqual((client.closeCode, client.failures), (SERVICE_RESTART, []))
        self.assertEqual(set(client.pids), {pid})

    def test_neverConsentingGets1012(self):
        """saveMoved answering None until the end: 1012, as without moving."""
        self._closedAsBefore("stubborn")

    def test_permessageDeflateGets1012(self):
        """permessage-deflate with context takeover cannot move: 1012, as without moving."""
        self._closedAsBefore("deflating", compression="deflate")
