"""
Restarts that keep-alive clients cannot see: their idle connections move to
the new generation, through a proxy that delays each direction by 20 ms (so
a server's close and a client's next request can cross, as on a network).

Clients are urllib3 pools of one connection with retries off, POSTing unique
messages with idle gaps around the old one-second idle grace.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import ssl
import tempfile
import time
from collections import Counter

from twisted.trial.unittest import TestCase

from tests.support.apps import SERVICE_THAT_LISTENS, appEnv, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.keepalive import startPosters, stopPosters
from tests.support.procs import (
    Flip,
    UNIXHTTPConnection,
    demoFlip,
    freePort,
    pidAlive,
    txflip,
    waitFor,
)

DELAY = 0.02
CLIENTS = 12


def proxied(testCase, upstream) -> DelayProxy:
    proxy = DelayProxy(upstream, delay=DELAY).start()
    testCase.addCleanup(proxy.stop)
    return proxy


class PostsThroughRestarts:
    """Keep-alive POST clients through restarts, and what they must not notice."""

    def restartsUnderPosts(self, flip: Flip, proxy: DelayProxy, restarts: int, restart=None):
        stop, posters = startPosters("127.0.0.1", proxy.port, CLIENTS)
        self.addCleanup(stop.set)
        waitFor(lambda: all(p.result.acknowledged for p in posters), "every client's first POST")
        for _ in range(restarts):
            (restart or flip.restart)()
            # Each client is answered again once the restart is over, idle gaps
            # included. (A count of all POSTs would include those made during the
            # restart: a client idle through a short generation could miss it.)
            after = [len(p.result.acknowledged) for p in posters]
            waitFor(
                lambda after=after: all(
                    len(p.result.acknowledged) > n for p, n in zip(posters, after, strict=True)
                ),
                "every client's connection answered after the restart",
            )
        stopPosters(stop, posters)
        return posters

    def assertNobodyNoticed(self, flip: Flip, proxy: DelayProxy, posters, stored: set) -> None:
        failures = [f for p in posters for f in p.result.failures]
        self.assertEqual(failures, [], "\n".join(failures[:10]))
        acknowledged = [m for p in posters for m in p.result.acknowledged]
        self.assertEqual(set(acknowledged) - stored, set(), "acknowledged POSTs lost")
        self.assertEqual([p.result.connections for p in posters], [1] * CLIENTS)
        self.assertEqual(proxy.connections, CLIENTS)
        # One connection each, answered by several generations: it really moved.
        for poster in posters:
            self.assertGreaterEqual(len(set(poster.result.servedBy)), 3, poster.result.servedBy)
        self.assertNotIn("gave up moving", flip.log())


class KeepAliveMoveTests(PostsThroughRestarts, TestCase):
    def test_tcpClientsSeeNoRestart(self):
        """
        Ten restarts under keep-alive POST clients behind a delay: no POST
        fails, every acknowledged one is stored, no client opens a second
        connection.
        """
        flip, port = demoFlip(self)
        flip.start()
        proxy = proxied(self, ("127.0.0.1", port))
        posters = self.restartsUnderPosts(flip, proxy, 10)
        self.assertNobodyNoticed(flip, proxy, posters, guestbook(("127.0.0.1", port)))
        moved = [int(n) for n in _movedCounts(flip.log())]
        self.assertEqual(len(moved), 10, "a 'moved' line from each old generation")
        self.assertGreater(sum(moved), 10 * CLIENTS // 2)

    def test_unixSocketClientsSeeNoRestart(self):
        """The same over a unix-socket listener (the proxy turns TCP into unix)."""
        flip = Flip(self, [])
        path = os.path.join(flip.workdir, "app.sock")
        flip.args = ["--listen", f"unix:{path}"]
        flip.start()
        proxy = proxied(self, path)
        posters = self.restartsUnderPosts(flip, proxy, 3)
        self.assertNobodyNoticed(flip, proxy, posters, guestbook(path))


class WorkersKeepAliveMoveTests(PostsThroughRestarts, TestCase):
    def test_clientsOfWorkersSeeNoRestart(self):
        """
        With C{--workers 2}, restarts under keep-alive POST clients behind a
        delay: no POST fails, every acknowledged one is stored, no client
        opens a second connection, and at every restart both new workers
        get moved connections.
        """
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"])
        flip.start()
        proxy = proxied(self, ("127.0.0.1", port))
        restarts = 5
        reloads = []

        def reload():
            old = flip.pid()
            result = txflip("reload", "--pid-file", flip.pidFile)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            reloads.append(result.stdout)
            self.assertNotEqual(flip.pid(), old)
            waitFor(lambda: not pidAlive(old), f"old leader {old} to exit")

        posters = self.restartsUnderPosts(flip, proxy, restarts, reload)
        self.assertNobodyNoticed(flip, proxy, posters, guestbook(("127.0.0.1", port)))
        # txflip reload tells how many moved, counting every worker's.
        for output in reloads:
            moved = re.findall(r"moved (\d+) keep-alive connection\(s\) to generation", output)
            self.assertEqual(len(moved), 1, output)
            self.assertGreater(int(moved[0]), 0, output)
        # Each old worker says how many it moved to each new worker.
        perWorker = Counter()
        perRestart = Counter()
        for generation, toZero, toOne in _movedToWorkers(flip.log()):
            perWorker.update({0: int(toZero), 1: int(toOne)})
            perRestart.update({(generation, 0): int(toZero), (generation, 1): int(toOne)})
        generations = {generation for generation, _ in perRestart}
        self.assertEqual(len(generations), restarts, perRestart)
        for (generation, worker), moved in perRestart.items():
            self.assertGreater(
                moved, 0, f"nothing moved to worker {worker} of generation {generation}"
            )
        total = sum(perWorker.values())
        self.assertGreater(total, restarts * CLIENTS // 2)
        self.assertGreater(min(perWorker.values()), total / 3, perWorker)


class AppListensByItselfTests(TestCase):
    def test_connectionOfAppsOwnListenerMoves(self):
        """
        An app that listens by itself (strports, through the reactor's
        listenTCP) has its keep-alive connections moved too: the next request
        on the same connection is answered by the new generation.
        """
        port = freePort()
        flip = Flip(self, ["--app", "selflisten.makeService"])
        writeApp(flip.workdir, "selflisten", SERVICE_THAT_LISTENS, port=port)
        flip.env.update(appEnv(flip.workdir))
        old = flip.start()
        proxy = proxied(self, ("127.0.0.1", port))
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
        self.addCleanup(conn.close)
        servedBy = []
        for _ in range(2):
            conn.request("GET", "/")
            response = conn.getresponse()
            servedBy.append(json.loads(response.read())["pid"])
            self.assertIsNone(response.getheader("Connection"))
            if len(servedBy) == 1:
                new = flip.restart()
        self.assertEqual(servedBy, [old, new])
        self.assertEqual(proxy.connections, 1)
        self.assertIn(f"[txflip gen 1 pid {old}] moved 1 connection(s) to generation 2", flip.log())


def guestbook(address) -> set[str]:
    """Every message the demo stored, read directly (not through the proxy)."""
    if isinstance(address, str):
        conn = UNIXHTTPConnection(address, timeout=30)
    else:
        conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("GET", "/guestbook", headers={"Connection": "close"})
        return {entry["message"] for entry in json.loads(conn.getresponse().read())}
    finally:
        conn.close()


def _movedToWorkers(log: str) -> list[tuple[str, str, str]]:
    """(next generation, moved to its worker 0, to its worker 1), one per old worker."""
    return re.findall(
        r"to the workers of generation (\d+) \((\d+) to worker 0, (\d+) to worker 1\)", log
    )


def _movedCounts(log: str) -> list[str]:
    return re.findall(r"\] moved (\d+) connection\(s\) to generation", log)


class TLSKeepAliveDrainTests(TestCase):
    def test_idleTLSConnectionIsNeverClosedEarly(self):
        """
        TLS connections cannot move. After a handoff, an idle one stays open
        past the one-second idle grace; its next request is answered by the old
        generation with C{Connection: close}, then it is closed. One that stays
        idle is closed at the drain deadline, and not before.
        """
        port = freePort()
        certs = tempfile.mkdtemp(prefix="txflip-tls-idle-")
        flip = Flip(
            self,
            [
                "--listen",
                f"flip-tls:{port}:interface=127.0.0.1:selfSigned={certs}",
                "--drain-timeout",
                "3",
            ],
        )
        old = flip.start()
        proxy = proxied(self, ("127.0.0.1", port))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        speaking, silent = (tlsClient(context, proxy.port) for _ in range(2))
        for client in (speaking, silent):
            self.addCleanup(client.close)
            head, _ = exchange(client)
            self.assertIn(f"x-served-by: {old}".encode(), head.lower())

        os.kill(old, signal.SIGHUP)
        # Seen within a few milliseconds of the drain's start, which the deadline counts from.
        draining = f"[txflip gen 1 pid {old}] draining"
        waitFor(lambda: draining in flip.log(), "the old generation to drain", longestPause=0.01)
        drainStarted = time.monotonic()
        flip.waitServing(waitFor(lambda: (p := flip.pid()) != old and p, "a new PID"))
        # Past the idle grace plus both delays: an absence is only seen by waiting.
        time.sleep(max(0.0, drainStarted + 1.5 - time.monotonic()))
        self.assertTrue(stillOpen(speaking) and stillOpen(silent), "an idle TLS connection closed")

        head, _ = exchange(speaking)
        self.assertIn(f"x-served-by: {old}".encode(), head.lower())
        self.assertIn(b"connection: close", head.lower())
        self.assertEqual(readUntilClosed(speaking), b"")  # close_notify
        speaking.close()  # as a client does after Connection: close; the server then lets go

        self.assertEqual(readUntilClosed(silent), b"")
        self.assertGreater(time.monotonic() - drainStarted, 2.5)
        waitFor(lambda: not pidAlive(old), "the old generation to exit")
        self.assertIn("drain timeout: aborted 1 connection(s)", flip.log())
        self.assertEqual(Counter(_tlsStays(flip.log())), Counter({"2 TLS": 1}))


def _tlsStays(log: str) -> list[str]:
    return re.findall(r"stay and drain here \((\d+ TLS)\)", log)


def tlsClient(context: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return context.wrap_socket(raw, server_hostname="localhost")


def exchange(client: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """One keep-alive GET of the demo's /sleep (a chunked answer); its head and body."""
    client.sendall(b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    while not body.endswith(b"0\r\n\r\n"):
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed in a response body: {body!r}")
        body += chunk
    return head, body


def stillOpen(client: ssl.SSLSocket) -> bool:
    """Nothing arrived: no close_notify, no FIN, no RST."""
    readable, _, _ = select.select([client], [], [], 0)
    return not readable and client.pending() == 0


def readUntilClosed(client: ssl.SSLSocket) -> bytes:
    """What arrives before the server closes (a reset counts as a close)."""
    data = b""
    try:
        while chunk := client.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data
