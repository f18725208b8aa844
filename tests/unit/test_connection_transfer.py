"""
Moving a connection from one generation's reactor to the next, in one process:
two listener registries share a real listening socket (as two generations
do), a real client connects, and the mover and the receiver talk over a real
transfer socketpair. What the client sees is read from its own socket.
"""

from __future__ import annotations

import os
import select
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.support.procs import waitUntil
from txflip.core import connmove
from txflip.core.connadopt import ConnectionReceiver
from txflip.core.connmove import STAYS_LATE, STAYS_TRANSFER_FAILED, ConnectionMover
from txflip.core.drain import ConnectionTracker
from txflip.core.events import Events
from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.transfer import transferPair


class Who(Resource):
    """Says which generation answered and what path it was asked; /slow waits."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.waiting = []

    def render_GET(self, request):
        if request.path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        return f"{self.name} {request.path.decode()}".encode()


def readResponse(skt: socket.socket) -> tuple[bytes, bytes]:
    """Block until one whole response arrives: its head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = skt.recv(65536)
        if not chunk:
            raise ConnectionError(f"end of file after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = skt.recv(65536)
        if not chunk:
            raise ConnectionError("end of file in a body")
        body += chunk
    return head, body


def nothingArrived(skt: socket.socket) -> bool:
    """True if the client has received neither bytes nor an end of file (nor a reset)."""
    readable, _, _ = select.select([skt], [], [], 0)
    return not readable


class TransferTests(TestCase):
    def setUp(self) -> None:
        self.tracker = ConnectionTracker()
        self.old = ListenerRegistry(reactor, factoryHook=self.tracker.track)
        self.oldApp = Who("old")
        port = self.old.standIn.listenTCP(0, Site(self.oldApp, timeout=None), interface="127.0.0.1")
        self.address = port.getHost()
        self.addCleanup(self.old.stopAll)
        self.key = self.old.listeners[0].key
        self.newTracker = ConnectionTracker()
        self.newApp = Who("new")
        self.new = self.nextGeneration(self.key)
        self.ours, self.theirs = transferPair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)

    def nextGeneration(self, key: str) -> ListenerRegistry:
        """A second registry on the same socket, not accepting (the old one accepts)."""
        inherited = InheritedListener(os.dup(self.old.listeners[0].port.fileno()), key, "AF_INET")
        registry = ListenerRegistry(
            reactor, [inherited], factoryHook=self.newTracker.track, paused=True
        )
        registry.standIn.listenTCP(0, Site(self.newApp, timeout=None), interface="127.0.0.1")
        self.addCleanup(registry.releaseAll)
        return registry

    def client(self) -> socket.socket:
        skt = socket.create_connection((self.address.host, self.address.port), timeout=10)
        self.addCleanup(skt.close)
        return skt

    @inlineCallbacks
    def request(self, skt: socket.socket, path: str = "/", extra: bytes = b""):
        skt.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + extra)
        head, body = yield deferToThread(readResponse, skt)
        return head, body

    def mover(self, drainTimeout: float = 10.0) -> ConnectionMover:
        mover = ConnectionMover(reactor, self.tracker, self.old, self.ours, Events(), drainTimeout)
        self.addCleanup(mover.abandon, "the test is over")
        return mover

    def receive(self, registry: ListenerRegistry | None = None) -> ConnectionReceiver:
        receiver = ConnectionReceiver(reactor, registry or self.new, self.theirs, 1)
        self.addCleanup(receiver.close)
        return receiver

    @inlineCallbacks
    def test_idleConnectionMovesWithoutTheClientNoticing(self):
        """
        An idle keep-alive connection moves: the client receives nothing (no
        FIN, no RST) and its next request is answered by the new generation.
        """
        skt = self.client()
        _, body = yield self.request(skt)
        self.assertEqual(body, b"old /")
        receiver = self.receive()
        report = yield self.mover().start()
        self.assertEqual((report.moved, dict(report.stayed), report.failure), (1, {}, None))
        self.assertEqual(self.tracker.open(), [])
        self.assertTrue(nothingArrived(skt))
        head, body = yield self.request(skt)
        self.assertEqual(body, b"new /")
        self.assertNotIn(b"connection: close", head.lower())
        self.assertEqual((receiver.adopted, len(self.newTracker.open())), (1, 1))

    @inlineCallbacks
    def test_unparsedBytesTravel(self):
        """The start of the next request, read but not parsed, is parsed by the new generation."""
        skt = self.client()
        yield self.request(skt, "/", extra=b"GET /sec")
        self.receive()
        report = yield self.mover().start()
        self.assertEqual(report.moved, 1)
        skt.sendall(b"ond HTTP/1.1\r\nHost: x\r\n\r\n")
        _, body = yield deferToThread(readResponse, skt)
        self.assertEqual(body, b"new /second")

    @inlineCallbacks
    def test_reportedOnceIdleOnesMovedWhileMoreArrive(self):
        """
        While connections may still arrive from the generation before, the
        mover goes on, but reports at once what has moved and that more
        arrive; it finishes once they stop arriving.
        """
        skt = self.client()
        yield self.request(skt)
        self.receive()
        arriving = [True]
        events = Events()
        reports = []
        events.subscribe(
            lambda name, fields: name == "connections-moved" and reports.append(fields)
        )
        mover = ConnectionMover(
            reactor, self.tracker, self.old, self.ours, events, 10.0, arriving=lambda: arriving[0]
        )
        self.addCleanup(mover.abandon, "the test is over")
        done = mover.start()
        for _ in range(500):  # 5 s at most
            if reports:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(
            [(r["moved"], r["final"], r["waiting"], r["arriving"]) for r in reports],
            [(1, False, 0, True)],
        )
        self.assertFalse(done.called)
        arriving[0] = False
        report = yield done
        self.assertEqual(report.moved, 1)
        self.assertEqual([(r["final"], r["arriving"]) for r in reports[1:]], [(True, False)])

    @inlineCallbacks
    def test_busyConnectionMovesOnceIdle(self):
        """A request in progress ends on the old generation, without Connection: close;
        the connection then moves."""
        skt = self.client()
        skt.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        yield waitUntil(lambda: self.oldApp.waiting, "the slow request to reach the old app")
        self.receive()
        moved = self.mover().start()
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(moved.called)
        request = self.oldApp.waiting.pop()
        request.setHeader(b"content-length", b"9")
        request.write(b"slow done")
        request.finish()
        head, body = yield deferToThread(readResponse, skt)
        self.assertEqual(body, b"slow done")
        self.assertNotIn(b"connection: close", head.lower())
        report = yield moved
        self.assertEqual(report.moved, 1)
        _, body = yield self.request(skt)
        self.assertEqual(body, b"new /")

    @inlineCallbacks
    def test_refusedConnectionStaysAndIsServedHere(self):
        """A new generation without that listener refuses it; the old one keeps serving it."""
        skt = self.client()
        yield self.request(skt)
        self.receive(ListenerRegistry(reactor))
        report = yield self.mover().start()
        self.assertEqual(report.moved, 0)
        self.assertEqual(
            dict(report.stayed),
            {"refused: this generation does not listen on " + self.key: 1},
        )
        self.assertTrue(nothingArrived(skt))
        _, body = yield self.request(skt)
        self.assertEqual(body, b"old /")

    @inlineCallbacks
    def test_deadNewGenerationLeavesConnectionsHere(self):
        """A new generation gone before the transfer: every connection stays and is served."""
        skt = self.client()
        yield self.request(skt)
        self.theirs.close()
        report = yield self.mover().start()
        self.assertEqual(report.moved, 0)
        self.assertIn("the transfer channel closed", report.failure)
        self.assertTrue(nothingArrived(skt))
        _, body = yield self.request(skt)
        self.assertEqual(body, b"old /")

    @inlineCallbacks
    def test_silentNewGenerationIsGivenUpOn(self):
        """A new generation that never answers: the transfer is given up within the bound."""
        self.patch(connmove, "ANSWER_TIMEOUT", 0.3)
        skt = self.client()
        yield self.request(skt)
        report = yield self.mover().start()
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_TRANSFER_FAILED: 1}))
        self.assertIn("did not answer within 0.3s", report.failure)
        # The copy the silent generation holds goes away with it; the client sees nothing.
        self.theirs.close()
        self.assertTrue(nothingArrived(skt))
        _, body = yield self.request(skt)
        self.assertEqual(body, b"old /")

    @inlineCallbacks
    def test_requestLongerThanTheMoveWindowStays(self):
        """Moving stops before the drain deadline; a connection still busy then stays."""
        skt = self.client()
        skt.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        yield waitUntil(lambda: self.oldApp.waiting, "the slow request to reach the old app")
        self.receive()
        report = yield self.mover(drainTimeout=0.4).start()
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_LATE: 1}))
        request = self.oldApp.waiting.pop()
        request.setHeader(b"content-length", b"0")
        request.finish()
        yield deferToThread(readResponse, skt)

    @inlineCallbacks
    def test_capOnConnectionsInFlight(self):
        """More idle connections than may be in transfer at once all move, a batch at a time."""
        sockets = [self.client() for _ in range(connmove.MAX_IN_FLIGHT * 2 + 3)]
        for skt in sockets:
            yield self.request(skt)
        receiver = self.receive()
        report = yield self.mover().start()
        self.assertEqual(report.moved, len(sockets))
        for skt in sockets:
            _, body = yield self.request(skt)
            self.assertEqual(body, b"new /")
        self.assertEqual(receiver.adopted, len(sockets))
