"""
Which connections may move to the next generation, decided on Twisted's own
HTTP channel over a StringTransport (no sockets: only the channel's state
matters here, and every rule reads it).
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from txaio._common import _BatchedTimer
from zope.interface import implementer

from tests.support.movablews import CountingFactory
from tests.unit.test_farewell import HANDSHAKE
from txflip.core.appmove import STATE_LIMIT, STAYS_TOO_LARGE, SaveFailed, saveForMove
from txflip.core.imovable import IMovable
from txflip.core.movable import (
    BUFFERED_LIMIT,
    LISTENER_KEY,
    PLAIN,
    STAYS_CLOSING,
    STAYS_NOT_HTTP,
    STAYS_TLS,
    STAYS_UPGRADED,
    WEBSOCKET,
    Verdict,
    verdict,
)
from txflip.core.wsmove import STAYS_EXTENSION
from txflip.tls.selfsigned import generate

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class Slow(Resource):
    """Answers at once, except /slow, which waits until told to finish."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting = []

    def render_GET(self, request):
        if request.path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        return b"ok"


class SocketLikeTransport(StringTransport):
    """A StringTransport that, like a socket transport, knows its protocol and takes TCP options."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


def connect(site: Site):
    protocol = site.buildProtocol(ADDRESS)
    transport = SocketLikeTransport()
    transport.protocol = protocol
    setattr(transport, LISTENER_KEY, "tcp:127.0.0.1:8080")
    protocol.makeConnection(transport)
    return protocol, transport


class MovableRulesTests(TestCase):
    def setUp(self) -> None:
        self.resource = Slow()
        self.site = Site(self.resource, timeout=None)
        self.protocol, self.transport = connect(self.site)

    def test_freshConnectionMoves(self) -> None:
        """A connection that has sent nothing yet moves, with nothing to carry."""
        seen = verdict(self.protocol)
        self.assertEqual((seen.kind, seen.buffered), ("movable", b""))

    def test_betweenRequestsMoves(self) -> None:
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", self.transport.value())
        self.assertEqual(verdict(self.protocol).kind, "movable")

    def test_requestInProgressWaits(self) -> None:
        """While a response is being prepared the connection is busy; once it ends, it moves."""
        self.protocol.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = verdict(self.protocol)
        self.assertEqual((seen.kind, seen.reason), ("busy", "a request is in progress"))
        request = self.resource.waiting.pop()
        request.write(b"done")
        request.finish()
        self.assertEqual(verdict(self.protocol).kind, "movable")

    def test_partialRequestLineTravels(self) -> None:
        """Bytes of a request line not yet complete go with the connection."""
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /gues")
        seen = verdict(self.protocol)
        self.assertEqual((seen.kind, seen.buffered), ("movable", b"POST /gues"))

    def test_partialHeadersWait(self) -> None:
        """Once a request line is parsed, the request is under way: it is not moved."""
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
        self.assertEqual(verdict(self.protocol).kind, "busy")

    def test_partialBodyWaits(self) -> None:
        self.protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
        self.assertEqual(verdict(self.protocol).kind, "busy")

    def test_pipelinedRequestWaits(self) -> None:
        """A second request already buffered behind a slow one keeps the connection busy."""
        self.protocol.dataReceived(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(verdict(self.protocol).kind, "busy")
        request = self.resource.waiting.pop()
        request.finish()
        self.assertEqual(self.transport.value().count(b"200 OK"), 2)
        self.assertEqual(verdict(self.protocol).kind, "movable")

    def test_nonPersistentStays(self) -> None:
        """A client that said Connection: close is closing: it stays to be closed here."""
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(verdict(self.protocol).reason, STAYS_CLOSING)

    def test_otherProtocolStays(self) -> None:
        protocol = Factory.forProtocol(Protocol).buildProtocol(ADDRESS)
        protocol.makeConnection(StringTransport())
        self.assertEqual(verdict(protocol).reason, STAYS_NOT_HTTP)

    def test_upgradedConnectionStays(self) -> None:
        """A socket whose protocol was replaced (as a WebSocket upgrade does) stays."""
        self.transport.protocol = Protocol()
        self.assertEqual(verdict(self.protocol).reason, STAYS_UPGRADED)

    def test_tlsStays(self) -> None:
        """HTTP inside TLS stays: the TLS session lives in this process."""
        options = PrivateCertificate.loadPEM(generate(["localhost"])).options()
        tls = TLSMemoryBIOFactory(options, False, self.site).buildProtocol(ADDRESS)
        transport = SocketLikeTransport()
        transport.protocol = tls
        tls.makeConnection(transport)
        # txflip tracks the HTTP protocol inside TLS (listenSSL wraps the tracked factory).
        self.assertEqual(verdict(tls.wrappedProtocol).reason, STAYS_TLS)


@implementer(IMovable)
class MovableLines(LineReceiver):
    def lineReceived(self, line):
        pass

    def saveMoved(self):
        return b""

    def restoreMoved(self, state):
        pass


class MovableProtocolRulesTests(TestCase):
    """A protocol that provides IMovable: when its connection can move, and what goes with it."""

    def connect(self, factory):
        protocol = factory.buildProtocol(ADDRESS)
        transport = SocketLikeTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_partialLineTravels(self) -> None:
        protocol, _ = self.connect(Factory.forProtocol(MovableLines))
        protocol.dataReceived(b"first\r\nsec")
        seen = verdict(protocol)
        self.assertEqual((seen.kind, seen.buffered, seen.moves), ("movable", b"sec", PLAIN))

    def test_outputNotWrittenWaits(self) -> None:
        protocol, transport = self.connect(Factory.forProtocol(MovableLines))
        transport.dataBuffer = b"unsent"  # what a socket transport holds until it can write
        self.assertEqual(verdict(protocol).kind, "busy")

    def test_tlsStays(self) -> None:
        options = PrivateCertificate.loadPEM(generate(["localhost"])).options()
        factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(MovableLines))
        tls, _ = self.connect(factory)
        self.assertEqual(verdict(tls.wrappedProtocol).reason, STAYS_TLS)

    def test_closingStays(self) -> None:
        protocol, transport = self.connect(Factory.forProtocol(MovableLines))
        transport.loseConnection()
        self.assertEqual(verdict(protocol).reason, STAYS_CLOSING)


class MovableWebSocketRulesTests(TestCase):
    """An Autobahn WebSocket that provides IMovable moves only between messages."""

    def setUp(self) -> None:
        factory = CountingFactory(label="here")
        clock = Clock()
        factory._batched_timer = _BatchedTimer(1000, 100, clock.seconds, clock.callLater)
        self.protocol = factory.buildProtocol(ADDRESS)
        self.transport = SocketLikeTransport()
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def open(self) -> None:
        self.protocol.dataReceived(HANDSHAKE)
        self.assertEqual(self.protocol.state, self.protocol.STATE_OPEN)

    def test_handshakeUnderWayWaits(self) -> None:
        self.assertEqual(verdict(self.protocol).kind, "busy")

    def test_openBetweenMessagesMoves(self) -> None:
        self.open()
        self.transport.clear()
        seen = verdict(self.protocol)
        self.assertEqual((seen.kind, seen.moves), ("movable", WEBSOCKET))

    def test_fragmentedMessageWaits(self) -> None:
        """Inside a fragmented message (a first frame without FIN) it waits for the last one."""
        self.open()
        self.protocol.dataReceived(
            b"\x01\x83abcd" + bytes(c ^ k for c, k in zip(b"hel", b"abc", strict=True))
        )
        self.assertEqual(verdict(self.protocol).reason, "a WebSocket message is being read")

    def test_partialFrameWaits(self) -> None:
        """A frame whose payload is half read: the parser is inside it."""
        self.open()
        self.protocol.dataReceived(b"\x81\x85abcd" + b"he")
        self.assertEqual(verdict(self.protocol).reason, "a WebSocket message is being read")

    def test_extensionStays(self) -> None:
        self.open()
        self.protocol.websocket_extensions_in_use = [object()]
        self.assertEqual(verdict(self.protocol).reason, STAYS_EXTENSION)


class CarriedStateTests(TestCase):
    """What a movable connection carries, and when it is too much for one packet."""

    def webSocket(self, state: bytes, headerBytes: int) -> SimpleNamespace:
        return SimpleNamespace(
            saveMoved=lambda: state,
            http_request_uri="/",
            http_request_host="x",
            http_headers={"cookie": "c" * headerBytes},
            websocket_version=13,
            websocket_origin="",
            websocket_protocols=[],
            websocket_protocol_in_use=None,
        )

    def test_stateAndUnreadBytesTravel(self) -> None:
        seen = Verdict("movable", buffered=b"unread", moves=PLAIN)
        header, payload = saveForMove(SimpleNamespace(saveMoved=lambda: b"nick"), seen)
        self.assertEqual((header, payload), ({"move": PLAIN, "state": 4}, b"nickunread"))

    def test_notNowIsNone(self) -> None:
        seen = Verdict("movable", moves=PLAIN)
        self.assertIsNone(saveForMove(SimpleNamespace(saveMoved=lambda: None), seen))

    def test_notBytesFails(self) -> None:
        seen = Verdict("movable", moves=PLAIN)
        with self.assertRaises(SaveFailed) as caught:
            saveForMove(SimpleNamespace(saveMoved=lambda: "nick"), seen)
        self.assertIn("returned str, not bytes or None", str(caught.exception))

    def test_tooLargeForOnePacketStays(self) -> None:
        """The largest state and unread bytes, plus a big handshake, would not fit: it stays."""
        seen = Verdict("movable", buffered=b"u" * BUFFERED_LIMIT, moves=WEBSOCKET)
        fits = self.webSocket(b"s" * STATE_LIMIT, 1000)
        self.assertEqual(saveForMove(fits, seen)[0]["move"], WEBSOCKET)
        with self.assertRaises(SaveFailed) as caught:
            saveForMove(self.webSocket(b"s" * STATE_LIMIT, 20000), seen)
        self.assertEqual(caught.exception.reason, STAYS_TOO_LARGE)
