"""
The HTTP/2 GOAWAY sequence of a drain, in this process and in simulated time:
a real twisted.web Site switching to Twisted's HTTP/2 connection as it does
after ALPN, real HTTP/2 frames (written by the C{h2} library's client side,
read with C{hyperframe}), a L{Clock} for the reactor and the drain alike.

The client is driven by hand rather than by a client state machine, since
C{h2} treats any GOAWAY as the end of the connection: the tests decide
what the client sends after each GOAWAY.
"""

from __future__ import annotations

import h2.config
import h2.connection
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
)
from twisted.internet.protocol import Factory
from twisted.web import http

from tests.unit.test_drain import INTERVAL, TIMEOUT, ClosingTransport, DrainTestCase
from txflip.core.h2drain import (
    FINAL_GOAWAY_FALLBACK,
    MAX_STREAM_ID,
    REFUSED_STREAM,
    h2ConnectionOf,
)
from txflip.core.movable import STAYS_HTTP2, verdict
from txflip.core.twistedprivate import h2ConnectionClass

H2Connection = h2ConnectionClass()

FALLBACK = min(FINAL_GOAWAY_FALLBACK, TIMEOUT / 4)


def parseFrames(data: bytes) -> list:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


class H2Transport(ClosingTransport):
    """A transport on which ALPN chose C{h2}, as a TLS transport says."""

    negotiatedProtocol = b"h2"


class Client:
    """The client end of one HTTP/2 connection, driven by the test."""

    def __init__(self, protocol, transport: H2Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.send()

    def send(self) -> None:
        self.protocol.dataReceived(self.h2.data_to_send())

    def request(self, path: str) -> int:
        """Open a stream asking for C{path}; return its id."""
        streamId = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "x")]
        self.h2.send_headers(streamId, headers, end_stream=True)
        self.send()
        return streamId

    def ackPing(self, opaque: bytes) -> None:
        self.protocol.dataReceived(PingFrame(0, flags=["ACK"], opaque_data=opaque).serialize())

    def received(self) -> list:
        """Every frame the server wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return parseFrames(data)


def goAways(frames: list) -> list[tuple[int, int]]:
    return [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)]


def pings(frames: list) -> list[bytes]:
    return [f.opaque_data for f in frames if isinstance(f, PingFrame) and "ACK" not in f.flags]


def ended(frames: list) -> list[int]:
    """Streams whose response ended in these frames."""
    return [
        f.stream_id
        for f in frames
        if isinstance(f, DataFrame | HeadersFrame) and "END_STREAM" in f.flags
    ]


class HTTP2DrainCase(DrainTestCase):
    def setUp(self) -> None:
        if H2Connection is None:
            self.skipTest("twisted[http2] is not installed")
        super().setUp()
        # Twisted builds its HTTP/2 connection with the global reactor; this one runs on the clock.
        self.patch(http, "H2Connection", lambda: H2Connection(reactor=self.clock))

    def h2Connect(self) -> Client:
        protocol = self.site.buildProtocol(None)
        transport = H2Transport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        client = Client(protocol, transport)
        self.clock.advance(0)
        client.received()  # the server's SETTINGS
        return client

    def finishAll(self) -> None:
        for request in self.resource.pending:
            request.finish()
        self.resource.pending.clear()
        self.clock.advance(0)

    def roundTrip(self, client: Client) -> list:
        """The drain has started: answer the first GOAWAY's PING; return what came first."""
        first = client.received()
        [opaque] = pings(first)
        client.ackPing(opaque)
        return first


class GoAwaySequenceTests(HTTP2DrainCase):
    def test_firstGoAwayAndPingAtDrainStart(self) -> None:
        """At once: GOAWAY naming the highest stream id, NO_ERROR, then a PING."""
        client = self.h2Connect()
        client.request("/slow")
        self.drain()
        frames = client.received()
        self.assertEqual(goAways(frames), [(MAX_STREAM_ID, 0)])
        self.assertEqual(len(pings(frames)), 1)
        kinds = [type(f) for f in frames]
        self.assertLess(kinds.index(GoAwayFrame), kinds.index(PingFrame))
        self.assertIsNone(client.transport.closedBy)

    def test_finalGoAwayAfterRoundTripStreamsFinishThenClose(self) -> None:
        """
        The PING's answer brings the final GOAWAY (the last stream served);
        the streams in flight are answered, and the connection closes once
        the last of them ends.
        """
        client = self.h2Connect()
        first, second = client.request("/slow"), client.request("/slow")
        done = self.drain()
        self.roundTrip(client)
        self.assertEqual(goAways(client.received()), [(second, 0)])
        self.advance(TIMEOUT / 2)
        self.assertIsNone(client.transport.closedBy)
        self.resource.pending.pop(0).finish()
        self.clock.advance(0)
        self.assertEqual(ended(client.received()), [first])
        self.assertIsNone(client.transport.closedBy)
        self.finishAll()
        self.assertEqual(ended(client.received()), [second])
        self.assertEqual(client.transport.closedBy, "loseConnection")
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])
        self.assertTrue(any("1 HTTP/2 after GOAWAY, 0 by the app" in line for line in self.logs))

    def test_streamCrossingTheFirstGoAwayIsServed(self) -> None:
        """A stream the client opened before it saw the first GOAWAY is served."""
        client = self.h2Connect()
        self.drain()
        first = client.received()
        crossing = client.request("/quick")
        self.clock.advance(0)
        client.ackPing(pings(first)[0])
        self.clock.advance(0)
        frames = client.received()
        self.assertEqual(goAways(frames), [(crossing, 0)])
        self.assertEqual(ended(frames), [crossing])
        self.assertEqual(client.transport.closedBy, "loseConnection")

    def test_streamAfterFinalGoAwayRefused(self) -> None:
        """A stream opened after the final GOAWAY gets REFUSED_STREAM; the app never sees it."""
        client = self.h2Connect()
        held = client.request("/slow")
        done = self.drain()
        self.roundTrip(client)
        client.received()
        late = client.request("/slow")
        frames = client.received()
        self.assertEqual(
            [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)],
            [(late, REFUSED_STREAM)],
        )
        self.assertEqual(len(self.resource.pending), 1)
        self.finishAll()
        self.assertEqual(ended(client.received()), [held])
        self.assertEqual(client.transport.closedBy, "loseConnection")
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])
        self.assertTrue(any("1 stream(s) opened after the final GOAWAY refused" in line
                            for line in self.logs), self.logs)  # fmt: skip

    def test_finalGoAwayWithoutPingAnswer(self) -> None:
        """A client that never answers the PING gets the final GOAWAY after the fallback."""
        client = self.h2Connect()
        held = client.request("/slow")
        self.drain()
        client.received()
        self.advance(FALLBACK - INTERVAL)
        self.assertEqual(goAways(client.received()), [])
        self.advance(INTERVAL * 2)
        self.assertEqual(goAways(client.received()), [(held, 0)])
        self.assertIsNone(client.transport.closedBy)
        self.finishAll()
        self.assertEqual(client.transport.closedBy, "loseConnection")

    def test_idleConnectionClosesAfterOneRoundTrip(self) -> None:
        """Nothing in flight: closed as soon as the PING is answered, long before any grace."""
        client = self.h2Connect()
        client.request("/quick")
        self.clock.advance(0)
        client.received()
        done = self.drain()
        self.roundTrip(client)
        self.clock.advance(0)
        self.assertEqual(goAways(client.received()), [(1, 0)])
        self.assertEqual(client.transport.closedBy, "loseConnection")
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])

    def test_closeWaitsForABlockedTransport(self) -> None:
        """
        While the transport has asked Twisted to stop producing, the final
        GOAWAY waits in Twisted's queue, and the close waits for it to be written.
        """
        client = self.h2Connect()
        self.drain()
        first = client.received()
        h2ConnectionOf(client.protocol).pauseProducing()
        client.ackPing(pings(first)[0])
        self.clock.advance(0)
        self.assertEqual(client.received(), [])
        self.assertIsNone(client.transport.closedBy)
        h2ConnectionOf(client.protocol).resumeProducing()
        self.assertEqual(goAways(client.received()), [(0, 0)])
        self.assertEqual(client.transport.closedBy, "loseConnection")

    def test_eachConnectionToldOnce(self) -> None:
        """The drain's periodic checks send no second first-GOAWAY."""
        client = self.h2Connect()
        client.request("/slow")
        self.drain()
        self.assertEqual(len(goAways(client.received())), 1)
        self.advance(INTERVAL * 5)
        self.assertEqual(goAways(client.received()), [])

    def test_becomesHTTP2DuringTheDrain(self) -> None:
        """A connection whose first bytes arrive after the drain began is told once it speaks h2."""
        protocol = self.site.buildProtocol(None)
        transport = H2Transport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.drain()
        client = Client(protocol, transport)
        self.advance(INTERVAL * 2)
        self.assertEqual(goAways(client.received()), [(MAX_STREAM_ID, 0)])

    def test_deadlineAbortsAStreamThatNeverEnds(self) -> None:
        client = self.h2Connect()
        client.request("/slow")
        done = self.drain()
        self.roundTrip(client)
        self.advance(TIMEOUT + 0.1)
        self.assertEqual(client.transport.closedBy, "abortConnection")
        self.assertEqual(done, [1])

    def test_staysWithItsGeneration(self) -> None:
        """An HTTP/2 connection never moves, and says so as HTTP/2."""
        client = self.h2Connect()
        self.assertEqual((verdict(client.protocol).kind, verdict(client.protocol).reason),
                         ("stays", STAYS_HTTP2))  # fmt: skip


class PriorKnowledgeTests(HTTP2DrainCase):
    """
    twisted.web speaks HTTP/2 only after ALPN h2; an app that serves
    cleartext HTTP/2 (h2c, prior knowledge) with Twisted's HTTP/2 connection
    as its protocol gets the same GOAWAY sequence.
    """

    def test_h2cConnectionToldGoAway(self) -> None:
        site = self.site

        def build(addr):
            connection = H2Connection(reactor=self.clock)
            connection.site, connection.requestFactory = site, site.requestFactory
            return connection

        factory = Factory()
        factory.buildProtocol = build
        self.tracker.track(factory)
        protocol = factory.buildProtocol(None)
        transport = ClosingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        client = Client(protocol, transport)
        self.clock.advance(0)
        client.received()
        held = client.request("/slow")
        self.assertEqual(verdict(protocol).reason, STAYS_HTTP2)
        done = self.drain()
        self.roundTrip(client)
        self.assertEqual(goAways(client.received()), [(held, 0)])
        self.finishAll()
        self.assertEqual(ended(client.received()), [held])
        self.assertEqual(transport.closedBy, "loseConnection")
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])
