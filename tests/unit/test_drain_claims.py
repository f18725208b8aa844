"""
The drain leaves alone what the mover still claims, and drains the rest as
before (Clock and StringTransport: only the drain's decisions are looked at).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.unit.test_movable_rules import SocketLikeTransport
from txflip.core.drain import ConnectionTracker, Drain, httpChannelOf


class Pending(Resource):
    isLeaf = True

    def render_GET(self, request):
        return NOT_DONE_YET


def requestOf(protocol):
    return httpChannelOf(protocol).requests[0]


class Claims:
    def __init__(self, protocol=None) -> None:
        self.protocol = protocol
        self.moved = 0
        self.active = False

    def claimed(self, protocol) -> bool:
        return protocol is self.protocol


class DrainClaimsTests(TestCase):
    def test_claimedConnectionIsNotToldToClose(self):
        """
        A request in progress on a connection the mover claims keeps its
        keep-alive; one on an unclaimed connection gets C{Connection: close}.
        """
        tracker = ConnectionTracker()
        site = tracker.track(Site(Pending(), timeout=None))
        protocols = []
        for _ in range(2):
            protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = SocketLikeTransport()
            transport.protocol = protocol
            protocol.makeConnection(transport)
            protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            protocols.append(protocol)
        claimed, unclaimed = protocols
        clock = Clock()
        drain = Drain(clock, tracker, timeout=10, claims=Claims(claimed))
        drain.start()
        clock.advance(0.1)
        self.assertIsNone(requestOf(claimed).responseHeaders.getRawHeaders(b"connection"))
        self.assertEqual(
            requestOf(unclaimed).responseHeaders.getRawHeaders(b"connection"), [b"close"]
        )
        self.assertTrue(httpChannelOf(claimed).persistent)
        self.assertFalse(httpChannelOf(unclaimed).persistent)
        clock.advance(11)
        self.assertTrue(drain.done.called)

    def test_notOverWhileConnectionsMove(self):
        """
        With no connection left, the drain is still not over while the mover
        moves (connections may yet arrive, or come back unmoved); it ends
        once the mover stops.
        """
        claims = Claims()
        claims.active = True
        clock = Clock()
        drain = Drain(clock, ConnectionTracker(), timeout=10, claims=claims)
        drain.start()
        clock.advance(5)
        self.assertFalse(drain.done.called)
        claims.active = False
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(drain.done), 0)

    def test_claimedLongLivedConnectionIsToldOnlyOnceUnclaimed(self):
        """
        A long-lived connection that may move (an IMovable WebSocket, a chat) is
        not told to close while the mover claims it; once it stays, it is told
        at once, as it would have been without moving.
        """
        told = []

        class LongLived(Protocol):
            def drainStarted(self, deadline, handedOver):
                told.append(self)

        tracker = ConnectionTracker()
        factory = tracker.track(Factory.forProtocol(LongLived))
        protocols = []
        for _ in range(2):
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = SocketLikeTransport()
            transport.protocol = protocol
            protocol.makeConnection(transport)
            protocols.append(protocol)
        claimed, unclaimed = protocols
        claims = Claims(claimed)
        clock = Clock()
        drain = Drain(clock, tracker, timeout=10, claims=claims, closeSpread=1.0, handedOver=True)
        drain.start()
        clock.advance(2)
        self.assertEqual(told, [unclaimed])
        claims.protocol = None
        clock.advance(0.1)
        self.assertEqual(told, [unclaimed, claimed])
