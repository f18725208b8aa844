"""
The drain's goodbyes to long-lived connections: when each is told (spread
over the window, on a Clock), what an Autobahn WebSocket is sent (a real
Autobahn protocol), and a connection upgraded off HTTP by WebSocketResource
staying known to the tracker (over a real loopback connection).
"""

from __future__ import annotations

import struct

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from txaio._common import _BatchedTimer

from tests.support.procs import waitUntil
from txflip.core.drain import ConnectionTracker
from txflip.core.farewell import Farewell

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class AppProtocol(Protocol):
    """An app's own long-lived protocol, taking part through drainStarted."""

    def __init__(self, clock, log) -> None:
        self._clock = clock
        self._log = log

    def drainStarted(self, deadline: float, handedOver: bool) -> None:
        self._log.append((self, self._clock.seconds(), deadline, handedOver))


class SpreadTests(TestCase):
    def test_spreadEvenlyOverTheWindow(self):
        clock, told = task.Clock(), []
        clock.advance(100)
        protocols = [AppProtocol(clock, told) for _ in range(4)]
        plain = Protocol()
        farewell = Farewell(clock, spread=2.0, deadline=130.0, handedOver=True)
        self.assertEqual(farewell.plan([*protocols, plain]), 4)
        for _ in range(12):
            farewell.tellDue([*protocols, plain])
            clock.advance(0.25)
        self.assertEqual([p for p, *_ in told], protocols)
        self.assertEqual([t - 100 for _, t, _, _ in told], [0.0, 0.5, 1.0, 1.5])
        self.assertEqual({(d, h) for _, _, d, h in told}, {(130.0, True)})

    def test_lateArrivalToldAtOnce(self):
        """A connection that shows up during the drain (upgraded since) is told at once."""
        clock, told = task.Clock(), []
        farewell = Farewell(clock, spread=10.0, deadline=30.0, handedOver=False)
        farewell.plan([])
        clock.advance(1)
        late = AppProtocol(clock, told)
        farewell.tellDue([late])
        farewell.tellDue([late])
        self.assertEqual(told, [(late, 1.0, 30.0, False)])

    def test_failureIsNotRetried(self):
        clock, calls = task.Clock(), []

        class Broken(Protocol):
            def drainStarted(self, deadline, handedOver):
                calls.append(deadline)
                raise RuntimeError("oops")

        broken = Broken()
        farewell = Farewell(clock, spread=0, deadline=5.0, handedOver=True)
        farewell.plan([broken])
        farewell.tellDue([broken])
        farewell.tellDue([broken])
        self.assertEqual(calls, [5.0])
        self.flushLoggedErrors()


class AutobahnCloseTests(TestCase):
    def _openWebSocket(self, clock):
        factory = WebSocketServerFactory(reactor=clock)
        factory.protocol = WebSocketServerProtocol
        # Autobahn's timers run on txaio's loop, the global reactor: put them on the Clock.
        factory._batched_timer = _BatchedTimer(1000, 100, clock.seconds, clock.callLater)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(HANDSHAKE)
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        transport.clear()
        return protocol, transport

    def _closeFrame(self, handedOver: bool) -> tuple[bytes, WebSocketServerProtocol]:
        clock = task.Clock()
        protocol, transport = self._openWebSocket(clock)
        farewell = Farewell(clock, spread=0, deadline=30.0, handedOver=handedOver)
        farewell.plan([protocol])
        farewell.tellDue([protocol])
        return transport.value(), protocol

    def test_serviceRestartAtAHandoff(self):
        frame, protocol = self._closeFrame(handedOver=True)
        self.assertEqual(frame, b"\x88\x11" + struct.pack("!H", 1012) + b"service restart")
        self.assertEqual(protocol.state, protocol.STATE_CLOSING)
        self.assertGreaterEqual(protocol.closeHandshakeTimeout, 29.0)

    def test_goingAwayAtShutdown(self):
        frame, _ = self._closeFrame(handedOver=False)
        self.assertEqual(frame, b"\x88\x0c" + struct.pack("!H", 1001) + b"going away")

    def test_messagesAfterTheCloseAreDropped(self):
        """An echo of a message that crossed the close frame must not raise inside onMessage."""
        _, protocol = self._closeFrame(handedOver=True)
        protocol.sendMessage(b"late echo")
        self.assertEqual(protocol.state, protocol.STATE_CLOSING)


class ClosingClient(WebSocketClientProtocol):
    def onClose(self, wasClean, code, reason):
        self.factory.closed.callback((wasClean, code))


class UpgradedConnectionTests(TestCase):
    @defer.inlineCallbacks
    def test_webSocketResourceUpgradeStaysTracked(self):
        tracker = ConnectionTracker()
        root = Resource()
        wsFactory = WebSocketServerFactory()
        wsFactory.protocol = WebSocketServerProtocol
        root.putChild(b"ws", WebSocketResource(wsFactory))
        port = reactor.listenTCP(0, tracker.track(Site(root)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"ws://127.0.0.1:{port.getHost().port}/ws"
        clientFactory = WebSocketClientFactory(url)
        clientFactory.protocol = ClosingClient
        clientFactory.closed = defer.Deferred()
        reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)

        yield waitUntil(
            lambda: any(isinstance(p, WebSocketServerProtocol) for p in tracker.open()),
            "the upgrade to show in the tracker",
            10,
        )
        [upgraded] = tracker.open()
        self.assertEqual(upgraded.state, upgraded.STATE_OPEN)

        farewell = Farewell(reactor, spread=0, deadline=reactor.seconds() + 10, handedOver=True)
        farewell.plan(tracker.open())
        farewell.tellDue(tracker.open())
        wasClean, code = yield clientFactory.closed
        self.assertEqual((wasClean, code), (True, 1012))
        yield waitUntil(lambda: not tracker.open(), "the connection to close", 10)
