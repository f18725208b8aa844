"""
Ending an HTTP/2 connection gracefully when the drain starts (RFC 9113, 6.8).

An HTTP/2 connection never says C{Connection: close}: its client keeps
opening streams on it until told to stop. So when the drain starts, each
HTTP/2 connection gets the two-step GOAWAY:

  1. A GOAWAY (C{NO_ERROR}) whose last stream id is 2^31-1, followed by a
     PING: the client opens no new stream on this connection from now on,
     and every stream it already sent is still served.
  2. When the PING's answer comes back (one round trip: every stream the
     client opened before it saw the first GOAWAY has arrived by then), or
     after L{FINAL_GOAWAY_FALLBACK} seconds if it never does, a second
     GOAWAY names the last stream this generation serves.

Streams in flight finish here. A stream the client opens after the final
GOAWAY (a client that ignores it) is refused with C{REFUSED_STREAM}, which
tells the client it was not processed and is safe to retry elsewhere.
Once the final GOAWAY is out and no stream is in progress, the connection
is closed, so the client's next request opens a connection to whichever
generation accepts now.

Twisted's HTTP/2 server is private: every private name used is in
L{txflip.core.twistedprivate}.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from txflip.core import twistedprivate
from txflip.core.log import log

try:
    from h2.events import PingAckReceived, RequestReceived
    from h2.exceptions import StreamClosedError
    from hyperframe.frame import GoAwayFrame, PingFrame
except ImportError:  # no twisted[http2]: no connection speaks HTTP/2, and nothing here runs
    pass

MAX_STREAM_ID = 2**31 - 1
"""The first GOAWAY's last stream id: "every stream you have sent is served"."""

FINAL_GOAWAY_FALLBACK = 2.0
"""Seconds to wait for the PING's answer before sending the final GOAWAY anyway."""

PING_DATA = b"txflip\x00\x02"
"""The opaque data of the round-trip PING (8 bytes)."""

NO_ERROR = 0x0
REFUSED_STREAM = 0x7


def h2ConnectionOf(protocol):
    """Twisted's HTTP/2 connection behind C{protocol}, if it speaks HTTP/2 now."""
    seen = 0
    while protocol is not None and seen < 8:
        if twistedprivate.isH2Connection(protocol):
            return protocol
        inner = twistedprivate.channelBehind(protocol)
        if twistedprivate.isH2Connection(inner):
            return inner
        protocol = getattr(protocol, "wrappedProtocol", None)
        seen += 1
    return None


def _goAwayFrame(lastStreamId: int) -> bytes:
    return GoAwayFrame(0, last_stream_id=lastStreamId, error_code=NO_ERROR).serialize()


def _pingFrame() -> bytes:
    return PingFrame(0, opaque_data=PING_DATA).serialize()


class GracefulGoAway:
    """
    The two-step GOAWAY of one HTTP/2 connection, and its close once idle.

    @ivar lastStreamId: the last stream served, once the final GOAWAY is out.
    """

    def __init__(
        self,
        connection,
        reactor,
        fallback: float = FINAL_GOAWAY_FALLBACK,
        onRefused: Callable[[], object] = lambda: None,
    ) -> None:
        self._connection = connection
        self._reactor = reactor
        self._fallback = fallback
        self._onRefused = onRefused
        self._fallbackCall = None
        self.lastStreamId: int | None = None
        self.closing = False

    def start(self) -> None:
        """Send the first GOAWAY and the PING; the rest follows by itself."""
        self._filterReceivedEvents()
        twistedprivate.whenStreamDone(self._connection, lambda streamID: self._closeIfIdle())
        twistedprivate.writeFrames(self._connection, _goAwayFrame(MAX_STREAM_ID) + _pingFrame())
        self._fallbackCall = self._reactor.callLater(self._fallback, self._final)

    def _filterReceivedEvents(self) -> None:
        """
        Watch what the client sends: the PING's answer triggers the final
        GOAWAY; after it, new streams are refused before Twisted sees them.
        """
        machine = twistedprivate.stateMachine(self._connection)
        receive = machine.receive_data

        def receiveData(data: bytes) -> list:
            events = receive(data)
            if self.lastStreamId is None and any(self._isOurPingAck(e) for e in events):
                # Requests in this same batch are not Twisted's streams yet: look
                # for idleness once they are.
                self._final(closeIfIdle=False)
                self._reactor.callLater(0, self._closeIfIdle)
            if self.lastStreamId is None:
                return events
            return self._refuseLateStreams(machine, events)

        machine.receive_data = receiveData

    @staticmethod
    def _isOurPingAck(event) -> bool:
        return isinstance(event, PingAckReceived) and event.ping_data == PING_DATA

    def _refuseLateStreams(self, machine, events: list) -> list:
        late: set[int] = set()
        kept = []
        for event in events:
            streamId = getattr(event, "stream_id", None)
            if isinstance(event, RequestReceived) and streamId > self.lastStreamId:
                late.add(streamId)
                try:
                    machine.reset_stream(streamId, error_code=REFUSED_STREAM)
                except StreamClosedError:
                    pass  # the client reset it already, in the same bytes
                self._onRefused()
                continue
            if streamId in late:
                continue  # the refused stream's body, end or priority
            kept.append(event)
        return kept

    def _final(self, closeIfIdle: bool = True) -> None:
        """Name the last stream served; close at once if none is in progress."""
        if self._fallbackCall is not None and self._fallbackCall.active():
            self._fallbackCall.cancel()
        self._fallbackCall = None
        if self.lastStreamId is not None or not self._connected():
            return
        machine = twistedprivate.stateMachine(self._connection)
        self.lastStreamId = machine.highest_inbound_stream_id
        twistedprivate.writeFrames(self._connection, _goAwayFrame(self.lastStreamId))
        if closeIfIdle:
            self._closeIfIdle()

    def _connected(self) -> bool:
        transport = self._connection.transport
        return transport is not None and not getattr(transport, "disconnecting", False)

    def _closeIfIdle(self) -> None:
        if self.lastStreamId is None or self.closing or not self._connected():
            return
        if twistedprivate.streamsInProgress(self._connection):
            return
        if twistedprivate.outputBlocked(self._connection):
            twistedprivate.whenWritable(self._connection, self._closeIfIdle)
            return
        self.closing = True
        twistedprivate.flushControlFrames(self._connection)
        self._connection.transport.loseConnection()


class HTTP2Goodbyes:
    """
    Every HTTP/2 connection of one drain, each told GOAWAY once.

    @ivar count: connections told.
    @ivar refused: streams refused after a final GOAWAY, on any of them.
    """

    def __init__(self, reactor, fallback: float = FINAL_GOAWAY_FALLBACK) -> None:
        self._reactor = reactor
        self._fallback = fallback
        # Each connection's GracefulGoAway lives as long as the connection: the
        # connection's own methods, wrapped, hold it.
        self._told: weakref.WeakSet = weakref.WeakSet()
        self.count = 0
        self.refused = 0

    def tell(self, protocol) -> bool:
        """Start the GOAWAY of C{protocol}'s connection if it speaks HTTP/2; say whether it does."""
        connection = h2ConnectionOf(protocol)
        if connection is None:
            return False
        if connection in self._told:
            return True
        goAway = GracefulGoAway(connection, self._reactor, self._fallback, self._countRefused)
        self._told.add(connection)
        self.count += 1
        try:
            goAway.start()
        except Exception as e:
            log.warn("drain: could not send GOAWAY on an HTTP/2 connection: {error}", error=e)
        return True

    def _countRefused(self) -> None:
        self.refused += 1
