"""
Moving a plain protocol that provides IMovable (docs/examples/movable_chat.py,
a LineReceiver whose state is the nickname) from one generation's listener
registry to the next, in one process: a real listening socket shared by two
registries, a real client, the mover and the receiver over a real transfer
socketpair. What the client sees is read from its own socket.
"""

from __future__ import annotations

import importlib.util
import os
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver

from tests.support.twogenerations import TwoGenerations
from tests.unit.test_connection_transfer import nothingArrived
from txflip.core import connmove
from txflip.core.connmove import STAYS_LATE, STAYS_WROTE_TOO_MUCH
from txflip.core.imovable import ConnectionMoved

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "docs",
    "examples",
    "movable_chat.py",
)


def loadExample():
    spec = importlib.util.spec_from_file_location("movable_chat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chat = loadExample()


class Recorded(chat.Chat):
    """The example's protocol, recording what happened to it and what it answers with."""

    consent = True

    def connectionMade(self):
        self.factory.made += 1
        super().connectionMade()

    def lineReceived(self, line):
        if self.nick is not None:
            line = line + f" [{self.factory.name}]".encode()
        super().lineReceived(line)

    def saveMoved(self):
        if self.factory.failSave:
            raise RuntimeError("cannot save")
        return super().saveMoved() if self.factory.consent else None

    def connectionLost(self, reason):
        self.factory.lost.append(reason)
        super().connectionLost(reason)


class RecordedFactory(chat.ChatFactory):
    protocol = Recorded

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.made = 0
        self.lost = []
        self.consent = True
        self.failSave = False


class NotMovable(LineReceiver):
    def lineReceived(self, line):
        self.sendLine(b"not movable")


class LineClient:
    """A blocking client that reads whole lines."""

    def __init__(self, skt: socket.socket) -> None:
        self.skt = skt
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.skt.sendall(data)

    def _readLine(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.skt.recv(65536)
            if not chunk:
                raise ConnectionError(f"end of file after {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def readLine(self):
        return deferToThread(self._readLine)


class PlainMoveTests(TwoGenerations):
    def makeFactory(self, name: str):
        return RecordedFactory(name)

    @inlineCallbacks
    def client(self, nick: bytes = b"ann"):
        skt = socket.create_connection((self.address.host, self.address.port), timeout=10)
        self.addCleanup(skt.close)
        client = LineClient(skt)
        self.assertEqual((yield client.readLine()), b"nickname?")
        client.send(nick + b"\n")
        welcome = yield client.readLine()
        self.assertTrue(welcome.startswith(b"welcome " + nick), welcome)
        return client

    @inlineCallbacks
    def test_connectionMovesWithItsState(self):
        """
        The connection moves: the client receives nothing, the new generation's
        protocol has the nickname, was never told connectionMade, and answers;
        the old one's connectionLost is told ConnectionMoved.
        """
        client = yield self.client()
        receiver = self.receive()
        report = yield self.mover().start()
        self.assertEqual((report.moved, dict(report.movedKinds)), (1, {"plain": 1}))
        self.assertTrue(nothingArrived(client.skt))
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [new]")
        self.assertEqual((self.newFactory.made, receiver.adopted), (0, 1))
        [member] = self.newFactory.members
        self.assertEqual(member.nick, "ann")
        [reason] = self.oldFactory.lost
        self.assertTrue(reason.check(ConnectionMoved))
        self.assertEqual(self.oldFactory.members, set())
        self.assertEqual(len(self.newTracker.open()), 1)

    @inlineCallbacks
    def test_partialLineTravels(self):
        """A line half read by the old generation is finished and handled by the new one."""
        client = yield self.client()
        client.send(b"hel")
        while not self.tracker.open()[0]._buffer:
            yield deferLater(reactor, 0.01, lambda: None)
        self.receive()
        report = yield self.mover().start()
        self.assertEqual(report.moved, 1)
        client.send(b"lo\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hello [new]")

    @inlineCallbacks
    def test_writesInTransferReachTheClientOnce(self):
        """
        What the old generation's app writes while the connection is in transfer
        (a broadcast) is written by the new generation, before its own answers.
        """
        client = yield self.client()
        self.receive()
        moving = self.mover().start()
        [protocol] = self.oldFactory.members
        protocol.sendLine(b"said while moving")
        report = yield moving
        self.assertEqual(report.moved, 1)
        client.send(b"hi\n")
        self.assertEqual((yield client.readLine()), b"said while moving")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [new]")

    @inlineCallbacks
    def test_noConsentUntilTheEndStays(self):
        """saveMoved answering None until moving stops: the connection stays, served here."""
        self.oldFactory.consent = False
        client = yield self.client()
        self.receive()
        report = yield self.mover(drainTimeout=0.4).start()
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_LATE: 1}))
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [old]")

    @inlineCallbacks
    def test_consentLaterMoves(self):
        """saveMoved answering None at first: asked again, and moves once it consents."""
        self.oldFactory.consent = False
        client = yield self.client()
        self.receive()
        moving = self.mover().start()
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(moving.called)
        self.oldFactory.consent = True
        report = yield moving
        self.assertEqual(report.moved, 1)
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [new]")

    @inlineCallbacks
    def test_failingSaveStays(self):
        self.oldFactory.failSave = True
        client = yield self.client()
        self.receive()
        report = yield self.mover().start()
        self.assertEqual(dict(report.stayed), {"its saveMoved failed": 1})
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [old]")

    @inlineCallbacks
    def test_newGenerationWithoutIMovableRefuses(self):
        """A new release whose protocol is not movable refuses; the old one keeps serving."""
        client = yield self.client()
        self.receive(Factory.forProtocol(NotMovable))
        report = yield self.mover().start()
        self.assertEqual(
            dict(report.stayed), {"refused: NotMovable does not provide IMovable here": 1}
        )
        self.assertTrue(nothingArrived(client.skt))
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [old]")

    @inlineCallbacks
    def test_manyConnectionsMoveABatchAtATime(self):
        clients = []
        for index in range(connmove.MAX_IN_FLIGHT + 3):
            clients.append((yield self.client(f"u{index}".encode())))
        receiver = self.receive()
        report = yield self.mover().start()
        self.assertEqual(report.moved, len(clients))
        clients[-1].send(b"hi\n")
        last = f"u{len(clients) - 1}: hi [new]".encode()
        for client in clients:
            # Every one is a member of the new generation's chat, and hears it.
            line = yield client.readLine()
            self.assertEqual(line.split(b" (PID")[0], last)
        self.assertEqual(receiver.adopted, len(clients))

    @inlineCallbacks
    def test_tooMuchWrittenInTransferStays(self):
        """More written in transfer than travels with the handover: it stays, nothing lost."""
        client = yield self.client()
        self.receive()
        moving = self.mover().start()
        [protocol] = self.oldFactory.members
        big = b"x" * (connmove.HELD_LIMIT + 1)
        protocol.sendLine(big)
        report = yield moving
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_WROTE_TOO_MUCH: 1}))
        self.assertEqual((yield client.readLine()), big)
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [old]")

    @inlineCallbacks
    def test_deadNewGenerationLeavesItHere(self):
        """A new generation gone before the transfer: the connection stays, served here."""
        client = yield self.client()
        self.theirs.close()
        report = yield self.mover().start()
        self.assertEqual(report.moved, 0)
        self.assertIn("the transfer channel closed", report.failure)
        self.assertTrue(nothingArrived(client.skt))
        client.send(b"hi\n")
        line = yield client.readLine()
        self.assertEqual(line.split(b" (PID")[0], b"ann: hi [old]")
        self.assertEqual(self.oldFactory.lost, [])
