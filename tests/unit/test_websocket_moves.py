"""
Moving an Autobahn WebSocket whose protocol provides IMovable, through a
factory and through WebSocketResource in a Site, in one process: the client is
a real C{websockets} client in a thread, on a real socket.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from websockets.sync.client import connect

from tests.support.movablews import CountingEcho, CountingFactory, acceptDeflate, siteWith
from tests.support.twogenerations import TwoGenerations
from tests.unit.test_connection_transfer import nothingArrived
from txflip.core.connmove import STAYS_LATE
from txflip.core.twistedprivate import webSocketFactoryOf
from txflip.core.wsmove import STAYS_EXTENSION


class Client:
    """A blocking WebSocket client, each call run in a thread."""

    def __init__(self, testCase: TestCase, url: str, **options) -> None:
        self._testCase = testCase
        self._url = url
        self._options = options
        self.ws = None

    @inlineCallbacks
    def open(self):
        self.ws = yield deferToThread(connect, self._url, open_timeout=10, **self._options)
        # Closed in a thread: the close handshake needs the reactor.
        self._testCase.addCleanup(deferToThread, self.ws.close)

    def say(self, text: str):
        def sayAndRead():
            self.ws.send(text)
            return self.ws.recv(timeout=10)

        return deferToThread(sayAndRead)


class FactoryMoveTests(TwoGenerations):
    path = "/"

    def makeFactory(self, name: str):
        return CountingFactory(label=name)

    def webSockets(self, factory):
        """The WebSocket factory behind C{factory}."""
        return factory

    @inlineCallbacks
    def client(self, **options) -> Client:
        client = Client(self, f"ws://127.0.0.1:{self.address.port}{self.path}", **options)
        yield client.open()
        return client

    @inlineCallbacks
    def test_webSocketMovesBetweenMessages(self):
        """
        The count goes on in the new generation, the client receives nothing at
        the move, and neither onConnect nor onOpen is called again.
        """
        client = yield self.client(subprotocols=None)
        self.assertEqual((yield client.say("a")), "1:old:a")
        self.assertEqual((yield client.say("b")), "2:old:b")
        receiver = self.receive()
        report = yield self.mover().start()
        self.assertEqual(dict(report.movedKinds), {"WebSocket": 1})
        self.assertTrue(nothingArrived(client.ws.socket))
        self.assertEqual((yield client.say("c")), "3:new:c")
        self.assertEqual((yield client.say("d")), "4:new:d")
        new = self.webSockets(self.newFactory)
        self.assertEqual((new.connects, new.opens, new.restored), (0, 0, 1))
        self.assertEqual(receiver.adopted, 1)
        [moved] = self.newTracker.open()
        self.assertIsInstance(moved, CountingEcho)
        self.assertEqual(moved.http_request_path, self.path)

    @inlineCallbacks
    def test_movedWebSocketIsNotTimedOutAsAHandshake(self):
        """
        The new generation's protocol is open, not waiting for an opening
        handshake: its handshake timeout does not drop it, and its automatic
        pings run as after a handshake.
        """
        self.webSockets(self.newFactory).setProtocolOptions(
            openHandshakeTimeout=0.2, autoPingInterval=0.1, autoPingTimeout=2
        )
        client = yield self.client()
        self.assertEqual((yield client.say("a")), "1:old:a")
        self.receive()
        yield self.mover().start()
        yield deferLater(reactor, 0.6, lambda: None)
        self.assertEqual((yield client.say("b")), "2:new:b")
        [moved] = self.newTracker.open()
        self.assertGreater(moved.autoPingPendingSeq, 0)

    @inlineCallbacks
    def test_movesAgain(self):
        """A moved WebSocket is tracked by the new generation, so it can move again."""
        client = yield self.client()
        self.assertEqual((yield client.say("a")), "1:old:a")
        self.receive()
        yield self.mover().start()
        self.assertEqual((yield client.say("b")), "2:new:b")
        [moved] = self.newTracker.open()
        self.assertEqual(moved.count, 2)

    @inlineCallbacks
    def test_unreadFramesTravel(self):
        """A frame read by the old generation but not yet handled is handled by the new one."""
        client = yield self.client()
        self.assertEqual((yield client.say("a")), "1:old:a")
        [protocol] = self.tracker.open()
        frame = b"\x81\x85abcd" + bytes(c ^ k for c, k in zip(b"hello", b"abcd" * 2, strict=False))
        protocol.transport.stopReading()  # as if read, not handled: the frame waits in data
        protocol.data = frame[:3]
        self.receive()
        yield self.mover().start()
        client.ws.socket.sendall(frame[3:])
        answer = yield deferToThread(client.ws.recv, 10)
        self.assertEqual(answer, "2:new:hello")

    @inlineCallbacks
    def test_noConsentStaysAndIsServedHere(self):
        self.webSockets(self.oldFactory).consents = False
        client = yield self.client()
        self.receive()
        report = yield self.mover(drainTimeout=0.4).start()
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_LATE: 1}))
        self.assertEqual((yield client.say("a")), "1:old:a")

    @inlineCallbacks
    def test_deflateWithContextTakeoverStays(self):
        self.webSockets(self.oldFactory).setProtocolOptions(
            perMessageCompressionAccept=acceptDeflate
        )
        client = yield self.client(compression="deflate")
        self.assertEqual((yield client.say("a")), "1:old:a")
        self.receive()
        report = yield self.mover().start()
        self.assertEqual((report.moved, dict(report.stayed)), (0, {STAYS_EXTENSION: 1}))
        self.assertEqual((yield client.say("b")), "2:old:b")


class ResourceMoveTests(FactoryMoveTests):
    """The same, through WebSocketResource at /ws in a Site."""

    path = "/ws"

    def makeFactory(self, name: str):
        return siteWith(CountingFactory(label=name))

    def webSockets(self, factory):
        return webSocketFactoryOf(factory.resource.children[b"ws"])

    @inlineCallbacks
    def test_newGenerationWithoutTheResourceRefuses(self):
        client = yield self.client()
        self.receive(Site(Resource()))
        report = yield self.mover().start()
        self.assertEqual(dict(report.stayed), {"refused: no WebSocket resource serves /ws here": 1})
        self.assertEqual((yield client.say("a")), "1:old:a")
